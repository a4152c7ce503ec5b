#!/usr/bin/env python3
"""The event loop during a storm of wrong logins: /health latency while passwords are hashed.

Starts the daemon (SQLite, a hashed password) on a free loopback port, then runs,
side by side for the same time, `--clients` wrong logins at once, each client from
its own loopback address (127.0.0.2, 127.0.0.3, ...: every client has its own login
throttle), and a /health probe every few milliseconds. Prints the probe's latency
percentiles with and without the storm. Bounded: `--seconds` of storm, then it stops.

    python bench/login_storm.py [--clients 40] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _request(host: str, port: int, raw: bytes, source: str | None = None) -> bytes:
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0) if source else None)
    try:
        writer.write(raw)
        await writer.drain()
        return await reader.read()  # the daemon closes: Connection: close
    finally:
        writer.close()


async def _probe(port: int, until: float, pause: float = 0.005) -> list[float]:
    raw = b"GET /api/v2/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    latencies = []
    while time.monotonic() < until:
        started = time.perf_counter()
        answer = await _request("127.0.0.1", port, raw)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:80]
        latencies.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(pause)
    return latencies


async def _wrong_logins(port: int, client: int, until: float) -> int:
    body = json.dumps({"username": "admin", "password": f"wrong {client}"}).encode()
    raw = (
        b"POST /api/v2/authenticate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    source = f"127.0.{client // 250}.{client % 250 + 2}"
    tries = 0
    while time.monotonic() < until:
        answer = await _request("127.0.0.1", port, raw, source)
        tries += 1
        if answer.startswith(b"HTTP/1.1 429"):  # throttled: this client's window is full; wait as told
            await asyncio.sleep(0.05)
    return tries


async def _storm(port: int, clients: int, seconds: float) -> tuple[list[float], list[float], int]:
    calm = await _probe(port, time.monotonic() + 1.0)
    until = time.monotonic() + seconds
    results = await asyncio.gather(_probe(port, until), *(_wrong_logins(port, c, until) for c in range(clients)))
    return calm, results[0], sum(results[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from medusa_v2.passwords import hash_password

    with tempfile.TemporaryDirectory() as work:
        config = Path(work) / "config.ini"
        config.write_text(
            "[General]\nweb_username = admin\nweb_password = " + hash_password("right") + "\n"
            "[API]\nlogin_max_failures = 1000000\n"
        )
        daemon = subprocess.Popen(
            [sys.executable, "-m", "medusa_v2", "serve", "--config", str(config), "--host", "127.0.0.1", "--port", "0"],
            cwd=work,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert daemon.stderr is not None
            port = 0
            for line in daemon.stderr:
                found = re.search(r"serving http://[^ ]+?:(\d+)/", line)
                if found:
                    port = int(found.group(1))
                    break
            if not port:
                raise SystemExit("the daemon did not start")
            calm, stormy, logins = asyncio.run(_storm(port, args.clients, args.seconds))
        finally:
            daemon.terminate()
            daemon.wait(15)
    print(f"{args.clients} clients, {logins} wrong logins in {args.seconds:g} s (a hashed password)")
    for label, values in (("calm", calm), ("storm", stormy)):
        print(
            f"/health {label:5}: {len(values)} probes, p50 {statistics.median(values):.1f} ms, "
            f"p99 {_percentile(values, 0.99):.1f} ms, max {max(values):.1f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
