#!/usr/bin/env python3
"""The change feed's benchmark (issue 19): delivery to many WebSockets, across daemons, and its cost on requests.

    python bench/events.py                                   # SQLite: 1,000 sockets, 200 changes/s for 10 s
    python bench/events.py --store postgresql --pg-url URL   # PostgreSQL, and two daemons on one database
    python bench/events.py --smoke                           # tiny sizes (10 sockets, 20 changes), no targets

Each part runs daemons of its own (bin/medusa-v2, one process, on a database seeded
through `medusa-v2 import`, with bench/run.py's helpers):

1. Delivery: `--sockets` WebSockets on `/api/v2/events?api_key=KEY`, held by
   `--client-processes` processes made cheap enough to measure the server rather than
   themselves (raw sockets upgraded by hand, one epoll per process, big reads, frames
   walked by their headers, the seqs of a read taken by one regex call, one arrival
   time per read), while a writer POSTs and PATCHes tickets over HTTP at `--rate`
   changes/s for `--seconds`. A change's commit time is the moment its HTTP answer
   arrived (time.time(): the processes share the machine's clock); the feed's own
   list (`GET /api/v2/events?since=`) pairs each seq with its id and ETag, and so
   with the writer's record. Reported: the sockets that received every change exactly
   once and in order (and the missing, duplicated and out-of-order messages), the
   delay from commit to receipt of every (socket, change) pair, and the CPU the
   daemon, the clients and the writer took: they share the machine's cores.
2. Across daemons (PostgreSQL only): the same, sockets on daemon B, writes through
   daemon A, on one database.
3. The request path: bench/run.py's wrk rows (GET one with a JWT, list of 20, POST,
   PATCH) side by side on the build before the feed (`--baseline`, a checkout or a
   git revision, unpacked with git archive) and on this build with
   `--request-sockets` sockets listening, each on its own daemon and database,
   alternating in rounds (`--compare sockets`: this build without and with sockets).

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
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (bench/run.py: daemons, seeding, wrk, the load scenarios)

from medusa_v2.feed import POLL_INTERVAL  # noqa: E402  (run puts the checkout first on sys.path)

EVENTS = "/api/v2/events"
FEED_PAGE = 1000  # changes per GET /events (the API's largest list page)
SEQ = re.compile(r'"seq"\s*:\s*(\d+)')

# The targets of issue 19, judged at their own sizes (a smaller run is reported, not judged).
TARGET_SOCKETS, TARGET_RATE = 1000, 200.0
DELIVERY_P99_MS = 100.0  # one daemon, 1,000 sockets, 200 changes/s
CROSS_P99_MS = 150.0  # two daemons on PostgreSQL
REQUEST_PATH_KEEP = 0.95  # a request-path row keeps at least this share of its req/s with sockets subscribed
REQUEST_ROWS = ("GET one (JWT)", "list of 20", "POST", "PATCH")  # bench/run.py's scenarios, by name
POLL_MS = POLL_INTERVAL * 1000
CLIENT_BUSY = 0.9  # a client process using this share of a core may itself be the bottleneck


# -- the subscribers: client processes holding the sockets ------------------------------
#
# The clients must cost far less than the server: at 1,000 sockets x 200 changes/s they
# receive 200,000 messages/s. Tornado's websocket_connect with a JSON parse per message
# took ~11 us a message (2+ cores here: the clients, not the server, set the delays).
# So: raw sockets, the upgrade done by hand, every socket of a process on one epoll,
# big reads, frames walked by their headers only, every seq of a read taken by one
# regex call, and one arrival time per read. A socket keeps runs of consecutive seqs
# (first, count, arrival time): O(1) per read in the usual case, where a read holds
# exactly the seqs that come next.

WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key, and its answer below
WS_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
SEQ_BYTES = re.compile(rb'"seq":(\d+)')  # the feed's JSON is compact (medusa_v2.codec.encode_json)
READ = 256 * 1024  # bytes read from a socket at once
NO_MASK = b"\0\0\0\0"  # a client's frames must be masked; a zero key leaves the payload as it is


class Socket:
    """One subscribed WebSocket: runs of consecutive seqs received (first, count, arrival), how it closed."""

    __slots__ = ("sock", "rest", "next", "firsts", "counts", "times", "closed", "irregular", "unexpected")

    def __init__(self, sock: socket.socket, rest: bytes, since: int | None) -> None:
        self.sock = sock
        self.rest = rest  # the start of a frame not wholly received yet
        self.next = None if since is None else since + 1  # the seq expected next (None: whatever comes first)
        self.firsts = array("q")
        self.counts = array("q")
        self.times = array("d")
        self.closed: tuple[int | None, str | None] | None = None
        self.irregular = False  # a read held something other than the seqs expected next
        self.unexpected = 0  # text messages without a seq, or frames of a kind the feed does not send

    def received(self, data: bytes, now: float) -> None:
        """Take one read's bytes, arrived at `now`."""
        buf = self.rest + data if self.rest else data
        n = len(buf)
        i = frames = 0
        plain = True
        while i + 2 <= n:  # find the end of the last whole frame (the server does not mask)
            size = buf[i + 1]
            if size < 126:
                end = i + 2 + size
            elif size == 126:
                if i + 4 > n:
                    break
                end = i + 4 + (buf[i + 2] << 8 | buf[i + 3])
            else:
                if i + 10 > n:
                    break
                end = i + 10 + int.from_bytes(buf[i + 2 : i + 10], "big")
            if end > n:
                break
            if buf[i] != 0x81:  # not a final text frame: a ping, a close...
                plain = False
            frames += 1
            i = end
        if i == 0:
            self.rest = buf
            return
        whole = buf if i == n else buf[:i]
        self.rest = b"" if i == n else buf[i:]
        if plain:
            found = SEQ_BYTES.findall(whole)
            self.unexpected += frames - len(found)
        else:
            found = self.control(whole)
        if not found:
            return
        count = len(found)
        first = int(found[0])
        expected = self.next if self.next is not None else first
        if first == expected and (
            count == 1 or (int(found[-1]) == first + count - 1 and [*map(int, found)] == [*range(first, first + count)])
        ):
            self.firsts.append(first)
            self.counts.append(count)
            self.times.append(now)
            self.next = first + count
            return
        self.irregular = True  # keep what came, as runs, for the parent to count
        seqs = [*map(int, found)]
        start = prev = seqs[0]
        for seq in seqs[1:]:
            if seq != prev + 1:
                self.firsts.append(start)
                self.counts.append(prev - start + 1)
                self.times.append(now)
                start = seq
            prev = seq
        self.firsts.append(start)
        self.counts.append(prev - start + 1)
        self.times.append(now)
        self.next = prev + 1

    def control(self, whole: bytes) -> list[bytes]:
        """Walk whole frames one by one: answer pings, note a close; return the seqs of the text frames."""
        found: list[bytes] = []
        i = 0
        while i < len(whole):
            opcode, size, head = whole[i] & 0x0F, whole[i + 1] & 0x7F, 2
            if size == 126:
                size, head = int.from_bytes(whole[i + 2 : i + 4], "big"), 4
            elif size == 127:
                size, head = int.from_bytes(whole[i + 2 : i + 10], "big"), 10
            payload = whole[i + head : i + head + size]
            i += head + size
            if opcode == 0x1:
                seqs = SEQ_BYTES.findall(payload)
                found += seqs
                self.unexpected += 1 - len(seqs)
            elif opcode == 0x9:  # ping: pong with the same payload (control payloads are < 126 bytes)
                with contextlib.suppress(OSError):
                    self.sock.send(bytes([0x8A, 0x80 | len(payload)]) + NO_MASK + payload)
            elif opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                self.closed = (code, payload[2:].decode("utf-8", "replace") or None)
            elif opcode != 0xA:
                self.unexpected += 1
        return found

    def close(self) -> None:
        """Send a close frame (1000) and drop the connection."""
        with contextlib.suppress(OSError):
            self.sock.send(b"\x88\x82" + NO_MASK + b"\x03\xe8")
        self.sock.close()

    def report(self) -> tuple[bytes, bytes, bytes, tuple[int | None, str | None] | None, bool, int]:
        return (
            self.firsts.tobytes(),
            self.counts.tobytes(),
            self.times.tobytes(),
            self.closed,
            self.irregular,
            self.unexpected,
        )


