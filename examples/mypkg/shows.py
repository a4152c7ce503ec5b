"""A Medusa-like resource identified by slugs (`tvdb83462`), with nested episodes (`s01e01`)."""

from __future__ import annotations

from medusa_v2.declaration import Declaration, Field
from medusa_v2.resources.stored import StoredResource

SHOW = Declaration(
    "show",
    (
        Field("id", str, writable=False, settable_on_create=True, pattern=r"[a-z]+[0-9]+", max=40, sortable=True),
        Field("title", str, required=True, min=1, max=200, sortable=True, searchable=True),
        Field("status", str, default="continuing", choices=("continuing", "ended"), sortable=True, filter="one"),
        Field("created_at", str, writable=False, sortable=True),
        Field("updated_at", str, writable=False, sortable=True),
    ),
)

EPISODE = Declaration(
    "episode",
    (
        Field("id", str, writable=False, settable_on_create=True, pattern=r"s[0-9]{2}e[0-9]{2,3}", sortable=True),
        Field("show_id", str, writable=False),
        Field("name", str, default="", max=200, sortable=True, searchable=True),
        Field("watched", int, default=0, min=0, max=1, filter="one"),
        Field("created_at", str, writable=False, sortable=True),
        Field("updated_at", str, writable=False, sortable=True),
    ),
    parent=SHOW,
    parent_field="show_id",
)


class ShowResource(StoredResource):
    """Shows, identified by their indexer slug."""

    name = "show"
    declaration = SHOW


class EpisodeResource(StoredResource):
    """A show's episodes, identified by `sNNeNN` within their show."""

    name = "episode"
    parent = ShowResource
    declaration = EPISODE
