"""Medusa's one line: serve our resources inside Medusa's own web server.

In `medusa/server/core.py`, right after Medusa adds its own API v2 handlers:

    from medusa_v2.medusa import mount_in_medusa; mount_in_medusa(self.app, self.options['api_v2_root'])

Medusa keeps its `/authenticate`, `/config`, its other resources, its 404 and its
web UI; ours are tried first under the same API root. The settings are Medusa's,
read live from `medusa.app`: a key or password changed in Medusa's UI applies to
our routes at the next request, and the old one is refused. Medusa owns its
config.ini: it is read for our own [Database] and [API] sections and never written.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any

import tornado.web

from . import __version__
from .config import read_own_sections
from .context import ApiContext
from .mount import mount
from .settings import Settings, key_of
from .store import store_from_url

log = logging.getLogger("medusa_v2")

DATABASE_FILE = "medusa_v2.db"  # in Medusa's data dir, unless config.ini's [Database] url says otherwise
ENDPOINTS = ("health", "openapi")  # Medusa serves /authenticate and /config itself, and its own 404

# Settings field <- the medusa.app attribute holding Medusa's live value.
LIVE: dict[str, str] = {
    "web_username": "WEB_USERNAME",
    "web_password": "WEB_PASSWORD",
    "api_key": "API_KEY",
    "encryption_secret": "ENCRYPTION_SECRET",
    "web_root": "WEB_ROOT",
    "web_use_gzip": "WEB_USE_GZIP",
    "handle_reverse_proxy": "HANDLE_REVERSE_PROXY",
    "developer": "DEVELOPER",
}


def _as_type(field: str, value: Any) -> Any:
    """Return Medusa's value as the type the key has in our table (None: empty or false)."""
    spec = key_of(field)
    if spec is None or spec.type not in (str, bool):
        raise TypeError(f"LIVE names {field}, which is not a string or boolean key")
    if spec.type is bool:
        return bool(value)
    return "" if value is None else str(value)


class MedusaSettings:
    """The settings provider reading `medusa.app` live: cheap when nothing changed."""

    def __init__(self, app: ModuleType | Any, own: dict[str, Any]) -> None:
        """Read `app` (medusa.app) for Medusa's keys; `own` holds our [Database]/[API] values."""
        self.app = app
        self.own = own
        self._seen: tuple[Any, ...] | None = None

    def values(self) -> dict[str, Any]:
        """Return Medusa's current values of the keys it owns, as Settings fields."""
        app = self.app
        values = {field: _as_type(field, getattr(app, attr, None)) for field, attr in LIVE.items()}
        values["web_root"] = values["web_root"].rstrip("/")
        return values

    def first(self) -> Settings:
        """Return the settings at mount time."""
        self._seen = self._key()
        return Settings(**self.own, **self.values())

    def __call__(self, current: Settings) -> Settings:
        """Return `current` while Medusa's values are unchanged, else the new settings."""
        key = self._key()
        if key == self._seen:
            return current
        self._seen = key
        values = self.values()
        try:
            return current.replace(**values)
        except ValueError:
            pass
        # A value Medusa accepted and we cannot use keeps its last good one; every other
        # change applies, credentials above all (a rotated key must not wait on a port).
        new = current
        for name, value in values.items():
            try:
                new = new.replace(**{name: value})
            except ValueError as exc:
                log.error(
                    "medusa_v2: Medusa's %s changed to a value we cannot use (%s); keeping the previous", name, exc
                )
        return new

    def _key(self) -> tuple[Any, ...]:
        app = self.app
        return tuple(getattr(app, attr, None) for attr in LIVE.values())


def mount_in_medusa(app: tornado.web.Application, api_v2_root: str) -> ApiContext:
    """Serve our resources under Medusa's API root, ahead of Medusa's catch-all; return the context.

    The store (an SQLite file in Medusa's data dir, or config.ini's [Database] url)
    is opened by the first request, on the loop that serves Medusa, and closed when
    the process exits.
    """
    from medusa import app as medusa_app  # type: ignore[import-not-found]  # Medusa's settings, read live

    return mount_medusa_app(app, api_v2_root, medusa_app)


def mount_medusa_app(
    app: tornado.web.Application,
    api_v2_root: str,
    medusa_app: ModuleType | Any,
    *,
    clock: Callable[[], float] | None = None,
) -> ApiContext:
    """Do `mount_in_medusa`'s work with a given `medusa.app` (tests pass a replica)."""
    config_file = getattr(medusa_app, "CONFIG_FILE", None)
    own = read_own_sections(config_file) if config_file else read_own_sections(os.devnull)
    if not own["database_url"]:
        data_dir = getattr(medusa_app, "DATA_DIR", None) or os.getcwd()
        own["database_url"] = "sqlite:///" + os.path.join(os.path.abspath(data_dir), DATABASE_FILE)
    provider = MedusaSettings(medusa_app, own)
    settings = provider.first()
    version = str(getattr(medusa_app, "APP_VERSION", None) or __version__)
    options: dict[str, Any] = {"version": version, "provider": provider, "opened": False}
    if clock is not None:
        options["clock"] = clock
    api = ApiContext(settings, store_from_url(settings.database_url), **options)
    mount(
        app,
        api_v2_root,
        api,
        endpoints=ENDPOINTS,
        catch_all=False,
        access_log=lambda: bool(getattr(medusa_app, "WEB_LOG", True)),
    )
    atexit.register(close_at_exit, api)
    _log_into_medusa()
    log.info("medusa_v2 %s mounted under %s (store: %s)", __version__, api_v2_root, type(api.store).__name__)
    return api


class _IntoMedusa(logging.Handler):
    """Hand our records to a logger Medusa writes out (it configures named loggers, not the root)."""

    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.handle(record)


def _log_into_medusa(target: str = "medusa.server.core") -> None:
    """Let Medusa's log show our lines (access log included, when Medusa's web log is on), once.

    Medusa sets levels and handlers on its own named loggers and silences the root:
    ours take the level of Medusa's web server module and go through its handlers.
    """
    ours = logging.getLogger("medusa_v2")
    if not any(isinstance(h, _IntoMedusa) for h in ours.handlers):
        medusa_log = logging.getLogger(target)
        ours.addHandler(_IntoMedusa(medusa_log))
        ours.setLevel(medusa_log.getEffectiveLevel())
        ours.propagate = False  # through Medusa's handlers only: never twice


def close_at_exit(api: ApiContext, timeout: float = 5.0) -> None:
    """Close the store on the loop it was opened on, whether that loop still runs or has stopped."""
    loop = api.loop
    if loop is None or not api.opened or loop.is_closed():
        return
    try:
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(api.close(), loop).result(timeout)
        else:
            loop.run_until_complete(asyncio.wait_for(api.close(), timeout))
    except Exception as exc:  # at exit: say it, never raise
        log.warning("medusa_v2: the store did not close cleanly at exit: %s", exc)
