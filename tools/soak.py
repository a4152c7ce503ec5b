#!/usr/bin/env python3
"""Soak the daemon: mixed load for a while, zero unexpected statuses, flat memory.

    python tools/soak.py --minutes 30 [--clients 8] [--processes 1]

Starts the daemon (bin/medusa-v2) on a temporary config and SQLite database, runs
clients doing a realistic mix (list, search, GET with and without If-None-Match,
POST with and without Idempotency-Key, PATCH with If-Match, PUT, DELETE, messages,
bad input that must be refused), samples the daemon's resident memory, and fails
(exit 1) on any unexpected status or when memory keeps growing in the second half.
Traffic goes to 127.0.0.1 only; every loop is bounded by the duration.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "50a650a650a650a650a650a650a650a6"


@dataclass
class Report:
    """What a soak run saw."""

    requests: int = 0
    unexpected: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    rss_kib: list[int] = field(default_factory=list)

    @property
    def memory_flat(self) -> bool:
        """Return whether memory stopped growing: the last third peaks at most 10% above the middle third."""
        if len(self.rss_kib) < 6:
            return True
        third = len(self.rss_kib) // 3
        middle = max(self.rss_kib[third : 2 * third])
        last = max(self.rss_kib[2 * third :])
        return last <= middle * 1.10 + 1024


def rss_kib(pids: list[int]) -> int:
    """Return the summed VmRSS of processes (KiB)."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        m = re.search(r"VmRSS:\s+(\d+)", text)
        total += int(m.group(1)) if m else 0
    return total


def daemon_pids(parent: int) -> list[int]:
    """Return the daemon's pid and its workers' pids."""
    pids = [parent]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                pids.append(int(entry.name))
    return pids


class Client(threading.Thread):
    """One client running the mix until the deadline."""

    def __init__(self, port: int, deadline: float, seed: int, report: Report, lock: threading.Lock) -> None:
        super().__init__(daemon=True)
        self.port, self.deadline, self.rng, self.report, self.lock = port, deadline, random.Random(seed), report, lock
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.mine: list[int] = []

    def call(self, method: str, path: str, body: object = None, headers: dict | None = None, expect: tuple = (200,)):
        hdrs = {"X-Api-Key": KEY, **(headers or {})}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            self.conn.request(method, "/api/v2" + path, body=data, headers=hdrs)
            r = self.conn.getresponse()
            payload = r.read()
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            with self.lock:
                self.report.unexpected.append(f"{method} {path}: {exc!r}")
            return None, {}, b""
        with self.lock:
            self.report.requests += 1
            self.report.statuses[r.status] += 1
            if r.status not in expect:
                self.report.unexpected.append(f"{method} {path}: {r.status} {payload[:200]!r}")
        return r.status, dict(r.getheaders()), payload

    def run(self) -> None:
        rng = self.rng
        while time.monotonic() < self.deadline:
            action = rng.random()
            if action < 0.15 or not self.mine:
                key = {"Idempotency-Key": f"k-{rng.random()}"} if rng.random() < 0.3 else {}
                status, _, payload = self.call(
                    "POST", "/ticket", {"title": f"soak {rng.random()}", "priority": rng.randint(1, 5)}, key, (201,)
                )
                if status == 201:
                    self.mine.append(json.loads(payload)["id"])
            elif action < 0.35:
                self.call("GET", f"/ticket?page={rng.randint(1, 5)}&sort=-priority,updated-at")
            elif action < 0.45:
                self.call("GET", f"/ticket?q=soak+0.{rng.randint(1, 9)}&state=open")
            elif action < 0.60:
                ticket = rng.choice(self.mine)
                status, headers, _ = self.call("GET", f"/ticket/{ticket}")
                if status == 200:
                    self.call("GET", f"/ticket/{ticket}", headers={"If-None-Match": headers["Etag"]}, expect=(304,))
                    self.call(
                        "PATCH",
                        f"/ticket/{ticket}",
                        {"priority": rng.randint(1, 5)},
                        {"If-Match": headers["Etag"]},
                        (200,),
                    )
            elif action < 0.70:
                ticket = rng.choice(self.mine)
                self.call("PUT", f"/ticket/{ticket}", {"title": "replaced", "state": "pending"}, expect=(204,))
            elif action < 0.80:
                ticket = rng.choice(self.mine)
                self.call("POST", f"/ticket/{ticket}/message", {"author": "soak", "body": "hi"}, expect=(201, 409))
                self.call("GET", f"/ticket/{ticket}/message")
            elif action < 0.88:
                bad = rng.choice([b"{", b"[]", b'{"title": ""}', b'{"priority": "1", "title": "x"}'])
                self.call("POST", "/ticket", bad, expect=(400,))
                self.call("GET", "/ticket?limit=0", expect=(400,))
                self.call("GET", "/ticket/abc", expect=(400,))
            elif action < 0.93:
                self.call("GET", "/ticket", headers={"X-Api-Key": "wrong"}, expect=(401,))
            elif len(self.mine) > 5:
                ticket = self.mine.pop(rng.randrange(len(self.mine)))
                self.call("DELETE", f"/ticket/{ticket}", expect=(204,))


def soak(seconds: float, clients: int = 6, processes: int = 1, sample_every: float = 1.0) -> Report:
    """Run one soak against a fresh daemon and return its report."""
    report = Report()
    with tempfile.TemporaryDirectory(prefix="medusa-v2-soak-") as tmp:
        config = Path(tmp) / "config.ini"
        config.write_text(f"[General]\napi_key = {KEY}\nweb_use_gzip = 0\n[API]\nprocesses = {processes}\n")
        proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bin" / "medusa-v2"),
                "serve",
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert proc.stderr is not None
        port = 0
        while not port:
            line = proc.stderr.readline()
            if not line:
                raise SystemExit("soak: the daemon did not start")
            m = re.search(r"serving http://[^ ]+?:(\d+)/", line)
            port = int(m.group(1)) if m else 0
        errors: list[str] = []

        def collect_errors() -> None:
            errors.extend(line for line in proc.stderr if " ERROR " in line or "Traceback" in line)

        threading.Thread(target=collect_errors, daemon=True).start()
        lock = threading.Lock()
        deadline = time.monotonic() + seconds
        threads = [Client(port, deadline, seed, report, lock) for seed in range(clients)]
        for t in threads:
            t.start()
        while time.monotonic() < deadline:
            time.sleep(sample_every)
            report.rss_kib.append(rss_kib(daemon_pids(proc.pid)))
        for t in threads:
            t.join(60)
        os.killpg(proc.pid, signal.SIGTERM)
        if proc.wait(30) != 0:
            report.unexpected.append(f"daemon exit status {proc.returncode}")
        report.unexpected.extend(f"log: {e.strip()}" for e in errors)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args()
    report = soak(args.minutes * 60, args.clients, args.processes, sample_every=max(1.0, args.minutes * 2))
    print(f"requests: {report.requests}  statuses: {dict(sorted(report.statuses.items()))}")
    print(f"rss KiB samples: {report.rss_kib}")
    print(f"memory flat: {report.memory_flat}; unexpected: {len(report.unexpected)}")
    for line in report.unexpected[:20]:
        print("  " + line)
    return 0 if not report.unexpected and report.memory_flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
