#!/usr/bin/env python3
"""The change feed's benchmark (issue 19): delivery to many WebSockets, across daemons, and its cost on requests.

    python bench/events.py                                   # SQLite: 1,000 sockets, 200 changes/s for 10 s
    python bench/events.py --store postgresql --pg-url URL   # PostgreSQL, and two daemons on one database
    python bench/events.py --smoke                           # tiny sizes (10 sockets, 20 changes), no targets

Each part runs daemons of its own (bin/medusa-v2, one process, on a database seeded
through `medusa-v2 import`, with bench/run.py's helpers):

1. Delivery: `--sockets` WebSockets on `/api/v2/events?api_key=KEY`, held by
   `--client-processes` processes (tornado.websocket.websocket_connect; each socket
   records every message's seq and the time.time() it arrived), while a writer POSTs
   and PATCHes tickets over HTTP at `--rate` changes/s for `--seconds`. A change's
   commit time is the moment its HTTP answer arrived (time.time(): the processes
   share the machine's clock); the feed's own list (`GET /api/v2/events?since=`)
   pairs each seq with its id and ETag, and so with the writer's record. Reported:
   the sockets that received every change exactly once and in order (and the
   missing, duplicated and out-of-order messages), the delay from commit to receipt
   of every (socket, change) pair, and the CPU the daemon, the clients and the
   writer took: they share the machine's cores.
2. Across daemons (PostgreSQL only): the same, sockets on daemon B, writes through
   daemon A, on one database.
3. The request path: bench/run.py's wrk rows (GET one, list of 20, POST, PATCH) on
   one daemon, each run alternately without and with `--request-sockets` sockets
   subscribed; the row is the round with the median ratio.

bench/run.py runs all three for its "Change feed" section (`bench/run.py --only events`
refreshes that section alone); on its own this script prints the section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (bench/run.py: daemons, seeding, wrk, the load scenarios)

EVENTS = "/api/v2/events"
FEED_PAGE = 1000  # changes per GET /events (the API's largest list page)
SEQ = re.compile(r'"seq"\s*:\s*(\d+)')

# The targets of issue 19, judged at their own sizes (a smaller run is reported, not judged).
TARGET_SOCKETS, TARGET_RATE = 1000, 200.0
DELIVERY_P99_MS = 100.0  # one daemon, 1,000 sockets, 200 changes/s
CROSS_P99_MS = 150.0  # two daemons on PostgreSQL
REQUEST_PATH_KEEP = 0.95  # a request-path row keeps at least this share of its req/s with sockets subscribed
REQUEST_ROWS = ("GET one (API key)", "list of 20", "POST", "PATCH")  # bench/run.py's scenarios, by name
CLIENT_BUSY = 0.9  # a client process using this share of a core may itself be the bottleneck


# -- the subscribers: client processes holding the sockets ------------------------------


class Socket:
    """One subscribed WebSocket: the seq and arrival time of every message, and how it closed."""

    __slots__ = ("seqs", "times", "last", "closed", "ws")

    def __init__(self) -> None:
        self.seqs = array("q")
        self.times = array("d")
        self.last = 0
        self.closed: tuple[int | None, str | None] | None = None
        self.ws: Any = None

    def on_message(self, message: str | bytes | None) -> None:
        if message is None:
            ws = self.ws
            self.closed = (ws.close_code, ws.close_reason) if ws is not None else (None, "closed")
            return
        now = time.time()
        text = message.decode() if isinstance(message, bytes) else message
        m = SEQ.search(text)
        seq = int(m.group(1)) if m else -1  # -1: a message without a seq, counted as unexpected
        self.seqs.append(seq)
        self.times.append(now)
        if seq > self.last:
            self.last = seq


async def _connect(url: str, sock: Socket) -> str | None:
    """Open one socket; return why it failed, or None."""
    import tornado.httpclient
    import tornado.websocket

    try:
        sock.ws = await tornado.websocket.websocket_connect(
            tornado.httpclient.HTTPRequest(url, connect_timeout=30, request_timeout=30),
            on_message_callback=sock.on_message,
            ping_interval=None,
        )
    except Exception as exc:  # noqa: BLE001 (reported to the parent, which stops the bench)
        code = getattr(exc, "code", None)
        return f"{type(exc).__name__}: {exc}" + (f" (HTTP {code})" if code else "")
    return None


async def _subscribe(url: str, count: int, conn: Connection) -> None:
    sockets = [Socket() for _ in range(count)]
    failures: list[str] = []
    for start in range(0, count, 50):  # 50 handshakes at a time: the listen backlog is finite
        batch = sockets[start : start + 50]
        failures += [f for f in await asyncio.gather(*(_connect(url, s) for s in batch)) if f]
    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    conn.send(("ready", count - len(failures), failures[:3]))
    command = await loop.run_in_executor(None, conn.recv)  # ("finish", last seq or None, seconds)
    _, last, seconds = command
    if last is not None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not all(s.last >= last or s.closed for s in sockets if s.ws):
            await asyncio.sleep(0.02)
    cpu = time.process_time() - cpu
    for sock in sockets:
        if sock.ws is not None and sock.closed is None:
            sock.ws.close()
    conn.send(("done", cpu, [(s.seqs.tobytes(), s.times.tobytes(), s.closed) for s in sockets if s.ws]))


def subscriber_process(url: str, count: int, conn: Connection) -> None:
    """Hold `count` sockets of the feed at `url` in this process; report to the parent over `conn`."""
    asyncio.run(_subscribe(url, count, conn))


@dataclass
class Received:
    """What the sockets received, merged over the client processes."""

    sockets: list[tuple[array, array, tuple[int | None, str | None] | None]]
    cpu: list[float]  # CPU seconds of each client process between ready and finish
    wall: float  # seconds between ready and finish


class Subscribers:
    """`count` sockets on the feed of the daemon at `port`, spread over `processes` client processes."""

    def __init__(self, port: int, count: int, processes: int, query: str = "") -> None:
        url = f"ws://127.0.0.1:{port}{EVENTS}?api_key={quote(run.API_KEY)}{query}"
        context = multiprocessing.get_context("fork")  # no event loop runs in the parent yet
        shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for share in (s for s in shares if s):
            parent, child = context.Pipe()
            proc = context.Process(target=subscriber_process, args=(url, share, child), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.connected = 0
        self.started = 0.0

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until every process has opened its sockets; stop the bench if any failed."""
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise SystemExit("bench: the WebSocket clients did not connect in time")
            _, connected, failures = pipe.recv()
            self.connected += connected
            if failures:
                raise SystemExit(f"bench: WebSocket {EVENTS} refused: {failures[0]} (does the daemon have the feed?)")
        self.started = time.monotonic()

    def finish(self, last: int | None, seconds: float) -> Received:
        """Wait (at most `seconds`) until every socket has seen `last` (None: stop now); close them, collect."""
        for pipe in self.pipes:
            pipe.send(("finish", last, seconds))
        sockets: list[tuple[array, array, Any]] = []
        cpu = []
        for pipe in self.pipes:
            if not pipe.poll(seconds + 120):
                raise SystemExit("bench: a WebSocket client process did not report")
            _, seconds_cpu, found = pipe.recv()
            cpu.append(seconds_cpu)
            for seqs, times, closed in found:
                s, t = array("q"), array("d")
                s.frombytes(seqs)
                t.frombytes(times)
                sockets.append((s, t, closed))
        wall = time.monotonic() - self.started
        self.close()
        return Received(sockets, cpu, wall)

    def close(self) -> None:
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join()
        for pipe in self.pipes:
            pipe.close()
        self.procs, self.pipes = [], []


