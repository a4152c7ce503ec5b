"""The bytes of an answer and its ETag: compact ASCII JSON, and a SHA-1 tag of those bytes.

One encoding for every answer (handlers, the fast path, exports), so equal data
always gives equal bytes, and so equal ETags.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

# No circular-reference bookkeeping: what we encode are trees of fresh dicts and
# lists (a cycle would be a RecursionError, still a 500).
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)


def _compact_encoder(make_c_encoder: Callable[..., Any] | None) -> Callable[[Any], str]:
    """Return the function that encodes a value as `_ENCODER.encode` does.

    `JSONEncoder.encode` builds CPython's C encoder (`json.encoder.c_make_encoder`,
    private) anew at every call, and building it is a good part of encoding a small
    answer (docs/benchmarks.md). So it is built once here, with the arguments
    `encode` would give it, and the bytes are the same (tests/test_properties.py
    compares them with `json.dumps`). It holds no state between calls: without
    circular-reference markers it is safe to share. Where there is no C encoder
    (`c_make_encoder` is None without CPython's `_json` module, and a later CPython
    may drop the private name), `make_c_encoder` is None and `_ENCODER.encode`
    itself is used: slower, same bytes (tests/test_codec.py checks both).
    """
    if make_c_encoder is None:
        return _ENCODER.encode
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan)
    chunks = make_c_encoder(
        None, _ENCODER.default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def encode(value: Any) -> str:
        return "".join(chunks(value, 0))

    return encode


_encode = _compact_encoder(getattr(json.encoder, "c_make_encoder", None))


def encode_json(value: Any) -> bytes:
    """Serialise compactly; ASCII-only output is valid UTF-8 whatever the text holds."""
    return _encode(value).encode("ascii")


def encode_json_text(value: Any) -> str:
    """Return `encode_json(value)` as text (ASCII only), for callers that join many first."""
    return _encode(value)


def etag_of(body: bytes, suffix: bytes = b"") -> str:
    """Return the strong ETag of a response body (followed by `suffix`, not copied)."""
    digest = hashlib.sha1(body, usedforsecurity=False)
    if suffix:
        digest.update(suffix)
    return '"' + digest.hexdigest() + '"'
