"""The /config endpoint (GET/PATCH), and picking up config.ini changes in every worker.

`GET /config` shows the keys the table (`Settings`, settings.py) declares `shown`.
`PATCH /config` changes those it declares `runtime` (CORS origins, body limit, login
throttling, shutdown timeout), writes them to config.ini atomically (temp file,
fsync, rename; comments, order and mode 0600 kept) and applies them to the running
app. Other worker processes of the same daemon notice the file changed
(`ConfigWatcher`) and apply the same keys. The view, the whitelist and their OpenAPI
schema all come from the table; a `secret` key (web_password, api_key,
encryption_secret, the database url: it may hold a password) is never shown.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from typing import Any, ClassVar

import tornado.ioloop

from .casing import to_camel
from .config import ConfigError, load_config, write_settings
from .configkey import Key
from .declaration import json_integer
from .errors import ApiError
from .handler import IF_MATCH_PARAMETER, ApiHandler, encode_json, etag_matches, etag_of
from .settings import KEYS, Settings, SettingsError

log = logging.getLogger("medusa_v2.config")

# From the table (settings.KEYS): what GET /config shows and what PATCH /config sets.
SHOWN: tuple[Key, ...] = tuple(spec for spec in KEYS if spec.shown)
RUNTIME: tuple[Key, ...] = tuple(spec for spec in KEYS if spec.runtime)


def describe(settings: Settings, version: str) -> dict[str, Any]:
    """Return the non-secret view of the settings."""
    doc: dict[str, Any] = {}
    for spec in SHOWN:
        value = getattr(settings, spec.field)
        doc[spec.json_name] = list(value) if isinstance(value, tuple) else value
    doc["authRequired"] = settings.auth_required
    doc["database"] = "postgresql" if settings.database_url.startswith("postgres") else "sqlite"
    doc["version"] = version
    doc["writable"] = sorted(spec.json_name for spec in RUNTIME)
    return doc


def _checked_value(spec: Key, value: Any) -> Any:
    if spec.type is int:
        number = json_integer(value)  # JSON's 5.0 is an integer too
        if number is None:
            raise ValueError("must be an integer")
        if spec.patch_minimum is not None and number < spec.patch_minimum:
            raise ValueError(f"must be at least {spec.patch_minimum} (set a smaller limit in config.ini)")
        value = number
    return spec.check(value)


def parse_patch(body: Mapping[str, Any], current: Settings) -> tuple[dict[str, Any], Settings]:
    """Return the accepted fields (JSON names) and the new Settings; 400 naming bad fields."""
    writable = {spec.json_name: spec for spec in RUNTIME}
    accepted: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, value in body.items():
        if name not in writable:
            continue  # PATCH rules: unknown and read-only fields are ignored
        try:
            accepted[name] = _checked_value(writable[name], value)
        except ValueError as exc:
            errors[name] = str(exc)
    if not errors:
        try:
            new = current.replace(**{writable[name].field: value for name, value in accepted.items()})
        except SettingsError as exc:
            errors[to_camel(exc.field)] = exc.problem
    if errors:
        listed = "; ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
        raise ApiError(400, f"Invalid request body: {listed}", errors=errors)
    return accepted, new


# Credentials a running daemon takes from an edited config.ini (the old values are refused at once).
CREDENTIALS = ("web_username", "web_password", "api_key", "encryption_secret")


def apply_runtime(api: Any, source: Settings) -> Settings:
    """Apply the runtime keys and credentials of `source` to the running app; return the new settings.

    An emptied api_key applies at once (no key is accepted until the next start
    generates one); an emptied encryption_secret keeps the running one, since every
    process must sign with the same.
    """
    changes = {spec.field: getattr(source, spec.field) for spec in RUNTIME}
    changes.update({name: getattr(source, name) for name in CREDENTIALS})
    if not changes["encryption_secret"]:
        del changes["encryption_secret"]
    new = api.settings.replace(**changes)
    if new != api.settings:
        api.apply_settings(new)
    return new


def _openapi() -> dict[str, Any]:
    writable = {spec.json_name: spec.json_schema(patch=True) for spec in RUNTIME}
    shown = {
        **{spec.json_name: spec.json_schema() for spec in SHOWN},
        "authRequired": {"type": "boolean"},
        "database": {"enum": ["sqlite", "postgresql"]},
        "version": {"type": "string"},
        "writable": {"type": "array", "items": {"type": "string"}},
    }
    view = {"type": "object", "properties": shown, "required": list(shown)}
    json_of = {"application/json": {"schema": view}}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    refusals = {
        "400": "A value out of range or of the wrong type, or a body that is not a JSON object",
        "412": "If-Match names another state of the settings",
        "413": "The body is over max_body_size",
        "415": "The body is not application/json",
    }
    return {
        "GET": {
            "summary": "The non-secret settings",
            "responses": {
                "200": {"description": "The settings", "content": json_of},
                "304": {"description": "Not modified: If-None-Match names the settings' ETag"},
            },
        },
        "PATCH": {
            "summary": "Change runtime settings (written to config.ini, applied at once)",
            "parameters": [IF_MATCH_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object", "properties": writable}}},
            },
            "responses": {
                "200": {
                    "description": "Exactly the accepted fields with their new values",
                    "content": {"application/json": {"schema": {"type": "object", "properties": writable}}},
                },
                **{code: {"description": text, "content": error} for code, text in refusals.items()},
            },
        },
    }


class ConfigHandler(ApiHandler):
    """GET /config: the non-secret settings; PATCH /config: change the runtime ones."""

    routes: ClassVar = {"single": ("GET", "HEAD", "PATCH")}
    openapi: ClassVar = _openapi()

    async def get(self) -> None:
        """Answer the settings view with an ETag (304 on a match)."""
        body = encode_json(describe(self.api.settings, self.api.version))
        await self.send_cacheable(body, {"ETag": etag_of(body)})

    async def head(self) -> None:
        """Answer as GET does, without the body."""
        await self.get()

    async def patch(self) -> None:
        """Validate, persist atomically, apply; answer exactly the accepted fields."""
        body = self.json_body()
        current = self.api.settings
        if_match = self.request.headers.get("If-Match")
        if if_match is not None:
            etag = etag_of(encode_json(describe(current, self.api.version)))
            if not etag_matches(if_match, etag, weak=False):
                raise ApiError(412, "Precondition failed: the settings have changed (If-Match does not match)")
        accepted, new = parse_patch(body, current)
        if accepted and current.config_path:
            changes: dict[str, dict[str, Any]] = {}
            writable = {spec.json_name: spec for spec in RUNTIME}
            for name in accepted:
                spec = writable[name]
                changes.setdefault(spec.section, {})[spec.name] = spec.config_text(getattr(new, spec.field))
            try:
                write_settings(current.config_path, changes)
            except (ConfigError, OSError, ValueError) as exc:
                log.error("PATCH /config could not write %s: %s", current.config_path, exc)
                raise ApiError(
                    503, "The settings could not be saved; nothing changed", headers={"Retry-After": "5"}
                ) from None
        if accepted:
            self.api.apply_settings(new)
        shown = describe(new, self.api.version)
        answer = {name: shown[name] for name in accepted}
        await self._send(200, encode_json(answer), {"ETag": etag_of(encode_json(shown))})


SETTLE = 0.1
"""Seconds an edit of config.ini is given to finish (an editor may write in place) before it is read."""


class ConfigWatcher:
    """Re-read config.ini when it changes; apply its runtime keys (other workers' PATCHes) and credentials.

    A file is applied only once it has been still for `settle` seconds and did not
    change while it was read, so a half-written file is never taken for the new
    settings. Removing every credential opens the API to anyone, so a running daemon
    never does it from an edit: that takes a restart (which says so loudly).
    """

    def __init__(self, api: Any, path: str, *, settle: float = SETTLE) -> None:
        self.api = api
        self.path = path
        self.settle = settle
        # Nothing seen yet: the first check reads the file, so a change made between
        # this process's start and its watcher's first look is not missed.
        self._seen: tuple[int, int, int] | None = None
        self._again: object | None = None

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def check(self) -> None:
        """Apply the file's runtime keys if it changed since the last look (cheap: one stat)."""
        self._again = None
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return
        if 0 <= time.time() - stamp[0] / 1e9 < self.settle:  # (a future mtime is no edit under way)
            self._look_again()
            return
        try:
            fresh = load_config(self.path, write_back=False, generate=False)
        except ConfigError as exc:
            if self._stamp() == stamp:
                self._seen = stamp
                log.warning("config.ini changed but is not valid; keeping the running settings: %s", exc)
            else:
                self._look_again()
            return
        if self._stamp() != stamp:  # written while we read it
            self._look_again()
            return
        self._seen = stamp
        current = self.api.settings
        if current.auth_required and not fresh.auth_required:
            log.warning(
                "config.ini no longer sets web_username or web_password; the running daemon keeps "
                "requiring them (restart it to serve without credentials)"
            )
            fresh = fresh.replace(web_username=current.web_username, web_password=current.web_password)
        apply_runtime(self.api, fresh)

    def _look_again(self) -> None:
        if self._again is None:
            self._again = tornado.ioloop.IOLoop.current().call_later(self.settle, self.check)