@contextlib.contextmanager
def subscribed(port: int, count: int, processes: int) -> Iterator[list[Received]]:
    """Hold `count` sockets on the daemon while the block runs; the list gets what they received."""
    subs = Subscribers(port, count, processes)
    out: list[Received] = []
    try:
        subs.wait_ready()
        yield out
        out.append(subs.finish(None, 0))
    finally:
        subs.close()


# -- the writer ------------------------------------------------------------------------


@dataclass
class Write:
    """One change made over HTTP: what the feed should say about it, and when its answer arrived."""

    event: str
    id: int
    etag: str | None
    sent: float
    committed: float
    status: int


async def write_changes(port: int, rate: float, seconds: float, ids: int) -> tuple[list[Write], float, float]:
    """POST and PATCH tickets at `rate` per second for `seconds`; return the writes, CPU seconds and wall seconds.

    Even changes create a ticket, odd ones retitle a seeded ticket (ids 1..`ids`, in
    turn, so no two PATCHes of one ticket overlap). Requests start on schedule
    whether or not the previous answers came back (up to 64 in flight).
    """
    import tornado.httpclient

    client = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=64)
    base = f"http://127.0.0.1:{port}/api/v2/ticket"
    headers = {"X-Api-Key": run.API_KEY, "Content-Type": "application/json"}
    total = max(1, round(rate * seconds))

    async def change(i: int) -> Write:
        target = 1 + (i // 2) % ids
        if i % 2 == 0:
            event, url, method = "created", base, "POST"
            body = {"title": f"Feed bench {i}", "description": "made by bench/events.py", "priority": 1 + i % 5}
        else:
            event, url, method = "updated", f"{base}/{target}", "PATCH"
            body = {"title": f"Feed bench change {i}"}
        sent = time.time()
        try:
            response = await client.fetch(
                url,
                method=method,
                headers=headers,
                body=json.dumps(body),
                raise_error=False,
                connect_timeout=120,
                request_timeout=120,
            )
        except Exception:  # noqa: BLE001 (a timeout in the queue of an overloaded daemon): a failed write
            return Write(event, target, None, sent, time.time(), 599)
        committed = time.time()
        if method == "PATCH":  # the answer holds only what changed: the id is the URL's
            return Write(event, target, response.headers.get("ETag"), sent, committed, response.code)
        item = json.loads(response.body) if response.code == 201 and response.body else {}
        return Write(event, int(item.get("id", 0)), response.headers.get("ETag"), sent, committed, response.code)

    cpu = time.process_time()
    start = time.monotonic() + 0.05
    tasks = []
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(change(i)))
    writes = list(await asyncio.gather(*tasks))
    wall = time.monotonic() - start
    client.close()
    return writes, time.process_time() - cpu, wall


