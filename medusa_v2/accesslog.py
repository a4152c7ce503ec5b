"""The access log: one line per request, and the daemon's log handler that batches lines per loop pass."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import tornado.web

from .handler import redact_uri

access_log = logging.getLogger("medusa_v2.access")
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"  # the daemon's log lines


class LoopBufferedHandler(logging.StreamHandler):
    """A StreamHandler that writes its lines once per event-loop iteration.

    Under load one loop iteration answers several requests: their access-log lines
    go out in one write instead of a write and a flush each. WARNING and above, and
    records logged outside a running loop, are written at once; `flush()` (called
    by logging.shutdown) writes whatever is pending.
    """

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False
        self._second = -1
        self._second_text = ""
        self._daemon_format = False

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 (logging's name)
        """Use `fmt`; a plain Formatter with the default date format formats each second once."""
        plain = fmt is not None and type(fmt) is logging.Formatter and fmt.datefmt is None
        if plain:
            fmt.formatTime = self._format_time  # type: ignore[method-assign,union-attr]
        # Lines in LOG_FORMAT can be written without a LogRecord (see `line`).
        self._daemon_format = plain and fmt._fmt == LOG_FORMAT and isinstance(fmt._style, logging.PercentStyle)  # type: ignore[union-attr]
        super().setFormatter(fmt)

    def line(self, levelno: int, name: str, message: str) -> bool:
        """Queue a line as LOG_FORMAT formats it, without a LogRecord; False if it cannot.

        The access log's path (a LogRecord and its formatting are a tenth of a small
        request's cost). Only for a handler formatting in LOG_FORMAT, without filters.
        """
        if not self._daemon_format or self.filters or levelno < self.level:
            return False
        now = time.time()
        second = int(now)
        if second != self._second:
            self._format_time_of(now)
        text = (logging.Formatter.default_msec_format or "%s,%03d") % (self._second_text, int((now - second) * 1000))
        self._pending.append(f"{text} {logging.getLevelName(levelno)} [{os.getpid()}] {name}: {message}")
        self._schedule(levelno)
        return True

    def _format_time(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # logging.Formatter.formatTime, with the strftime part kept for the whole second.
        if int(record.created) != self._second:
            self._format_time_of(record.created)
        return (logging.Formatter.default_msec_format or "%s,%03d") % (self._second_text, record.msecs)

    def _format_time_of(self, created: float) -> None:
        converter = self.formatter.converter if self.formatter is not None else time.localtime
        self._second_text = time.strftime(logging.Formatter.default_time_format, converter(created))
        self._second = int(created)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._pending.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        self._schedule(record.levelno)

    def _schedule(self, levelno: int) -> None:
        if levelno >= logging.WARNING:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            self._scheduled = False
            if self._pending:
                lines, self._pending = self._pending, []
                try:
                    self.stream.write(self.terminator.join(lines) + self.terminator)
                except Exception:
                    pass  # like StreamHandler: a broken stderr must not break requests
            super().flush()
        finally:
            self.release()


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Write one access-log line: method, path (api_key redacted), status, milliseconds."""
    status = handler.get_status()
    level = logging.INFO if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        message = "%s %s %d %.1fms" % (  # noqa: UP031 (the fastest spelling)
            request.method,
            redact_uri(request.uri or ""),
            status,
            request.request_time() * 1000,
        )
        sink = _direct_sink()
        if sink is not None and sink.line(level, access_log.name, message):
            return
        # Logger.log would also walk the stack to find its caller (a tenth of a small
        # request's cost): the record is made here, with the same name, level and text.
        access_log.handle(access_log.makeRecord(access_log.name, level, __file__, 0, message, (), None, "log_request"))


def _direct_sink() -> LoopBufferedHandler | None:
    """Return the one handler an access-log record would reach, if it is ours (else None).

    That is: no logger from medusa_v2.access up to the root has handlers or stops
    propagation, the access logger has no filters, and the root has exactly one
    handler, a LoopBufferedHandler (the daemon's set-up). Anything else (an
    embedder's logging, pytest's capture) gets real LogRecords.
    """
    if access_log.filters:
        return None
    logger: logging.Logger | None = access_log
    while logger is not None and logger.parent is not None:
        if logger.handlers or not logger.propagate:
            return None
        logger = logger.parent
    handlers = logger.handlers if logger is not None else []
    if len(handlers) == 1 and type(handlers[0]) is LoopBufferedHandler:
        return handlers[0]
    return None
