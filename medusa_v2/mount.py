"""Mount the API into a host's Tornado Application, ahead of the host's own rules.

A host such as Medusa already has an API v2 of its own, ending in a catch-all that
answers every other path under its API root. Rules added after it are never
reached, and rules of ours that claim its paths (`/authenticate`, `/config`, a
catch-all) would take over its API. `mount` puts only what the host chooses
first in the host's URL table: a path our rules do not match falls through to
the host's, exactly as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import tornado.web

from .accesslog import log_request
from .context import ApiContext
from .handler import RequestView
from .resource import Resource
from .url_table import ENDPOINTS, get_apiv2_handlers

tornado_access = logging.getLogger("tornado.access")


def mount(
    app: tornado.web.Application,
    base: str,
    api: ApiContext,
    *,
    resources: Iterable[type[Resource]] | None = None,
    extra_handlers: Iterable[type | str] = (),
    endpoints: Iterable[str] = tuple(ENDPOINTS),
    catch_all: bool = True,
    first: bool = True,
    access_log: bool | Callable[[], bool] = True,
) -> list[tornado.web.URLSpec]:
    """Add the API's rules under `base` to `app`; return them.

    `resources`, `extra_handlers`, `endpoints` and `catch_all`: see
    `get_apiv2_handlers`. `first`: tried before every rule the host added so far
    (otherwise after them, as `app.add_handlers` does). `access_log`: our requests
    are logged by medusa_v2's access log (api_key redacted, 4xx as INFO) instead of
    the host's `log_function`; a callable says, per request, whether to log at all
    (a host's "web log" switch).
    """
    rules = get_apiv2_handlers(
        base, api, resources=resources, extra_handlers=extra_handlers, endpoints=endpoints, catch_all=catch_all
    )
    app.add_handlers(r".*$", rules)
    if first:
        # add_handlers inserts a host rule just before the last one (the wildcard
        # router): after every earlier add_handlers. Moved to the front, ours are tried
        # first; the host's rules still answer whatever ours do not match.
        host_rules = app.default_router.rules
        host_rules.insert(0, host_rules.pop(-2))
        if app.default_host is not None:  # then add_handlers also appended to the wildcard router
            wildcard = app.wildcard_router.rules
            wildcard.insert(0, wildcard.pop())
    if access_log is not False:
        app.settings["log_function"] = _dispatch_log(app.settings.get("log_function"), access_log)
    return rules


def _dispatch_log(
    host: Callable[[tornado.web.RequestHandler], None] | None, enabled: bool | Callable[[], bool]
) -> Callable[[tornado.web.RequestHandler], None]:
    """Return a log_function: ours for our handlers, the host's (or tornado's) for the rest."""

    def log(handler: tornado.web.RequestHandler) -> None:
        if isinstance(handler, RequestView):
            if enabled is True or (callable(enabled) and enabled()):
                log_request(handler)
        elif host is not None:
            host(handler)
        else:
            _tornado_log(handler)

    return log


def _tornado_log(handler: tornado.web.RequestHandler) -> None:
    """Log as tornado.web.Application.log_request does without a log_function."""
    status = handler.get_status()
    method = tornado_access.info if status < 400 else tornado_access.warning if status < 500 else tornado_access.error
    method("%d %s %.2fms", status, handler._request_summary(), 1000.0 * handler.request.request_time())
