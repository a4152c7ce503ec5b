"""A one-line progress bar for long commands (export, import), drawn only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import IO


class Progress:
    """A one-line progress bar (count, rate, ETA) on a terminal; silent elsewhere."""

    def __init__(self, stream: IO[str] | None, unit: str, total: int | None = None) -> None:
        self.stream = stream if stream is not None and isatty(stream) else None
        self.unit = unit
        self.total = total
        self.start = time.monotonic()
        self._shown = 0.0

    def update(self, count: int, fraction: float | None = None, *, force: bool = False) -> None:
        """Redraw at most five times a second; `fraction` done (else count / total)."""
        if self.stream is None:
            return
        now = time.monotonic()
        if not force and now - self._shown < 0.2:
            return
        self._shown = now
        elapsed = max(now - self.start, 1e-9)
        rate = count / elapsed
        if fraction is None and self.total:
            fraction = min(count / self.total, 1.0)
        line = f"{count:,} {self.unit}  {rate:,.0f}/s"
        if fraction is not None and fraction > 0:
            width = 24
            filled = int(width * fraction)
            eta = elapsed * (1 - fraction) / fraction
            line = f"[{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}  {line}  ETA {eta:,.0f}s"
        self.stream.write("\r" + line + "\033[K")
        self.stream.flush()

    def done(self, count: int) -> None:
        """Draw the final state and end the line."""
        if self.stream is None:
            return
        self.update(count, 1.0 if self.total is not None or count else None, force=True)
        self.stream.write("\n")
        self.stream.flush()


def isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def progress_stream() -> IO[str] | None:
    """Return stderr when it is a terminal (the bar is drawn there), else None."""
    return sys.stderr if isatty(sys.stderr) else None