# -- the feed over HTTP: the truth the sockets are checked against ----------------------


def read_feed(port: int, since: int) -> list[dict[str, Any]]:
    """Return every change after `since` from GET /api/v2/events (page after page)."""
    client = run.Client(port)
    out: list[dict[str, Any]] = []
    while True:
        status, _, payload = client.request("GET", f"{EVENTS}?since={since}&limit={FEED_PAGE}")
        if status != 200:
            raise SystemExit(f"bench: GET {EVENTS}?since={since} answered {status}: {payload[:300]!r}")
        page = json.loads(payload)
        out += page
        if len(page) < FEED_PAGE:
            return out
        since = page[-1]["seq"]


def feed_end(port: int) -> int:
    """Return the last seq of the feed now (0 when it is empty)."""
    changes = read_feed(port, 0)
    return changes[-1]["seq"] if changes else 0


# -- CPU --------------------------------------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """Return the CPU seconds (user + system) of process `pid` and every process under it."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, ...
        children.setdefault(int(fields[1]), []).append(int(entry))
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / TICKS
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo += children.get(current, [])
    return total


def machine_ticks() -> tuple[int, int]:
    """Return (busy, total) jiffies of the whole machine since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


# -- part 1 and 2: delivery ------------------------------------------------------------


@dataclass
class Delivery:
    """The figures of one delivery run."""

    label: str
    sockets: int
    rate: float
    seconds: float
    processes: int
    changes: int = 0  # changes the writer made (acknowledged 200/201)
    failed_writes: int = 0
    not_in_feed: int = 0  # acknowledged changes the feed's list does not show
    unmatched: int = 0  # changes in the feed the writer did not make (or with another ETag or event)
    achieved_rate: float = 0.0  # acknowledged changes / seconds from the first request to the last answer
    complete: int = 0  # sockets that received every change exactly once, in order
    connected: int = 0
    missing: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unexpected: int = 0  # messages whose seq is not one of the run's changes
    closed: dict[str, int] = field(default_factory=dict)  # close code and reason -> sockets
    latencies: dict[str, float] = field(default_factory=dict)  # p50, p99, max, min (ms)
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core: daemon(s), clients, writer, machine
    client_busiest: float = 0.0  # the busiest client process's share of a core
    client_us: float = 0.0  # client CPU per message received, µs
    tail: float = 0.0  # seconds from the last commit to the last message's arrival


def delivery(
    config: Path,
    workdir: Path,
    label: str,
    sockets: int,
    rate: float,
    seconds: float,
    processes: int,
    tickets: int,
    drain: float,
    cross: bool = False,
) -> Delivery:
    """Run part 1 (sockets and writes on one daemon) or, with `cross`, part 2 (sockets on a second daemon)."""
    result = Delivery(label, sockets, rate, seconds, processes)
    writer = run.Server.daemon(config, workdir / f"events-{label}-a.log")
    daemons = [writer]
    subs: Subscribers | None = None
    try:
        reader = run.Server.daemon(config, workdir / f"events-{label}-b.log") if cross else writer
        if cross:
            daemons.append(reader)
        since = feed_end(writer.port)
        subs = Subscribers(reader.port, sockets, processes)
        subs.wait_ready()
        result.connected = subs.connected
        print(
            f"  {label}: {subs.connected} sockets open; writing {rate:g} changes/s for {seconds:g} s", file=sys.stderr
        )
        cpu_before = [process_cpu(d.pid) for d in daemons]
        busy_before = machine_ticks()
        writes, writer_cpu, writer_wall = asyncio.run(write_changes(writer.port, rate, seconds, tickets))
        feed = read_feed(writer.port, since)
        received = subs.finish(feed[-1]["seq"] if feed else since, drain)
        cpu_after = [process_cpu(d.pid) for d in daemons]
        busy_after = machine_ticks()
    finally:
        if subs is not None:
            subs.close()
        for daemon in daemons:
            daemon.stop()
    wall = received.wall
    result.cpu = {
        "daemon": (cpu_after[0] - cpu_before[0]) / wall,
        "clients": sum(received.cpu) / wall,
        "writer": writer_cpu / writer_wall,
        "machine": (busy_after[0] - busy_before[0]) / max(1, busy_after[1] - busy_before[1]) * (os.cpu_count() or 1),
    }
    if cross:
        result.cpu["daemon B"] = (cpu_after[1] - cpu_before[1]) / wall
    result.client_busiest = max(received.cpu, default=0.0) / wall
    ours = sum(v for k, v in result.cpu.items() if k != "machine")
    result.cpu["others"] = max(0.0, result.cpu["machine"] - ours)  # other processes and the kernel's own work
    messages = sum(len(seqs) for seqs, _, _ in received.sockets)
    result.client_us = sum(received.cpu) / messages * 1e6 if messages else 0.0
    arrivals = [times[-1] for _, times, _ in received.sockets if len(times)]
    committed = [w.committed for w in writes if w.status in (200, 201)]
    if arrivals and committed:
        result.tail = max(arrivals) - max(committed)
    analyse(result, writes, feed, received)
    result.achieved_rate = result.changes / writer_wall
    return result


def analyse(result: Delivery, writes: list[Write], feed: list[dict[str, Any]], received: Received) -> None:
    """Check every socket against the feed's list of the run's changes; time each delivery from its commit."""
    made: dict[tuple[Any, Any], Write] = {(w.id, w.etag): w for w in writes if w.status in (200, 201)}
    result.changes = len(made)
    result.failed_writes = len(writes) - len(made)
    committed_at: dict[int, float] = {}
    for change in feed:
        write = made.get((change.get("id"), change.get("etag")))
        if write is None or write.event != change.get("event") or change.get("resource") != "ticket":
            result.unmatched += 1
        else:
            committed_at[change["seq"]] = write.committed
    result.not_in_feed = len(made) - len(committed_at)
    expected = [change["seq"] for change in feed]
    wanted = set(expected)
    latencies: list[float] = []
    for seqs, times, closed in received.sockets:
        got = set(seqs)
        missing = len(wanted - got)
        duplicated = len(seqs) - len(got)
        backwards = sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b < a)
        result.missing += missing
        result.duplicated += duplicated
        result.out_of_order += backwards
        result.unexpected += len(got - wanted)
        if not (missing or duplicated or backwards or got - wanted):
            result.complete += 1
        if closed is not None:
            key = f"{closed[0]} {closed[1] or ''}".strip()
            result.closed[key] = result.closed.get(key, 0) + 1
        at = committed_at.get
        for seq, arrived in zip(seqs, times, strict=True):
            commit = at(seq)
            if commit is not None:
                latencies.append((arrived - commit) * 1000)
    if latencies:
        latencies.sort()
        result.latencies = {
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": latencies[-1],
            "min": latencies[0],
            "n": float(len(latencies)),
        }


def percentile(ordered: Sequence[float], q: float) -> float:
    """Return the q-th percentile (nearest rank) of sorted values."""
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def delivery_met(d: Delivery, p99: float) -> bool:
    """Whether a run met its target: every socket every change once, in order; p99 within `p99` ms."""
    return (
        d.connected == d.sockets
        and d.complete == d.sockets
        and d.changes > 0
        and not d.not_in_feed
        and bool(d.latencies)
        and d.latencies["p99"] <= p99
    )


# -- part 3: the request path ----------------------------------------------------------


def request_path(
    config: Path,
    workdir: Path,
    label: str,
    tickets: int,
    seconds: float,
    rounds: int,
    sockets: int,
    processes: int,
) -> list[dict[str, Any]]:
    """Measure bench/run.py's request-path rows without and with `sockets` subscribed, alternating.

    Each round runs the row twice on the same daemon (without then with sockets, the
    order swapped every other round), `seconds / rounds` each; the row kept is the
    round with the median ratio, with the range of the ratios.
    """
    daemon = run.Server.daemon(config, workdir / f"events-{label}-requests.log")
    rows = []
    try:
        scenarios = [s for s in run.load_scenarios(run.Client(daemon.port), tickets) if s[0] in REQUEST_ROWS]
        for name, method, path, headers, body in scenarios:
            pairs = []
            for r in range(rounds):
                runs: dict[bool, dict[str, Any]] = {}
                delivered: dict[str, Any] = {}
                for on in (False, True) if r % 2 == 0 else (True, False):
                    if not on:
                        runs[on] = run.wrk(daemon.port, path, seconds / rounds, workdir, method, headers, body)
                        continue
                    with subscribed(daemon.port, sockets, processes) as got:
                        runs[on] = run.wrk(daemon.port, path, seconds / rounds, workdir, method, headers, body)
                    delivered = {
                        "messages": sum(len(seqs) for seqs, _, _ in got[0].sockets),
                        "cut_off": sum(1 for _, _, closed in got[0].sockets if closed is not None),
                        "clients_cpu": sum(got[0].cpu) / got[0].wall,
                    }
                pairs.append((runs[True]["rps"] / runs[False]["rps"], runs[False], runs[True], delivered))
            pairs.sort(key=lambda pair: pair[0])
            ratio, off, on_run, delivered = pairs[len(pairs) // 2]
            row = {
                "name": name,
                "off": off,
                "on": on_run,
                "ratio": ratio,
                "ratios": [p[0] for p in pairs],
                **delivered,
                "errors": sum(p[1]["errors"] + p[2]["errors"] for p in pairs),
            }
            rows.append(row)
            print(
                f"  {label}: {name:20} {off['rps']:8.0f} req/s without sockets, {on_run['rps']:8.0f} with {sockets}"
                f" (x{ratio:.2f}; {row['messages']} messages delivered, {row['cut_off']} sockets cut off)",
                file=sys.stderr,
            )
    finally:
        daemon.stop()
    return rows


# -- one store, all parts ---------------------------------------------------------------


@dataclass
class Options:
    """The sizes of a run (bench/run.py builds one from its own mode)."""

    sockets: int = TARGET_SOCKETS
    rate: float = TARGET_RATE
    seconds: float = 10.0
    processes: int = 2
    tickets: int = 1000
    drain: float = 10.0
    cross_sockets: int = 100
    request_sockets: int = 100
    request_seconds: float = 10.0
    rounds: int = 3
    cross: bool = True
    requests: bool = True

    @classmethod
    def smoke(cls) -> Options:
        return cls(10, 20.0, 1.0, 1, 100, 5.0, 10, 10, 1.0, 1)


def run_store(store: str, workdir: Path, pg: run.PgServer | None, opts: Options) -> dict[str, Any]:
    """Seed a database of `store` and run every part on it; return the figures for `section`."""
    name = run.STORE_NAMES[store]
    print(f"bench: {name}: change feed ({opts.tickets} tickets)", file=sys.stderr)
    shared = (workdir / f"tickets-{opts.tickets}.jsonl").exists()  # bench/run.py's, left as it was
    data, _ = run.data_file(workdir, opts.tickets)
    config, _ = run.seed(workdir, data, store, "events", pg)
    if not shared:
        data.unlink()
    out: dict[str, Any] = {"store": store, "delivery": [], "requests": []}
    args = (opts.rate, opts.seconds, opts.processes, opts.tickets, opts.drain)
    out["delivery"].append(delivery(config, workdir, f"{name}, one daemon", opts.sockets, *args))
    if store == run.POSTGRESQL and opts.cross:
        label = f"{name}, two daemons"
        out["delivery"].append(delivery(config, workdir, label, opts.cross_sockets, *args, cross=True))
    if opts.requests:
        out["requests"] = request_path(
            config, workdir, name, opts.tickets, opts.request_seconds, opts.rounds, opts.request_sockets, opts.processes
        )
    return out


# -- the report -------------------------------------------------------------------------

HEADING = "## Change feed"


def section(results: list[dict[str, Any]], opts: Options, checked: bool) -> list[str]:
    """Return the report's "Change feed" section (markdown lines) for the runs of `run_store`."""

    def verdict(ok: bool | None) -> str:
        return "" if ok is None or not checked else "yes" if ok else "**no**"

    cores = os.cpu_count() or 1
    out = [
        f"{HEADING} (issue 19: `bench/events.py`)",
        "",
        f"WebSockets on `{EVENTS}?api_key=…`, held by {opts.processes} client process(es)",
        "(`tornado.websocket.websocket_connect`), while a writer POSTs and PATCHes tickets over HTTP at a",
        "steady rate (half each). A change's commit time is when its HTTP answer arrived; each (socket,",
        "change) delay runs from there to the message's arrival (time.time(), one clock). The feed's list",
        f"(`GET {EVENTS}?since=`) says which changes the run made: a socket is complete when it received",
        "every one of them exactly once and in seq order. The daemons (one process each), the clients and",
        f"the writer share this machine's {cores} cores: their CPU is given as a share of one core over the",
        "run, beside the whole machine's. Two daemons: sockets on B, writes through A, one PostgreSQL database.",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by"
        f" `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}` ({opts.seconds:g} s of writing a run).",
        "",
        "| run | sockets | changes/s (made) | changes | complete sockets | missing | duplicated | out of order"
        " | closed by the server | p50 ms | p99 ms | max ms | last message after the last commit, s | target | met"
        " | CPU: daemon | clients | writer | others | machine |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []
    for result in results:
        for d in result["delivery"]:
            cross = "two daemons" in d.label
            target_ms = CROSS_P99_MS if cross else DELIVERY_P99_MS
            at_size = cross or (d.sockets >= TARGET_SOCKETS and d.rate >= TARGET_RATE)
            target = f"all, p99 ≤ {target_ms:g} ms" if at_size else ""
            lat = d.latencies
            closed = ", ".join(f"{n} × {why}" for why, n in sorted(d.closed.items())) or "none"
            daemon_cpu = f"{d.cpu['daemon']:.0%}" + (f" (B: {d.cpu['daemon B']:.0%})" if "daemon B" in d.cpu else "")
            out.append(
                f"| {d.label} | {d.connected:,}/{d.sockets:,} | {d.rate:g} ({d.achieved_rate:.0f}) | {d.changes:,}"
                f" | {d.complete:,} | {d.missing:,} | {d.duplicated:,} | {d.out_of_order:,} | {closed}"
                f" | {_ms(lat, 'p50')} | {_ms(lat, 'p99')} | {_ms(lat, 'max')} | {d.tail:.2f} | {target}"
                f" | {verdict(delivery_met(d, target_ms) if at_size else None)} | {daemon_cpu}"
                f" | {d.cpu['clients']:.0%} | {d.cpu['writer']:.0%} | {d.cpu['others']:.0%} | {d.cpu['machine']:.0%} |"
            )
            if d.failed_writes or d.not_in_feed or d.unmatched or d.unexpected:
                notes.append(
                    f"{d.label}: {d.failed_writes} write(s) failed, {d.not_in_feed} acknowledged change(s) missing"
                    f" from the feed's list, {d.unmatched} change(s) in it the writer did not make,"
                    f" {d.unexpected} message(s) with a seq outside the run."
                )
            if d.cpu["machine"] >= CLIENT_BUSY * cores:
                notes.append(
                    f"{d.label}: the machine's {cores} cores were {d.cpu['machine'] / cores:.0%} busy: the delays"
                    f" include waiting for a core. The clients took {d.client_us:.1f} µs of CPU per message"
                    f" received, i.e. {d.client_us * d.sockets * d.rate / 1e6:.1f} core(s) at {d.sockets:,} sockets"
                    f" × {d.rate:g} changes/s; other processes and the kernel took {d.cpu['others']:.0%} of a core."
                )
            if d.client_busiest >= CLIENT_BUSY:
                notes.append(
                    f"{d.label}: the busiest client process used {d.client_busiest:.0%} of a core: the clients may"
                    " be the bottleneck (more `--client-processes` only helps with free cores)."
                )
            if lat and lat["min"] < 0:
                notes.append(
                    f"{d.label}: some messages arrived before the HTTP answer of their change"
                    f" (earliest {-lat['min']:.1f} ms before): the feed sends after the commit, the answer follows."
                )
    out.append("")
    if notes:
        out += [f"- {note}" for note in notes] + [""]
    rows = [(result["store"], row) for result in results for row in result["requests"]]
    if rows:
        out += [
            f"The request path: bench/run.py's wrk rows (1 thread, 32 connections) on one daemon, without and with"
            f" {opts.request_sockets} sockets subscribed, in {opts.rounds} round(s) of"
            f" {run.wrk_seconds(opts.request_seconds / opts.rounds)} s each (the order swapped every other round);"
            " a row is the round with the median ratio (in brackets: the lowest and highest). With sockets,"
            f" every POST and PATCH is a message to each of the {opts.request_sockets}; the client process(es)"
            " receiving them share the cores with the daemon and wrk (their CPU: a share of one core).",
            "",
            "| store | scenario | req/s, no sockets | p99 ms | req/s, with sockets | p99 ms | × | target | met"
            " | messages delivered | sockets cut off | clients' CPU | non-2xx/3xx |",
            "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|",
        ]
        for store, row in rows:
            ratios = row["ratios"]
            spread = f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
            out.append(
                f"| {run.STORE_NAMES[store]} | {row['name']} | {row['off']['rps']:,.0f} | {row['off']['p99']:.2f}"
                f" | {row['on']['rps']:,.0f} | {row['on']['p99']:.2f} | {row['ratio']:.2f}{spread}"
                f" | ≥ {REQUEST_PATH_KEEP:.2f} | {verdict(row['ratio'] >= REQUEST_PATH_KEEP)}"
                f" | {row['messages']:,} | {row['cut_off']:,} | {row['clients_cpu']:.0%} | {row['errors']} |"
            )
        out += [
            "",
            "Recording the changes (in each write's transaction) is in every row of the throughput tables above,"
            " with or without sockets; compare their × ceiling with an earlier report for that cost.",
            "",
        ]
    return out


def _ms(latencies: dict[str, float], key: str) -> str:
    return f"{latencies[key]:.1f}" if key in latencies else "-"


def splice(report: str, lines: list[str]) -> str:
    """Return `report` with its Change feed section replaced by `lines` (or added before the profiles)."""
    text = "\n".join(lines).rstrip("\n") + "\n\n"
    start = report.find(f"\n{HEADING}")
    if start >= 0:
        end = report.find("\n## ", start + 1)
        return report[: start + 1] + text + (report[end + 1 :] if end >= 0 else "")
    for anchor in ("\n## Profiles", "\n## Where the time went"):
        at = report.find(anchor)
        if at >= 0:
            return report[: at + 1] + text + report[at + 1 :]
    return report.rstrip("\n") + "\n\n" + text


def main(argv: list[str] | None = None) -> int:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=[run.SQLITE, run.POSTGRESQL], default=run.SQLITE)
    parser.add_argument(
        "--pg-url", default=None, help="PostgreSQL server (its maintenance database) for --store postgresql"
    )
    parser.add_argument("--sockets", type=int, default=defaults.sockets, help="sockets on the daemon (default 1000)")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="changes per second (default 200)")
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="seconds of writing (default 10)")
    parser.add_argument(
        "--client-processes", type=int, default=defaults.processes, help="processes holding the sockets (default 2)"
    )
    parser.add_argument("--tickets", type=int, default=defaults.tickets, help="tickets seeded (default 1000)")
    parser.add_argument(
        "--drain", type=float, default=defaults.drain, help="seconds to wait for the last change (default 10)"
    )
    parser.add_argument(
        "--cross-sockets", type=int, default=defaults.cross_sockets, help="sockets on daemon B (default 100)"
    )
    parser.add_argument(
        "--request-sockets", type=int, default=defaults.request_sockets, help="sockets during wrk (default 100)"
    )
    parser.add_argument(
        "--request-seconds", type=float, default=defaults.request_seconds, help="seconds per wrk row (default 10)"
    )
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="rounds per wrk row (default 3)")
    parser.add_argument("--no-cross", action="store_true", help="skip the two-daemon run")
    parser.add_argument("--no-requests", action="store_true", help="skip the request-path rows")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (10 sockets, 20 changes), no targets")
    parser.add_argument("--workdir", default=None, help="keep databases and logs here (default: a temporary directory)")
    args = parser.parse_args(argv)
    if args.smoke:
        opts = Options.smoke()
    else:
        opts = Options(
            args.sockets,
            args.rate,
            args.seconds,
            max(1, args.client_processes),
            args.tickets,
            args.drain,
            args.cross_sockets,
            args.request_sockets,
            args.request_seconds,
            max(1, args.rounds),
        )
    opts.cross, opts.requests = not args.no_cross, not args.no_requests
    if opts.requests and shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk); or --no-requests", file=sys.stderr)
        return 2
    pg = None
    if args.store == run.POSTGRESQL:
        url = args.pg_url or os.environ.get("MEDUSA_V2_BENCH_PG_URL") or os.environ.get("MEDUSA_V2_TEST_PG_URL")
        pg = run.PgServer(url or "postgresql://postgres@127.0.0.1:5432/postgres")
        if not pg.reachable:
            print(f"bench: PostgreSQL: {pg.problem}", file=sys.stderr)
            return 2
    with contextlib.ExitStack() as stack:
        if args.workdir:
            workdir = Path(args.workdir)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medusa-events-")))
        if pg is not None:
            stack.callback(pg.close)
        result = run_store(args.store, workdir, pg, opts)
    print("\n".join(section([result], opts, checked=not args.smoke)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
