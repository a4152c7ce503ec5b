"""The API description (OpenAPI 3.1), generated from what drives the handlers.

Every resource path, verb, parameter and body schema comes from the same sources
the handlers use: `Resource.verbs` (from `resource.ROUTES`), the resource's
`Declaration` (fields, bounds, choices, read-only, sort/filter/search whitelists),
the listing limits in `listing`, and the `routes`/`public` tables of the fixed
handlers. Nothing is listed per resource, so the document cannot drift from the
code: add a `Field(...)` and it appears here, drop a method and its operation goes.

`build_openapi()` returns the document as a dict; the URL table builds it once and
`OpenAPIHandler` serves it at `{web_root}/api/v2/openapi.json`.
"""

from __future__ import annotations

from .document import OPENAPI_PATH, build_openapi
from .schemas import field_schema

__all__ = ["OPENAPI_PATH", "build_openapi", "field_schema"]
