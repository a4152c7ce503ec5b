"""The access log: one line per request, in text or JSON, and the daemon's log handler that batches lines per loop pass.

A line says the method, the path (api_key and token values redacted), the status,
the milliseconds and the request id (`X-Request-ID`). `[General] log_format = json`
makes every line of the daemon one JSON object (`JsonFormatter`): an access-log
line adds `method`, `path`, `status`, `duration_ms`, `remote_ip`, `request_id` and
`user_agent` to the `time`, `level`, `pid`, `logger` and `message` of every line.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from typing import Any

import tornado.web

from .handler import redact_uri
from .request_id import request_id

access_log = logging.getLogger("medusa_v2.access")
LOG_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"  # the daemon's text lines
ACCESS_ATTRIBUTE = "access"  # an access-log LogRecord's fields, for JsonFormatter
MAX_USER_AGENT = 256  # characters of a User-Agent written in a JSON line


def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line (ASCII, so no line break can hide in a value).

    `time` is UTC (ISO 8601, milliseconds); an access-log record's fields are added
    as they are; an exception's traceback is `exc_info`.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object."""
        second = int(record.created)
        doc: dict[str, Any] = {
            "time": f"{_utc_second(second)}.{int((record.created - second) * 1000):03d}Z",
            "level": record.levelname,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, ACCESS_ATTRIBUTE, None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(doc, separators=(",", ":"))


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
        self.json = False  # formats with JsonFormatter: access lines go through `json_line`
        self._utc_second = -1
        self._utc_text = ""

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 (logging's name)
        """Use `fmt`; a plain Formatter with the default date format formats each second once."""
        plain = fmt is not None and type(fmt) is logging.Formatter and fmt.datefmt is None
        if plain:
            fmt.formatTime = self._format_time  # type: ignore[method-assign,union-attr]
        # Lines in LOG_FORMAT can be written without a LogRecord (see `line`).
        self._daemon_format = plain and fmt._fmt == LOG_FORMAT and isinstance(fmt._style, logging.PercentStyle)  # type: ignore[union-attr]
        self.json = type(fmt) is JsonFormatter
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

    def json_line(self, levelno: int, name: str, message: str, fields: dict[str, Any]) -> bool:
        """Queue an access line as JsonFormatter formats it, without a LogRecord; False if it cannot."""
        if not self.json or self.filters or levelno < self.level:
            return False
        now = time.time()
        second = int(now)
        if second != self._utc_second:
            self._utc_text = _utc_second(second)
            self._utc_second = second
        doc = {
            "time": f"{self._utc_text}.{int((now - second) * 1000):03d}Z",
            "level": logging.getLevelName(levelno),
            "pid": os.getpid(),
            "logger": name,
            "message": message,
            **fields,
        }
        self._pending.append(json.dumps(doc, separators=(",", ":")))
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
    """Write one access-log line: method, path (secrets redacted), status, milliseconds, request id."""
    status = handler.get_status()
    level = logging.INFO if status < 500 else logging.ERROR
    if access_log.isEnabledFor(level):
        request = handler.request
        uri = redact_uri(request.uri or "")
        milliseconds = request.request_time() * 1000
        rid = request_id(request)
        message = "%s %s %d %.1fms request_id=%s" % (request.method, uri, status, milliseconds, rid)  # noqa: UP031 (the fastest spelling)
        sink = _direct_sink()
        if sink is not None:
            if sink.json:
                if sink.json_line(level, access_log.name, message, _fields(request, uri, status, milliseconds, rid)):
                    return
            elif sink.line(level, access_log.name, message):
                return
        # Logger.log would also walk the stack to find its caller (a tenth of a small
        # request's cost): the record is made here, with the same name, level and text.
        record = access_log.makeRecord(access_log.name, level, __file__, 0, message, (), None, "log_request")
        setattr(record, ACCESS_ATTRIBUTE, _fields(request, uri, status, milliseconds, rid))
        access_log.handle(record)


def _fields(request: Any, uri: str, status: int, milliseconds: float, rid: str) -> dict[str, Any]:
    """Return an access line's fields for a JSON line."""
    return {
        "method": request.method,
        "path": uri,
        "status": status,
        "duration_ms": round(milliseconds, 3),
        "remote_ip": request.remote_ip,
        "request_id": rid,
        "user_agent": request.headers.get("User-Agent", "")[:MAX_USER_AGENT],
    }


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
