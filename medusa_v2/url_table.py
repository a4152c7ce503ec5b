"""The URL table: the Tornado rules of the API, built in one place from resource declarations and config.ini.

Not to be confused with `ApiHandler.routes` (a handler's route kind -> verbs) or
`resource.ROUTES` (route kind -> verb -> resource method): this module turns those
classes into URL rules (`get_apiv2_handlers`).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

import tornado.web

from .codec import encode_json, etag_of
from .config_endpoint import ConfigHandler
from .context import ApiContext
from .declaration import Declaration
from .endpoints import AuthenticateHandler, HealthHandler, NotFoundHandler, OpenAPIHandler
from .events import EventsHandler
from .feed import ChangeFeed
from .handler import ApiHandler
from .metrics import UNMATCHED_ROUTE
from .metrics_endpoint import MetricsHandler
from .openapi import OPENAPI_PATH, build_openapi
from .resource import Resource, ResourceHandler
from .settings import Settings


def builtin_resources() -> dict[str, type[Resource]]:
    """Return the resources this package ships, by name."""
    from .resources import BUILTIN

    return dict(BUILTIN)


def load_class(dotted: str) -> type:
    """Import `package.module:Class` or `package.module.Class` (ValueError naming it)."""
    module_name, sep, attr = dotted.partition(":")
    if not sep:
        module_name, _, attr = dotted.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ValueError(f"cannot load handler class {dotted!r}: {exc}") from None
    if not isinstance(obj, type):
        raise ValueError(f"{dotted!r} is not a class")
    return obj


def route_template(path: str) -> str:
    """Return a route's template, as the metrics label it: `(?P<ticket_id>[^/]+)` becomes `{ticket_id}`."""
    return re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", path) or "/"


ENDPOINTS: dict[str, tuple[str, type[ApiHandler]]] = {
    "authenticate": ("/authenticate", AuthenticateHandler),
    "health": ("/health", HealthHandler),
    "openapi": (OPENAPI_PATH, OpenAPIHandler),
    "config": ("/config", ConfigHandler),
    "events": ("/events", EventsHandler),
    "metrics": ("/metrics", MetricsHandler),
}
"""The built-in endpoints that are not resources, by the name a host chooses them with.

`events` (the change feed) is mounted only with at least one stored resource.
"""


def mounted_resources(
    settings: Settings, resources: Iterable[type[Resource]] | None = None, extra_handlers: Iterable[type | str] = ()
) -> tuple[list[type[Resource]], list[type[ApiHandler]]]:
    """Return the Resource classes to mount and the plain handlers (ValueError naming a bad one).

    `resources` defaults to `[API] resources`: built-in names or class paths. Extra
    handlers (`[API] extra_handlers`, then the argument) are Resource subclasses, or
    ApiHandler subclasses with a `path`.
    """
    if resources is None:
        known = builtin_resources()
        chosen: list[type[Resource]] = []
        for name in settings.resources:
            if name in known:
                chosen.append(known[name])
            elif "." in name or ":" in name:
                cls = load_class(name)
                if not issubclass(cls, Resource):
                    raise ValueError(f"[API] resources: {name!r} is not a Resource class")
                chosen.append(cls)
            else:
                raise ValueError(f"[API] resources: unknown resource {name!r} (known: {', '.join(sorted(known))})")
        resources = chosen
    mounted: list[type[Resource]] = list(resources)
    plain: list[type[ApiHandler]] = []
    for extra in [*settings.extra_handlers, *extra_handlers]:
        cls = load_class(extra) if isinstance(extra, str) else extra
        if issubclass(cls, Resource):
            mounted.append(cls)
        elif issubclass(cls, ApiHandler) and isinstance(getattr(cls, "path", None), str):
            plain.append(cls)
        else:
            raise ValueError(f"{cls.__qualname__}: extra handlers must be Resource or ApiHandler (with a path) classes")
    for res in mounted:
        if res.parent is not None and res.parent not in mounted:
            raise ValueError(f"resource {res.name!r} needs its parent {res.parent.name!r} mounted too")
    return mounted, plain


def stored_declarations(resources: Iterable[type[Resource]]) -> tuple[Declaration, ...]:
    """Return the declarations the store keeps tables for (stored resources, parents first)."""
    return tuple(res.declaration for res in resources if res.stored and res.declaration is not None)


