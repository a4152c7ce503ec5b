"""One configuration key, declared once: section, type, default, bounds and exposure.

`Settings` (settings.py) declares each config.ini key in one line,
`name: type = key(section, default, ...)`, as Django REST framework declares its
settings in `DEFAULTS`. Everything else is derived from those lines: config.ini's
CONFIGSPEC and its section/key names (config.py), the checks `Settings` runs, which
values are secret (never shown, logged or echoed in an error), and the GET /config
view, the PATCH /config whitelist and their OpenAPI schema (config_endpoint.py).

A key's type is the type of its default (str, bool, int, float, or a tuple of
strings for a comma list). A key that is declared inconsistently (a number without
bounds, a secret that is shown, a default its own check refuses) fails at import.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from .casing import to_camel

__all__ = ["Key", "key", "keys_of"]

T = TypeVar("T")

_METADATA = "medusa_v2.key"
_JSON_TYPES: dict[type, str] = {str: "string", bool: "boolean", int: "integer", float: "number", tuple: "array"}


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be a boolean")
    return value


def _integer(value: Any) -> int:
    # bool is an int subclass; True as a port is a bug, not a 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("must be an integer")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number")
    return value


def _strings(value: Any) -> tuple[str, ...]:
    # A bare str is iterable too; accepting it would split "ticket" into letters.
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError("must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("must be a list of strings")
    return tuple(value)


_TYPE_CHECKS: dict[type, Callable[[Any], Any]] = {
    str: _string,
    bool: _boolean,
    int: _integer,
    float: _number,
    tuple: _strings,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Key:
    """One config.ini key: where it lives, its type and default, and who may see or set it."""

    section: str  # config.ini section: General (Medusa's), Database or API (ours)
    default: Any  # its type is the key's type
    name: str = ""  # in config.ini; "": the Settings field's name
    field: str = ""  # the Settings field (filled by keys_of)
    bounds: tuple[float, float] | None = None  # numbers: the inclusive range
    normalise: Callable[[Any], Any] | None = None  # after the type and range: refuse (ValueError) or normalise
    secret: bool = False  # never shown, never logged, never echoed in an error message
    shown: bool = False  # in the GET /config view
    runtime: bool = False  # settable by PATCH /config (and so shown)
    patch_minimum: int | None = None  # PATCH /config refuses less (a limit that could lock clients out)
    pattern: str | None = None  # JSON Schema pattern of the value (of each item, for a list)
    masked: Callable[[Any], str] | None = None  # a secret's loggable form (a URL without its password)

    def __post_init__(self) -> None:
        if self.runtime:
            object.__setattr__(self, "shown", True)
        problem = self._problem()
        if problem:
            raise TypeError(f"config key {self.field or self.name or '?'}: {problem}")
        self.check(self.default)  # a default its own key refuses fails here, at import

    def _problem(self) -> str:
        kind = self.type
        if kind not in _TYPE_CHECKS:
            return f"unsupported type {kind.__name__} (str, bool, int, float or a tuple of str)"
        if (self.bounds is None) == (kind in (int, float)):
            return "numbers need bounds, and only numbers have them"
        if self.secret and self.shown:
            return "a secret is never shown (nor settable at runtime)"
        if self.masked is not None and not self.secret:
            return "only a secret has a masked form"
        if self.patch_minimum is not None and not (self.runtime and kind is int):
            return "patch_minimum is for integer keys settable at runtime"
        return ""

    @property
    def type(self) -> type:
        """Return the key's type: that of its default."""
        return type(self.default)

    @property
    def json_name(self) -> str:
        """Return the key's name in GET/PATCH /config (camelCase)."""
        return to_camel(self.field)

    def check(self, value: Any) -> Any:
        """Return `value` checked and normalised, else raise ValueError(reason)."""
        value = _TYPE_CHECKS[self.type](value)
        if self.bounds is not None:
            low, high = self.bounds
            # Written so that NaN (every comparison False) is refused too.
            if not low <= value <= high:
                shown = f"{low}..{high}" if self.type is int else f"{low:g}..{high:g}"
                raise ValueError(f"{value} is out of range ({shown})")
            if self.type is float:
                value = float(value)
        return value if self.normalise is None else self.normalise(value)

    def json_schema(self, *, patch: bool = False) -> dict[str, Any]:
        """Return the JSON Schema of the value in GET /config, or (`patch`) in a PATCH body."""
        if self.type is tuple:
            items: dict[str, Any] = {"type": "string"}
            if self.pattern:
                items["pattern"] = self.pattern
            return {"type": "array", "items": items}
        schema: dict[str, Any] = {"type": _JSON_TYPES[self.type]}
        if self.pattern:
            schema["pattern"] = self.pattern
        if self.bounds is not None:
            low, high = self.bounds
            if patch and self.patch_minimum is not None:
                low = max(low, self.patch_minimum)
            schema["minimum"], schema["maximum"] = low, high
        return schema

    def config_text(self, value: Any) -> str | list[str]:
        """Return `value` as config.ini holds it (a list for a comma list, `1`/`0` for a boolean)."""
        if self.type is tuple:
            return list(value)
        if self.type is bool:
            return "1" if value else "0"
        if self.type is float:
            return format(value, "g")
        return str(value)


def key(
    section: str,
    default: T,
    *,
    name: str = "",
    bounds: tuple[float, float] | None = None,
    normalise: Callable[[Any], Any] | None = None,
    secret: bool = False,
    shown: bool = False,
    runtime: bool = False,
    patch_minimum: int | None = None,
    pattern: str | None = None,
    masked: Callable[[Any], str] | None = None,
) -> T:
    """Declare a Settings field as a config.ini key; see `Key` for each argument."""
    spec = Key(
        section,
        default,
        name=name,
        bounds=bounds,
        normalise=normalise,
        secret=secret,
        shown=shown,
        runtime=runtime,
        patch_minimum=patch_minimum,
        pattern=pattern,
        masked=masked,
    )
    # A secret's field is repr=False too, for any tool that reads the dataclass's repr flags.
    return dataclasses.field(default=default, repr=not secret, metadata={_METADATA: spec})


def keys_of(cls: type) -> tuple[Key, ...]:
    """Return the keys a dataclass declares with `key()`, in declaration order, named after their fields."""
    found = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get(_METADATA)
        if spec is not None:
            found.append(dataclasses.replace(spec, field=f.name, name=spec.name or f.name))
    return tuple(found)