def upgrade(port: int, target: str, since: int | None) -> Socket:
    """Open one WebSocket on the feed by hand (raise OSError or ValueError saying why it failed)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            (
                f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        answer = b""
        while b"\r\n\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                raise ValueError(f"the connection closed during the upgrade: {answer[:200]!r}")
            answer += data
        head, rest = answer.split(b"\r\n\r\n", 1)
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if not status.startswith("HTTP/1.1 101"):
            raise ValueError(f"{status} (does the daemon have the feed?)")
        if b"sec-websocket-accept" not in head.lower() or WS_ACCEPT.encode() not in head:
            raise ValueError(f"no Sec-WebSocket-Accept: {WS_ACCEPT} in {head[:300]!r}")
    except Exception:
        sock.close()
        raise
    sock.setblocking(False)
    return Socket(sock, rest, since)


def subscriber_process(port: int, target: str, count: int, since: int | None, conn: Connection) -> None:
    """Hold `count` sockets on the feed at `target` in this process; report to the parent over `conn`.

    Protocol: ("ready", opened, failures) once the sockets are open; then the parent
    sends ("finish", last seq or None, seconds); this process reads until every socket
    got `last` (or closed, or `seconds` passed), closes them and sends ("done", CPU
    seconds since ready, [Socket.report() ...]).
    """
    sockets: dict[int, Socket] = {}
    failures: list[str] = []
    for _ in range(count):
        try:
            ws = upgrade(port, target, since)
        except (OSError, ValueError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            continue
        sockets[ws.sock.fileno()] = ws
    poller = select.epoll()
    for fd in sockets:
        poller.register(fd, select.EPOLLIN)
    control = conn.fileno()
    poller.register(control, select.EPOLLIN)
    cpu = time.process_time()
    conn.send(("ready", len(sockets), failures[:3]))
    last: int | None = None
    deadline = 0.0
    finishing = False
    open_ = dict(sockets)
    clock = time.time
    while True:
        for fd, _ in poller.poll(0.05 if finishing else 1.0):
            if fd == control:
                _, last, seconds = conn.recv()
                finishing, deadline = True, time.monotonic() + seconds
                poller.unregister(control)
                continue
            ws = open_[fd]
            try:
                data = ws.sock.recv(READ)
            except BlockingIOError:
                continue
            except OSError as exc:
                data = b""
                ws.closed = ws.closed or (None, f"{type(exc).__name__}: {exc}")
            if data:
                ws.received(data, clock())
            if not data or ws.closed is not None:
                if ws.closed is None:
                    ws.closed = (None, "the connection closed")
                poller.unregister(fd)
                del open_[fd]
                ws.sock.close()
        if finishing and (
            last is None
            or time.monotonic() >= deadline
            or all(ws.next is not None and ws.next > last for ws in open_.values())
        ):
            break
    cpu = time.process_time() - cpu
    for ws in open_.values():
        ws.close()
    poller.close()
    conn.send(("done", cpu, [ws.report() for ws in sockets.values()]))


@dataclass
class Got:
    """What one socket received: runs of consecutive seqs (first, count, arrival time), how it closed."""

    firsts: array
    counts: array
    times: array
    closed: tuple[int | None, str | None] | None
    irregular: bool
    unexpected: int

    @property
    def messages(self) -> int:
        return sum(self.counts)

    def seqs(self) -> list[int]:
        """Every seq received, in the order received."""
        out: list[int] = []
        for first, count in zip(self.firsts, self.counts, strict=True):
            out += range(first, first + count)
        return out


@dataclass
class Received:
    """What the sockets received, merged over the client processes."""

    sockets: list[Got]
    cpu: list[float]  # CPU seconds of each client process between ready and finish
    wall: float  # seconds between ready and finish


class Subscribers:
    """`count` sockets on the feed of the daemon at `port`, spread over `processes` client processes.

    `since`: the feed's last seq before the sockets open (nothing written meanwhile):
    each socket then expects since + 1 first. None: whatever comes first.
    """

    def __init__(self, port: int, count: int, processes: int, since: int | None = None, query: str = "") -> None:
        target = f"{EVENTS}?api_key={quote(run.API_KEY)}{query}"
        context = multiprocessing.get_context("fork")  # no event loop runs in the parent yet
        shares = [count // processes + (1 if i < count % processes else 0) for i in range(processes)]
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for share in (s for s in shares if s):
            parent, child = context.Pipe()
            proc = context.Process(target=subscriber_process, args=(port, target, share, since, child), daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)
        self.connected = 0
        self.started = 0.0

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def wait_ready(self, timeout: float = 120) -> None:
        """Wait until every process has opened its sockets; stop the bench if any failed."""
        for pipe in self.pipes:
            if not pipe.poll(timeout):
                raise SystemExit("bench: the WebSocket clients did not connect in time")
            _, connected, failures = pipe.recv()
            self.connected += connected
            if failures:
                raise SystemExit(f"bench: WebSocket {EVENTS} refused: {failures[0]}")
        self.started = time.monotonic()

    def finish(self, last: int | None, seconds: float) -> Received:
        """Wait (at most `seconds`) until every socket has seen `last` (None: stop now); close them, collect."""
        for pipe in self.pipes:
            pipe.send(("finish", last, seconds))
        sockets: list[Got] = []
        cpu = []
        for pipe in self.pipes:
            if not pipe.poll(seconds + 120):
                raise SystemExit("bench: a WebSocket client process did not report")
            _, seconds_cpu, found = pipe.recv()
            cpu.append(seconds_cpu)
            for firsts, counts, times, closed, irregular, unexpected in found:
                firsts_, counts_, times_ = array("q"), array("q"), array("d")
                firsts_.frombytes(firsts)
                counts_.frombytes(counts)
                times_.frombytes(times)
                sockets.append(Got(firsts_, counts_, times_, closed, irregular, unexpected))
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
    messages: int = 0  # messages received by all sockets
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
        subs = Subscribers(reader.port, sockets, processes, since)
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
    messages = sum(got.messages for got in received.sockets)
    result.messages = messages
    result.client_us = sum(received.cpu) / messages * 1e6 if messages else 0.0
    arrivals = [got.times[-1] for got in received.sockets if len(got.times)]
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
    low, high = (expected[0], expected[-1]) if expected else (0, -1)
    contiguous = expected == list(range(low, high + 1))
    commits: list[float | None] = [committed_at.get(seq) for seq in range(low, high + 1)] if contiguous else []
    latencies: list[float] = []
    for got in received.sockets:
        if contiguous and not got.irregular:
            # One run of consecutive seqs from the first received: compare its bounds with the feed's.
            first = got.firsts[0] if len(got.firsts) else high + 1
            end = got.firsts[-1] + got.counts[-1] if len(got.firsts) else high + 1
            inside = max(0, min(end, high + 1) - max(first, low))
            missing, duplicated, backwards = len(expected) - inside, 0, 0
            unexpected = (end - first) - inside
        else:
            seqs = got.seqs()
            seen = set(seqs)
            missing = len(wanted - seen)
            duplicated = len(seqs) - len(seen)
            backwards = sum(1 for a, b in zip(seqs, seqs[1:], strict=False) if b <= a) - duplicated
            backwards = max(backwards, 0)
            unexpected = len(seen - wanted)
        unexpected += got.unexpected
        result.missing += missing
        result.duplicated += duplicated
        result.out_of_order += backwards
        result.unexpected += unexpected
        if not (missing or duplicated or backwards or unexpected):
            result.complete += 1
        if got.closed is not None:
            key = f"{got.closed[0]} {got.closed[1] or ''}".strip()
            result.closed[key] = result.closed.get(key, 0) + 1
        for first, count, arrived in zip(got.firsts, got.counts, got.times, strict=True):
            if contiguous and low <= first and first + count - 1 <= high:
                at = commits[first - low : first - low + count]
            else:
                at = [committed_at.get(seq) for seq in range(first, first + count)]
            latencies += [arrived - commit for commit in at if commit is not None]
    if latencies:
        latencies.sort()
        result.latencies = {
            "p50": percentile(latencies, 50) * 1000,
            "p99": percentile(latencies, 99) * 1000,
            "max": latencies[-1] * 1000,
            "min": latencies[0] * 1000,
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


# -- part 3: the request path, before the feed and with it ------------------------------

BASELINE = "ce222dd"  # main before issue 19: no change recording, no feed
COMPARE = {
    "before": ("before", "sockets"),  # the build before the feed, this build with sockets listening
    "sockets": ("quiet", "sockets"),  # this build without sockets, and with them
    "all": ("before", "quiet", "sockets"),
}


def baseline_tree(workdir: Path, spec: str) -> tuple[Path | None, str]:
    """Return a checkout of the build to compare with (a directory, or a git revision unpacked), or why not."""
    if not spec or spec == "none":
        return None, "no build before the feed given (--baseline)"
    given = Path(spec)
    if (given / "bin" / "medusa-v2").is_file():
        return given.resolve(), spec
    target = workdir / f"baseline-{re.sub(r'[^A-Za-z0-9._-]+', '_', spec)}"
    if not (target / "bin" / "medusa-v2").is_file():
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(run.ROOT), "archive", "--format=tar", spec], capture_output=True, timeout=120
        )
        if archive.returncode != 0:
            shutil.rmtree(target, ignore_errors=True)
            return None, f"git archive {spec} failed: {archive.stderr.decode(errors='replace').strip()[:200]}"
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True, timeout=120)
    described = subprocess.run(
        ["git", "-C", str(run.ROOT), "log", "-1", "--format=%h %s", spec], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    return target, described or spec


@dataclass
class Build:
    """One daemon of the comparison: which build, its database, and the sockets listening to it."""

    key: str  # before, quiet (this build, no sockets), sockets (this build, sockets listening)
    label: str
    launcher: Path
    config: Path | None = None
    daemon: run.Server | None = None
    subs: Subscribers | None = None
    scenarios: dict[str, run.Scenario] = field(default_factory=dict)
    cpu: float = 0.0


def request_path(
    store: str,
    workdir: Path,
    pg: run.PgServer | None,
    opts: Options,
    baseline: Path | None,
) -> dict[str, Any]:
    """Measure bench/run.py's request-path rows on each build of `opts.compare`, side by side.

    Every build has its own daemon (one process) on its own database, seeded alike
    through its own `medusa-v2 import`; the sockets build has `opts.request_sockets`
    sockets listening to its feed the whole time. Each row runs `opts.rounds` rounds;
    a round runs wrk once on every build, the order rotated every round. The daemons
    not being measured are stopped (SIGSTOP), so an idle poller takes no core from the
    one that is. A build's figure is the median of its rounds; the row's ratio is
    sockets / the first build's, with the spread of each build's rounds as the noise.
    """
    keys = COMPARE[opts.compare if baseline is not None else "sockets"]
    name = run.STORE_NAMES[store]
    labels = {
        "before": "before the feed",
        "quiet": "this build, no socket",
        "sockets": f"this build, {opts.request_sockets} sockets",
    }
    builds = [
        Build(k, labels[k], (baseline / "bin" / "medusa-v2") if k == "before" and baseline else run.LAUNCHER)
        for k in keys
    ]
    data, _ = run.data_file(workdir, opts.request_tickets)
    rows: list[dict[str, Any]] = []
    try:
        for build in builds:
            config, _ = run.seed(workdir, data, store, f"requests-{build.key}", pg, build.launcher)
            build.config = config
            build.daemon = run.Server.daemon(
                config, workdir / f"events-{store}-requests-{build.key}.log", build.launcher
            )
            scenarios = run.load_scenarios(run.Client(build.daemon.port), opts.request_tickets)
            build.scenarios = {s[0]: s for s in scenarios if s[0] in REQUEST_ROWS}
            if build.key == "sockets":
                build.subs = Subscribers(
                    build.daemon.port, opts.request_sockets, min(opts.processes, opts.request_sockets)
                )
                build.subs.wait_ready()
            os.kill(build.daemon.pid, signal.SIGSTOP)
        print(
            f"bench: {name}: request path, {' / '.join(b.label for b in builds)}, {opts.rounds} round(s)",
            file=sys.stderr,
        )
        seconds = opts.request_seconds / opts.rounds
        for row in REQUEST_ROWS:
            runs: dict[str, list[dict[str, Any]]] = {b.key: [] for b in builds}
            for build in builds:  # a warm-up, not counted: a fresh daemon's first second is slower
                assert build.daemon is not None
                _, method, path, headers, body = build.scenarios[row]
                os.kill(build.daemon.pid, signal.SIGCONT)
                run.wrk(build.daemon.port, path, 1, workdir, method, headers, body)
                os.kill(build.daemon.pid, signal.SIGSTOP)
            for r in range(opts.rounds):
                for build in builds[r % len(builds) :] + builds[: r % len(builds)]:
                    assert build.daemon is not None
                    _, method, path, headers, body = build.scenarios[row]
                    os.kill(build.daemon.pid, signal.SIGCONT)
                    time.sleep(0.3)  # the poller catches up with what waited while stopped
                    before = process_cpu(build.daemon.pid)
                    result = run.wrk(build.daemon.port, path, seconds, workdir, method, headers, body)
                    result["cpu"] = process_cpu(build.daemon.pid) - before
                    os.kill(build.daemon.pid, signal.SIGSTOP)
                    runs[build.key].append(result)
            rows.append(compare_row(name, row, builds, runs))
    finally:
        delivered: dict[str, Any] = {}
        for build in builds:
            if build.daemon is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(build.daemon.pid, signal.SIGCONT)
        for build in builds:
            if build.subs is not None and build.daemon is not None:
                last = feed_end(build.daemon.port)
                got = build.subs.finish(last, 30)
                delivered = {
                    "sockets": len(got.sockets),
                    "messages": sum(g.messages for g in got.sockets),
                    "complete": sum(
                        1
                        for g in got.sockets
                        if not g.irregular
                        and not g.unexpected
                        and g.closed is None
                        and len(g.firsts)
                        and g.firsts[-1] + g.counts[-1] - 1 == last
                    ),
                    "cut_off": sum(1 for g in got.sockets if g.closed is not None),
                    "clients_cpu": sum(got.cpu),
                    "last": last,
                }
            if build.daemon is not None:
                build.daemon.stop()
    return {"rows": rows, "builds": [b.label for b in builds], "keys": keys, "delivered": delivered}


def compare_row(store: str, row: str, builds: list[Build], runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Return one request-path row: each build's median req/s and p99, the ratios to the first build, the noise."""
    out: dict[str, Any] = {"store": store, "name": row, "builds": {}}
    for build in builds:
        rps = [r["rps"] for r in runs[build.key]]
        median = statistics.median(rps)
        out["builds"][build.key] = {
            "rps": median,
            "p99": statistics.median(r["p99"] for r in runs[build.key]),
            "low": min(rps),
            "high": max(rps),
            "noise": (max(rps) - min(rps)) / median if median else 0.0,
            "errors": sum(r["errors"] for r in runs[build.key]),
        }
    first = builds[0].key
    base = out["builds"][first]["rps"]
    out["ratios"] = {b.key: out["builds"][b.key]["rps"] / base for b in builds[1:]}
    paired = [s["rps"] / f["rps"] for f, s in zip(runs[first], runs[builds[-1].key], strict=True)]
    out["paired"] = (min(paired), max(paired))
    out["noise"] = max(v["noise"] for v in out["builds"].values())
    shown = "  ".join(f"{b.label} {out['builds'][b.key]['rps']:,.0f}" for b in builds)
    ratios = ", ".join(f"x{v:.3f}" for v in out["ratios"].values())
    print(f"  {store}: {row:16} {shown}  ({ratios}; noise {out['noise']:.1%})", file=sys.stderr)
    for build in builds:
        rounds = ", ".join(f"{r['rps']:,.0f}" for r in runs[build.key])
        print(f"    {build.label}: {rounds} req/s by round", file=sys.stderr)
    return out


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
    request_sockets: int = 10
    request_seconds: float = 10.0  # per row and build, split between the rounds
    rounds: int = 5
    cross: bool = True
    requests: bool = True
    request_tickets: int = 100_000  # as bench/run.py's throughput tables
    compare: str = "before"  # a key of COMPARE
    baseline: str = BASELINE  # a checkout or a git revision of the build before the feed ("none": skip it)

    @classmethod
    def smoke(cls) -> Options:
        return cls(10, 20.0, 1.0, 1, 100, 5.0, 10, 10, 1.0, 1, request_tickets=300)


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
        baseline, out["baseline"] = (None, "") if opts.compare == "sockets" else baseline_tree(workdir, opts.baseline)
        if baseline is None and opts.compare != "sockets":
            print(f"bench: {name}: {out['baseline']}: comparing without and with sockets instead", file=sys.stderr)
        shared = (workdir / f"tickets-{opts.request_tickets}.jsonl").exists()
        out["requests"] = request_path(store, workdir, pg, opts, baseline)
        if not shared:
            (workdir / f"tickets-{opts.request_tickets}.jsonl").unlink(missing_ok=True)
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
        f"WebSockets on `{EVENTS}?api_key=…`, held by {opts.processes} client process(es), while a writer",
        "POSTs and PATCHes tickets over HTTP at a steady rate (half each). The clients are made cheap so that",
        "they measure the server, not themselves: raw sockets (the upgrade by hand, the 101 checked), every",
        "socket of a process on one epoll, reads of up to 256 KiB, frames walked by their headers, the seqs of",
        "a read taken by one regex call (no JSON parse), one arrival time (time.time()) per read for all its",
        "messages, each socket checked against the seqs it expects next. A change's commit time is when its",
        "HTTP answer arrived; each (socket, change) delay runs from there to the read that brought it. The feed's list",
        f"(`GET {EVENTS}?since=`) says which changes the run made: a socket is complete when it received",
        "every one of them exactly once and in seq order. The daemons (one process each), the clients and",
        f"the writer share this machine's {cores} cores: their CPU is given as a share of one core over the",
        "run, beside the whole machine's. Two daemons: sockets on B, writes through A, one PostgreSQL database.",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by"
        f" `{' '.join([Path(sys.argv[0]).name, *sys.argv[1:]])}` ({opts.seconds:g} s of writing a run).",
        "",
        "| run | sockets | changes/s (made) | changes | complete sockets | missing | duplicated | out of order"
        " | closed by the server | p50 ms | p99 ms | max ms | last message after the last commit, s | target | met"
        " | CPU: daemon | clients | writer | others | machine | clients, µs a message |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
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
                f" | {d.cpu['clients']:.0%} | {d.cpu['writer']:.0%} | {d.cpu['others']:.0%} | {d.cpu['machine']:.0%}"
                f" | {d.client_us:.1f} |"
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
    for result in results:
        if result["requests"]:
            out += request_lines(result, opts, verdict)
    return out


