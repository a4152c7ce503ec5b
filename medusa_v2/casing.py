"""snake_case <-> camelCase for JSON keys (memoised: the same few keys repeat)."""

from __future__ import annotations

import re
from typing import Any

_camel_cache: dict[str, str] = {}
_UPPER = re.compile(r"[A-Z]")


def to_camel(name: str) -> str:
    """Return `created_at` as `createdAt` (and `created-at` likewise)."""
    try:
        return _camel_cache[name]
    except KeyError:
        pass
    head, *rest = re.split(r"[_-]", name)
    camel = head + "".join(part[:1].upper() + part[1:] for part in rest)
    if len(_camel_cache) < 4096:  # bounded: keys come from code, but stay safe
        _camel_cache[name] = camel
    return camel


def to_snake(name: str) -> str:
    """Return `createdAt` or `created-at` as `created_at`."""
    return _UPPER.sub(lambda m: "_" + m.group(0).lower(), name).replace("-", "_")


def camelize(value: Any) -> Any:
    """Convert every dict key in a JSON-able structure to camelCase."""
    if isinstance(value, dict):
        return {to_camel(k) if isinstance(k, str) else k: camelize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [camelize(v) for v in value]
    return value