def declarations_for(
    settings: Settings, resources: Iterable[type[Resource]] | None = None, extra_handlers: Iterable[type | str] = ()
) -> tuple[Declaration, ...]:
    """Return what `open_store` needs for the resources these settings (and arguments) mount."""
    return stored_declarations(mounted_resources(settings, resources, extra_handlers)[0])


def get_apiv2_handlers(
    base: str,
    api: ApiContext,
    *,
    resources: Iterable[type[Resource]] | None = None,
    extra_handlers: Iterable[type | str] = (),
    endpoints: Iterable[str] = tuple(ENDPOINTS),
    catch_all: bool = True,
) -> list[tornado.web.URLSpec]:
    """Return the API's URL rules under `base` (e.g. "/medusa/api/v2"), most specific first.

    `resources` and `extra_handlers`: see `mounted_resources`. `endpoints` names the
    built-in endpoints to mount (all of ENDPOINTS by default; a host that serves its
    own /authenticate or /config leaves them out), `catch_all` adds the JSON 404 for
    any other path under `base`, last. The OpenAPI document describes exactly what
    is mounted. Sets `api.declarations` (what the store derives its schema from).
    Raises ValueError at start-up for anything that cannot be mounted.
    """
    base = base.rstrip("/")
    prefix = re.escape(base)
    mounted, plain = mounted_resources(api.settings, resources, extra_handlers)
    chosen = list(endpoints)
    unknown = [name for name in chosen if name not in ENDPOINTS]
    if unknown:
        raise ValueError(f"unknown endpoint {unknown[0]!r} (known: {', '.join(ENDPOINTS)})")
    api.declarations = stored_declarations(mounted)
    if not api.declarations and "events" in chosen:
        chosen.remove("events")  # no stored resource, no change to follow
    if "events" in chosen and api.feed is None:
        api.feed = ChangeFeed(api.store, api.declarations, log=api.log)

    rules: list[tuple[int, tornado.web.URLSpec]] = []
    fixed: list[tuple[str, type[ApiHandler]]] = [ENDPOINTS[name] for name in ENDPOINTS if name in chosen]
    fixed += [(cls.path, cls) for cls in plain]  # type: ignore[attr-defined]
    taken = [path for path, _ in fixed] + ["/" + r.name for r in mounted if r.parent is None]
    for path in taken:
        if taken.count(path) > 1:
            raise ValueError(f"two handlers claim the path {path!r} under {base or '/'}")
    for res in mounted:
        instance = res(api)
        path = res.path_pattern()
        depth = path.count("/")
        item = f"{prefix}{path}/(?P<{res.id_key()}>[^/]+)/?"
        api.route_templates[(instance, "collection")] = route_template(base + path)
        api.route_templates[(instance, "item")] = route_template(f"{base}{path}/{{{res.id_key()}}}")
        rules.append(
            (depth + 1, tornado.web.url(item, ResourceHandler, {"api": api, "kind": "item", "resource": instance}))
        )
        rules.append(
            (
                depth,
                tornado.web.url(
                    f"{prefix}{path}/?", ResourceHandler, {"api": api, "kind": "collection", "resource": instance}
                ),
            )
        )
    # The API description, built once from the same resources and handlers as the rules.
    document = encode_json(build_openapi(base, mounted, api.settings, handlers=fixed, version=api.version))
    for path, handler in fixed:
        kwargs: dict[str, object] = {"api": api, "kind": "single"}
        pattern = path
        if handler is OpenAPIHandler:
            kwargs.update(document=document, etag=etag_of(document))
            pattern = re.escape(path)
        rules.append((path.count("/"), tornado.web.url(f"{prefix}{pattern}/?", handler, kwargs)))
        api.route_templates[handler] = route_template(base + path)
    # Most specific first; the JSON 404 for anything else under the API root last.
    rules.sort(key=lambda rule: -rule[0])
    table = [rule for _, rule in rules]
    if catch_all:
        api.route_templates[NotFoundHandler] = UNMATCHED_ROUTE
        table.append(tornado.web.url(f"{prefix}(?:/.*)?", NotFoundHandler, {"api": api, "kind": "single"}))
    return table