def request_lines(result: dict[str, Any], opts: Options, verdict: Any) -> list[str]:
    """Return the request-path table of one store (see `request_path`)."""
    found = result["requests"]
    keys, labels = found["keys"], dict(zip(found["keys"], found["builds"], strict=True))
    name = run.STORE_NAMES[result["store"]]
    first, last = keys[0], keys[-1]
    if first == "before":
        what = f"the build before the feed ({result['baseline']}: no change recorded, no feed)"
    else:
        what = "this build with no socket listening" + (f" ({result['baseline']})" if result.get("baseline") else "")
    out = [
        f"The request path, {name}: bench/run.py's wrk rows (1 thread, 32 connections, {opts.request_tickets:,}"
        f" tickets) on {what}, and on this build with {opts.request_sockets} sockets listening to its feed (every"
        f" change recorded in its transaction, the poller reading every {POLL_MS:g} ms, every POST and PATCH a"
        f" message to each socket). Each build has its own daemon (one process) and database; {opts.rounds}"
        f" round(s) of {run.wrk_seconds(opts.request_seconds / opts.rounds)} s per build and row, the order rotated"
        " every round, the daemons not measured stopped (SIGSTOP). A build's req/s and p99 are the medians of its"
        " rounds (in brackets: the lowest and highest); × is the ratio of the medians (in brackets: the lowest and"
        " highest ratio of the rounds); noise is the largest spread of one build's own rounds, (highest − lowest)"
        " / median: a difference smaller than it is not measured.",
        "",
        "| scenario | "
        + " | ".join(f"{labels[k]}, req/s | p99 ms" for k in keys)
        + "".join(f" | × {labels[k]}" for k in keys[1:-1])
        + " | × | noise | target | met | non-2xx/3xx |",
        "|---|" + "---:|---:|" * len(keys) + "---:|" * (len(keys) - 2) + "---:|---:|---|---|---:|",
    ]
    for row in found["rows"]:
        cells = []
        for k in keys:
            b = row["builds"][k]
            cells.append(f"{b['rps']:,.0f} ({b['low']:,.0f}-{b['high']:,.0f}) | {b['p99']:.2f}")
        ratio = row["ratios"][last]
        low, high = row["paired"]
        errors = sum(b["errors"] for b in row["builds"].values())
        cells += [f"{row['ratios'][k]:.3f}" for k in keys[1:-1]]
        noise = f"{row['noise']:.1%}" if opts.rounds > 1 else "-"  # one round: no spread to show
        out.append(
            f"| {row['name']} | {' | '.join(cells)} | {ratio:.3f} ({low:.2f}-{high:.2f}) | {noise}"
            f" | ≥ {REQUEST_PATH_KEEP:.2f} | {verdict(ratio >= REQUEST_PATH_KEEP)} | {errors} |"
        )
    d = found["delivered"]
    if d:
        out += [
            "",
            f"The {d['sockets']} sockets received {d['messages']:,} messages over the rows; {d['complete']} of them"
            f" every change up to the last (seq {d['last']:,}) in order with no gap, {d['cut_off']} cut off; their"
            f" client process(es) took {d['clients_cpu']:.1f} CPU seconds in all (they share the cores with wrk).",
        ]
    return [*out, ""]


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
        "--request-sockets",
        type=int,
        default=defaults.request_sockets,
        help="sockets listening during wrk (default 10)",
    )
    parser.add_argument(
        "--request-seconds",
        type=float,
        default=defaults.request_seconds,
        help="seconds per wrk row and build, split between the rounds (default 10)",
    )
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="rounds per wrk row (default 5)")
    parser.add_argument(
        "--request-tickets",
        type=int,
        default=defaults.request_tickets,
        help="tickets for the wrk rows (default 100000)",
    )
    parser.add_argument(
        "--compare",
        choices=sorted(COMPARE),
        default=defaults.compare,
        help="request path: before (the build before the feed vs this one with sockets; the default), sockets"
        " (this build without vs with sockets), all (the three)",
    )
    parser.add_argument(
        "--baseline",
        default=defaults.baseline,
        help=f"the build before the feed: a checkout, or a git revision unpacked with git archive (default {BASELINE})",
    )
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
            request_tickets=args.request_tickets,
        )
    opts.cross, opts.requests = not args.no_cross, not args.no_requests
    opts.compare, opts.baseline = args.compare, args.baseline
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
