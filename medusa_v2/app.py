"""Build a Tornado application serving the API from settings (the daemon and tests)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import tornado.web

from .accesslog import log_request  # also imported from here by embedders (examples/embed_app.py)
from .context import ApiContext
from .fastpath import ApiApplication
from .resource import Resource
from .settings import Settings
from .store import Store
from .url_table import get_apiv2_handlers


def api_root(settings: Settings) -> str:
    """Return `{web_root}/api/v2`."""
    return settings.web_root + "/api/v2"


def make_app(
    settings: Settings,
    store: Store,
    *,
    clock: Callable[[], float] = time.time,
    resources: Iterable[type[Resource]] | None = None,
    extra_handlers: Iterable[type | str] = (),
    app_class: type[tornado.web.Application] = ApiApplication,
    **app_settings: Any,
) -> tornado.web.Application:
    """Return an Application with the API mounted under web_root (store already open)."""
    api = ApiContext(settings, store, clock=clock)
    rules = get_apiv2_handlers(api_root(settings), api, resources=resources, extra_handlers=extra_handlers)
    options: dict[str, Any] = {"log_function": log_request, "compress_response": settings.web_use_gzip}
    options.update(app_settings)
    app = app_class(rules, **options)
    app.settings["medusa_v2_api"] = api
    return app
