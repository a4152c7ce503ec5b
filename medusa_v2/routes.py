"""The URL table: built in one place from resource declarations and config.ini."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable

import tornado.web

from .context import ApiContext
from .endpoints import AuthenticateHandler, HealthHandler, NotFoundHandler, OpenAPIHandler
from .handler import ApiHandler, encode_json, etag_of
from .openapi import OPENAPI_PATH, build_openapi
from .resource import Resource, ResourceHandler
from .runtime import ConfigHandler


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


def get_apiv2_handlers(
    base: str,
    api: ApiContext,
    *,
    resources: Iterable[type[Resource]] | None = None,
    extra_handlers: Iterable[type | str] = (),
) -> list[tornado.web.URLSpec]:
    """Return the API's URL rules under `base` (e.g. "/medusa/api/v2"), catch-all last.

    `resources` defaults to the built-in resources named by `[API] resources`;
    `extra_handlers` (classes or dotted paths, added to those of `[API]
    extra_handlers`) are Resource subclasses, or ApiHandler subclasses with a `path`.
    Raises ValueError at start-up for anything that cannot be mounted.
    """
    base = base.rstrip("/")
    prefix = re.escape(base)
    if resources is None:
        known = builtin_resources()
        unknown = [name for name in api.settings.resources if name not in known]
        if unknown:
            raise ValueError(f"[API] resources: unknown resource {unknown[0]!r} (known: {', '.join(sorted(known))})")
        resources = [known[name] for name in api.settings.resources]
    mounted: list[type[Resource]] = list(resources)
    plain: list[type[ApiHandler]] = []
    for extra in [*api.settings.extra_handlers, *extra_handlers]:
        cls = load_class(extra) if isinstance(extra, str) else extra
        if issubclass(cls, Resource):
            mounted.append(cls)
        elif issubclass(cls, ApiHandler) and isinstance(getattr(cls, "path", None), str):
            plain.append(cls)
        else:
            raise ValueError(f"{cls.__qualname__}: extra handlers must be Resource or ApiHandler (with a path) classes")

    rules: list[tuple[int, tornado.web.URLSpec]] = []
    fixed: list[tuple[str, type[ApiHandler]]] = [
        ("/authenticate", AuthenticateHandler),
        ("/health", HealthHandler),
        (OPENAPI_PATH, OpenAPIHandler),
        ("/config", ConfigHandler),
    ]
    fixed += [(cls.path, cls) for cls in plain]  # type: ignore[attr-defined]
    taken = [path for path, _ in fixed] + ["/" + r.name for r in mounted if r.parent is None]
    for path in taken:
        if taken.count(path) > 1:
            raise ValueError(f"two handlers claim the path {path!r} under {base or '/'}")
    for res in mounted:
        if res.parent is not None and res.parent not in mounted:
            raise ValueError(f"resource {res.name!r} needs its parent {res.parent.name!r} mounted too")
        instance = res(api)
        path = res.path_pattern()
        depth = path.count("/")
        item = f"{prefix}{path}/(?P<{res.id_key()}>[^/]+)/?"
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
    document = encode_json(build_openapi(base, mounted, api.settings, handlers=fixed))
    for path, handler in fixed:
        kwargs: dict[str, object] = {"api": api, "kind": "single"}
        pattern = path
        if handler is OpenAPIHandler:
            kwargs.update(document=document, etag=etag_of(document))
            pattern = re.escape(path)
        rules.append((path.count("/"), tornado.web.url(f"{prefix}{pattern}/?", handler, kwargs)))
    # Most specific first; the JSON 404 for anything else under the API root last.
    rules.sort(key=lambda rule: -rule[0])
    table = [rule for _, rule in rules]
    table.append(tornado.web.url(f"{prefix}(?:/.*)?", NotFoundHandler, {"api": api, "kind": "single"}))
    return table
