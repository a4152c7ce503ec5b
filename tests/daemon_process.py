"""A `medusa-v2 serve` subprocess on a free port, for the end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "bin" / "medusa-v2"


class Daemon:
    """A daemon subprocess on a free port; its stderr is collected in the background."""

    def __init__(
        self, config: Path, *extra: str, new_session: bool = False, command: tuple[str, ...] | None = None
    ) -> None:
        """`command`: the arguments after the launcher, instead of `serve` on 127.0.0.1 and a free port."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(config.parent), str(ROOT)])}
        if command is None:
            command = ("serve", "--config", str(config), "--host", "127.0.0.1", "--port", "0", *extra)
        self.proc = subprocess.Popen(
            [sys.executable, str(LAUNCHER), *command],
            cwd=config.parent,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
            start_new_session=new_session,  # its own process group: killpg reaches every worker
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.port = 0
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(20):
            self.proc.kill()
            raise AssertionError("daemon did not start:\n" + self.stderr)

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            m = re.search(r"serving https?://[^ ]+?:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                self._ready.set()

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2{path}"

    def request(self, path: str, *, method: str = "GET", body: dict | None = None, headers: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url(path), data=data, method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def signal_group(self, sig: int) -> None:
        """Signal the daemon and all its workers (start it with new_session=True)."""
        os.killpg(self.proc.pid, sig)

    def wait_for_log(self, pattern: str, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if re.search(pattern, line):
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no log line matching {pattern!r} in:\n{self.stderr}")
