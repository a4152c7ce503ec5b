"""`X-Request-ID`: the client's when it is sane, else one generated, once per request.

Every answer of the API echoes it and the access log writes it, so one request can
be followed from a client or a proxy to the daemon's log line. A value a client
sends is kept only when it is 1 to 128 characters of `A-Z a-z 0-9 . _ : @ / + = -`
(nothing a header, a log line or a log shipper could read as something else);
any other value is replaced, not refused. A generated id is 16 hex digits: 8
drawn from the OS's random source once per process, then a counter of 8 (cheaper
than a random draw per request; unique within a process, and across processes
and daemons but for the odds of two random prefixes meeting).
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any

HEADER = "X-Request-ID"
MAX_LENGTH = 128
_SANE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,%d}" % MAX_LENGTH).fullmatch  # noqa: UP031 (a regex's braces)
_ATTRIBUTE = "medusa_v2_request_id"  # where a request keeps its id (tornado's HTTPServerRequest)


def is_sane(value: str) -> bool:
    """Return whether a client's X-Request-ID is kept as it is."""
    return _SANE(value) is not None


_counter = itertools.count()
_prefix = ("", -1)  # (8 random hex digits, the pid they were drawn in): a forked worker draws its own


def new_request_id() -> str:
    """Return a fresh id: 16 hex digits."""
    global _prefix
    prefix, pid = _prefix
    if pid != os.getpid():
        prefix = os.urandom(4).hex()
        _prefix = (prefix, os.getpid())
    return f"{prefix}{next(_counter) & 0xFFFFFFFF:08x}"


def request_id(request: Any) -> str:
    """Return the request's id: chosen on the first call (the client's if sane), the same afterwards."""
    rid: str | None = getattr(request, _ATTRIBUTE, None)
    if rid is None:
        sent = request.headers.get(HEADER)
        rid = sent if sent is not None and _SANE(sent) is not None else new_request_id()
        setattr(request, _ATTRIBUTE, rid)
    return rid
