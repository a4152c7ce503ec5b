"""Validated configuration of medusa_v2, as one immutable value.

`Settings` does no I/O: `medusa_v2.config` reads config.ini and builds one, and an
embedding application may build one directly. Every field is checked and normalised
when the object is created (and again by `replace`), so code that receives a
`Settings` never re-validates it.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import os
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Settings", "SettingsError"]

SECRET_FIELDS = frozenset({"web_password", "api_key", "encryption_secret"})

_SQLITE_PREFIX = "sqlite:///"
_SQLITE_MEMORY = _SQLITE_PREFIX + ":memory:"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*", re.ASCII)
_IPV6 = re.compile(r"[0-9a-f:.]+", re.ASCII)
_RESOURCE_NAME = re.compile(r"[a-z][a-z0-9-]*")
# Characters that would change what a URL path means or break a routing regex.
_WEB_ROOT_FORBIDDEN = re.compile(r"[\s?#\\%]|[\x00-\x1f\x7f]")


class SettingsError(ValueError):
    """A field of `Settings` has an invalid value; `field` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Hold the validated configuration; see DESIGN.md "config.ini" for each key."""

    web_host: str = "0.0.0.0"
    web_port: int = 8081
    web_root: str = ""
    web_username: str = ""
    web_password: str = dataclasses.field(default="", repr=False)
    api_key: str = dataclasses.field(default="", repr=False)
    encryption_secret: str = dataclasses.field(default="", repr=False)
    web_use_gzip: bool = True
    handle_reverse_proxy: bool = False
    enable_https: bool = False
    https_cert: str = "server.crt"
    https_key: str = "server.key"
    developer: bool = False
    database_url: str = ""
    cors_origins: tuple[str, ...] = ()
    public_url: str = ""  # the origin of every Location and Link ("": the request's)
    max_body_size: int = 1048576
    login_max_failures: int = 5
    login_window: int = 300
    token_api_key: bool = False
    resources: tuple[str, ...] = ("ticket", "message")
    extra_handlers: tuple[str, ...] = ()
    processes: int = 1
    max_connections: int = 1000  # open connections per process; more get a 503 at once
    shutdown_timeout: float = 10.0
    idle_timeout: float = 60.0
    body_timeout: float = 60.0
    config_path: str | None = None

    def __post_init__(self) -> None:
        for name, check in _CHECKS.items():
            try:
                value = check(getattr(self, name))
            except ValueError as exc:
                raise SettingsError(name, str(exc)) from None
            # Frozen dataclass: normalised values are stored through object.__setattr__.
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        shown = []
        for f in dataclasses.fields(self):
            if not f.repr:
                continue
            value = getattr(self, f.name)
            if f.name == "database_url":
                value = _mask_url_password(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def auth_required(self) -> bool:
        """Return True when a username or a password is configured."""
        return bool(self.web_username or self.web_password)

    @property
    def sqlite_path(self) -> str | None:
        """Return the SQLite file path (or ":memory:"), or None for other databases."""
        if self.database_url.startswith(_SQLITE_PREFIX):
            return _sqlite_file(self.database_url)
        return None

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with `changes` applied and validated."""
        return dataclasses.replace(self, **changes)


# -- field checks: each returns the normalised value or raises ValueError ----------


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be a boolean")
    return value


