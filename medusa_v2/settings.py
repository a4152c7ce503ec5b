"""Validated configuration of medusa_v2, as one immutable value.

`Settings` does no I/O: `medusa_v2.config` reads config.ini and builds one, and an
embedding application may build one directly. Every field is checked and normalised
when the object is created (and again by `replace`), so code that receives a
`Settings` never re-validates it.

`Settings` is also the table of config.ini keys: each field is one `key(...)` line
(section, type through the default, bounds, secret / shown / settable at runtime),
and config.py and config_endpoint.py derive what they need from `KEYS` (see configkey.py).
"""

from __future__ import annotations

import dataclasses
import keyword
import os
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .configkey import Key, key, keys_of

__all__ = ["KEYS", "Settings", "SettingsError", "key_of"]

_SQLITE_PREFIX = "sqlite:///"
_SQLITE_MEMORY = _SQLITE_PREFIX + ":memory:"
_POSTGRES_PREFIXES = ("postgresql://", "postgres://")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*", re.ASCII)
_IPV6 = re.compile(r"[0-9a-f:.]+", re.ASCII)
_RESOURCE_NAME = re.compile(r"[a-z][a-z0-9-]*")
# Characters that would change what a URL path means or break a routing regex.
_WEB_ROOT_FORBIDDEN = re.compile(r"[\s?#\\%]|[\x00-\x1f\x7f]")
# What an origin in cors_origins may look like, for clients (the OpenAPI schema);
# `_origin` below is the check itself.
ORIGIN_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?/?$"


