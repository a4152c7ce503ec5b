"""The resources this package ships (ticket, nested message)."""

from __future__ import annotations

from ..resource import Resource

BUILTIN: dict[str, type[Resource]] = {}