def _integer(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        # bool is an int subclass; True as a port is a bug, not a 1.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer")
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range ({low}..{high})")
        return value

    return check


def _number(low: float, high: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        # NaN passes every range comparison, so it is refused explicitly.
        if not math.isfinite(value) or not low <= value <= high:
            raise ValueError(f"{value} is out of range ({low:g}..{high:g})")
        return float(value)

    return check


def _strings(value: Any) -> tuple[str, ...]:
    # A bare str is iterable too; accepting it would split "ticket" into letters.
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError("must be a list of strings")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("must be a list of strings")
    return tuple(value)


def _no_blanks(value: str) -> str:
    if re.search(r"[\s\x00-\x1f\x7f]", value):
        raise ValueError(f"{value!r} contains whitespace or control characters")
    return value


def _web_host(value: Any) -> str:
    return _no_blanks(_string(value))


def _non_empty(value: Any) -> str:
    if not _string(value):
        raise ValueError("must not be empty")
    return value


def normalise_web_root(value: Any) -> str:
    """Return `value` as "" or "/a/b": one leading slash, no trailing or repeated ones."""
    value = _string(value)
    if _WEB_ROOT_FORBIDDEN.search(value):
        raise ValueError(f"{value!r} may not contain whitespace, ?, #, % or \\")
    segments = [segment for segment in value.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise ValueError(f"{value!r} may not contain . or .. segments")
    return "".join("/" + segment for segment in segments)


def _database_url(value: Any) -> str:
    value = _string(value)
    # The URL may carry a password, so problems are described without echoing it.
    if value == "" or value == _SQLITE_MEMORY:
        return value
    if value.startswith(_SQLITE_PREFIX):
        path = _sqlite_file(value)
        if not os.path.isabs(path) or "\x00" in path:
            raise ValueError("the sqlite path must be absolute")
        # One canonical form, "sqlite:///abs/path", whether written with three
        # slashes or with SQLAlchemy's four ("sqlite:////abs/path").
        return _SQLITE_PREFIX + os.path.normpath(path).lstrip("/")
    if value.startswith("sqlite:"):
        raise ValueError("a relative sqlite path needs a config file; use sqlite:///ABSOLUTE/PATH")
    if value.startswith(_POSTGRES_PREFIXES):
        if re.search(r"[\s\x00-\x1f\x7f]", value):
            raise ValueError("the PostgreSQL URL contains whitespace or control characters")
        return value
    scheme = value.split(":", 1)[0] if ":" in value else ""
    shown = f"scheme {scheme!r}" if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme) else "value"
    raise ValueError(
        f"unsupported {shown}; use sqlite:///ABSOLUTE/PATH, sqlite:RELATIVE/PATH, "
        "sqlite:///:memory: or postgresql://..."
    )


def _sqlite_file(url: str) -> str:
    """Return the path named by "sqlite:///abs/path" (also "sqlite:////abs/path")."""
    rest = url[len(_SQLITE_PREFIX) :]
    if rest == ":memory:" or os.path.isabs(rest):  # Windows: sqlite:///C:/data/x.db
        return rest
    return "/" + rest.lstrip("/")


def _mask_url_password(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if not password:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def _origin(value: str) -> str:
    """Return `value` as a browser sends it in Origin: lowercase, default port dropped."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} is not an origin (scheme://host[:port])") from None
    if (
        parts.scheme.lower() not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.path
        or parts.query
        or parts.fragment
        or value.endswith(("?", "#"))
        or re.search(r"\s", value)
    ):
        raise ValueError(f"{value!r} is not an origin (http[s]://host[:port], no path)")
    scheme = parts.scheme.lower()
    host = parts.hostname.lower()
    # A host name (letters, digits, dots, dashes) or a bracketed IPv6 address: nothing a
    # header, a comma list or config.ini's quoting could read as something else.
    if not (_HOST_NAME.fullmatch(host) or (":" in host and _IPV6.fullmatch(host))):
        raise ValueError(f"{value!r} is not an origin (http[s]://host[:port], host: letters, digits, '.', '-', '_')")
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def _cors_origins(value: Any) -> tuple[str, ...]:
    origins = _strings(value)
    if "*" in origins:
        if len(origins) > 1:
            raise ValueError("'*' must be the only origin")
        return origins
    # dict.fromkeys removes duplicates and keeps the configured order.
    return tuple(dict.fromkeys(_origin(origin) for origin in origins))


def _public_url(value: Any) -> str:
    """Return "" or an origin (`https://api.example[:port]`), normalised as browsers send it."""
    text = _string(value).strip().rstrip("/")
    return _origin(text) if text else ""


def _resources(value: Any) -> tuple[str, ...]:
    names = _strings(value)
    for name in names:
        if not (_RESOURCE_NAME.fullmatch(name) or _is_class_path(name)):
            raise ValueError(
                f"{name!r} is neither a resource name ([a-z][a-z0-9-]*) nor a class path (package.module.Class)"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"{duplicates[0]!r} is listed twice")
    return names


def _is_dotted(path: str) -> bool:
    parts = path.split(".")
    return all(part.isidentifier() and not keyword.iskeyword(part) for part in parts)


def _is_class_path(path: str) -> bool:
    """Return whether `path` reads `package.module.Class` or `package.module:Class`."""
    module, colon, attribute = path.partition(":")
    return _is_dotted(module) and _is_dotted(attribute) if colon else "." in path and _is_dotted(path)


def _extra_handlers(value: Any) -> tuple[str, ...]:
    paths = _strings(value)
    for path in paths:
        if not _is_class_path(path):
            raise ValueError(f"{path!r} is not 'package.module:ClassName' or 'package.module.ClassName'")
    return paths


def _config_path(value: Any) -> str | None:
    return None if value is None else _string(value)


_CHECKS: dict[str, Callable[[Any], Any]] = {
    "web_host": _web_host,
    "web_port": _integer(1, 65535),
    "web_root": normalise_web_root,
    "web_username": _string,
    "web_password": _string,
    "api_key": _string,
    "encryption_secret": _string,
    "web_use_gzip": _boolean,
    "handle_reverse_proxy": _boolean,
    "enable_https": _boolean,
    "https_cert": _non_empty,
    "https_key": _non_empty,
    "developer": _boolean,
    "database_url": _database_url,
    "cors_origins": _cors_origins,
    "public_url": _public_url,
    "max_body_size": _integer(1, 1073741824),
    "login_max_failures": _integer(1, 1000000),
    "login_window": _integer(1, 86400 * 30),
    "token_api_key": _boolean,
    "resources": _resources,
    "extra_handlers": _extra_handlers,
    "processes": _integer(0, 256),
    "max_connections": _integer(1, 1_000_000),
    "shutdown_timeout": _number(0, 3600),
    "idle_timeout": _number(0.1, 86400),
    "body_timeout": _number(0.1, 86400),
    "config_path": _config_path,
}