class SettingsError(ValueError):
    """A field of `Settings` has an invalid value; `field` names it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# -- what a key checks beyond its type and bounds: each returns the normalised value
# -- or raises ValueError (the value has the key's type already) ------------------------


def _no_blanks(value: str) -> str:
    if re.search(r"[\s\x00-\x1f\x7f]", value):
        raise ValueError(f"{value!r} contains whitespace or control characters")
    return value


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return value


LOG_FORMATS = ("text", "json")  # [General] log_format: the daemon's log lines (accesslog.py)


def _log_format(value: str) -> str:
    if value.strip().lower() not in LOG_FORMATS:
        shown = (
            value if len(value) <= 40 and value.isprintable() else value[:40].encode("unicode_escape").decode() + "..."
        )
        raise ValueError(f"{shown!r} is not a log format (text or json)")
    return value.strip().lower()


def normalise_web_root(value: str) -> str:
    """Return `value` as "" or "/a/b": one leading slash, no trailing or repeated ones."""
    if _WEB_ROOT_FORBIDDEN.search(value):
        raise ValueError(f"{value!r} may not contain whitespace, ?, #, % or \\")
    segments = [segment for segment in value.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        raise ValueError(f"{value!r} may not contain . or .. segments")
    return "".join("/" + segment for segment in segments)


def _database_url(value: str) -> str:
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


def _cors_origins(origins: tuple[str, ...]) -> tuple[str, ...]:
    if "*" in origins:
        if len(origins) > 1:
            raise ValueError("'*' must be the only origin")
        return origins
    # dict.fromkeys removes duplicates and keeps the configured order.
    return tuple(dict.fromkeys(_origin(origin) for origin in origins))


def _public_url(value: str) -> str:
    """Return "" or an origin (`https://api.example[:port]`), normalised as browsers send it."""
    text = value.strip().rstrip("/")
    return _origin(text) if text else ""


def _resources(names: tuple[str, ...]) -> tuple[str, ...]:
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


def _extra_handlers(paths: tuple[str, ...]) -> tuple[str, ...]:
    for path in paths:
        if not _is_class_path(path):
            raise ValueError(f"{path!r} is not 'package.module:ClassName' or 'package.module.ClassName'")
    return paths


# -- the table ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Settings:
    """Hold the validated configuration; see DESIGN.md "config.ini" for each key.

    One line per config.ini key: `key(section, default, ...)` (configkey.py). Adding
    a key is one line here plus its use.
    """

    web_host: str = key("General", "0.0.0.0", normalise=_no_blanks, shown=True)
    web_port: int = key("General", 8081, bounds=(1, 65535), shown=True)
    web_root: str = key("General", "", normalise=normalise_web_root, shown=True)
    web_username: str = key("General", "")
    web_password: str = key("General", "", secret=True)
    api_key: str = key("General", "", secret=True)
    encryption_secret: str = key("General", "", secret=True)
    web_use_gzip: bool = key("General", True, shown=True)
    handle_reverse_proxy: bool = key("General", False, shown=True)
    enable_https: bool = key("General", False, shown=True)
    https_cert: str = key("General", "server.crt", normalise=_non_empty)
    https_key: str = key("General", "server.key", normalise=_non_empty)
    developer: bool = key("General", False, shown=True)
    # The daemon's log lines: "text" (LOG_FORMAT), or "json" (one object per line).
    log_format: str = key("General", "text", normalise=_log_format, shown=True)
    # The URL may hold a password: a secret, logged with the password masked.
    database_url: str = key("Database", "", name="url", normalise=_database_url, secret=True, masked=_mask_url_password)
    cors_origins: tuple[str, ...] = key("API", (), normalise=_cors_origins, runtime=True, pattern=ORIGIN_PATTERN)
    # The origin of every Location and Link ("": the request's).
    public_url: str = key("API", "", normalise=_public_url, shown=True)
    max_body_size: int = key("API", 1048576, bounds=(1, 1073741824), runtime=True, patch_minimum=1024)
    login_max_failures: int = key("API", 5, bounds=(1, 1000000), runtime=True)
    login_window: int = key("API", 300, bounds=(1, 86400 * 30), runtime=True)
    token_api_key: bool = key("API", False, shown=True)
    resources: tuple[str, ...] = key("API", ("ticket", "message"), normalise=_resources, shown=True)
    extra_handlers: tuple[str, ...] = key("API", (), normalise=_extra_handlers)
    processes: int = key("API", 1, bounds=(0, 256), shown=True)
    # Open connections per process; more get a 503 at once.
    max_connections: int = key("API", 1000, bounds=(1, 1_000_000))
    shutdown_timeout: float = key("API", 10.0, bounds=(0, 3600), runtime=True)
    idle_timeout: float = key("API", 60.0, bounds=(0.1, 86400))
    body_timeout: float = key("API", 60.0, bounds=(0.1, 86400))
    # Seconds the change feed keeps a change (GET /events?since= older than that: 410).
    events_retention: int = key("API", 7 * 86400, bounds=(3600, 366 * 86400), shown=True)
    # A listener serving GET /metrics without credentials (port 0: none).
    metrics_host: str = key("API", "127.0.0.1", normalise=_no_blanks, shown=True)
    metrics_port: int = key("API", 0, bounds=(0, 65535), shown=True)
    config_path: str | None = None  # the file these came from (not a key)

    def __post_init__(self) -> None:
        for spec in KEYS:
            try:
                value = spec.check(getattr(self, spec.field))
            except ValueError as exc:
                raise SettingsError(spec.field, str(exc)) from None
            # Frozen dataclass: normalised values are stored through object.__setattr__.
            object.__setattr__(self, spec.field, value)
        if self.config_path is not None and not isinstance(self.config_path, str):
            raise SettingsError("config_path", "must be a string")

    def __repr__(self) -> str:
        shown = []
        for spec in KEYS:
            value = getattr(self, spec.field)
            if spec.masked is not None:
                value = spec.masked(value)
            elif spec.secret:
                continue
            shown.append(f"{spec.field}={value!r}")
        shown.append(f"config_path={self.config_path!r}")
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


KEYS: tuple[Key, ...] = keys_of(Settings)


def key_of(field: str) -> Key | None:
    """Return the key of a Settings field, None for a field that is not a config.ini key."""
    return next((spec for spec in KEYS if spec.field == field), None)
