"""A ticket's notes: an embedder's nested stored resource, declared and nothing else.

Mount it with `[API] resources = ticket, message, mypkg.notes.NoteResource`: the
store derives its table, constraints, indexes, search index, cascade and migrations
from NOTE, and the API, OpenAPI document, export and import follow.
"""

from __future__ import annotations

from medusa_v2.declaration import Declaration, Field
from medusa_v2.resources.stored import StoredResource
from medusa_v2.resources.ticket import TICKET, TicketResource

NOTE = Declaration(
    "note",
    (
        Field("id", int, writable=False, min=1, sortable=True),
        Field("ticket_id", int, writable=False, min=1),
        Field("kind", str, default="comment", choices=("comment", "todo", "done"), sortable=True, filter="many"),
        Field("rank", int, default=0, min=0, max=1000, sortable=True, filter="one"),
        Field("text", str, required=True, min=1, max=5000, searchable=True),
        Field("created_at", str, writable=False, sortable=True),
        Field("updated_at", str, writable=False, sortable=True),
    ),
    parent=TICKET,
    parent_field="ticket_id",
)


class NoteResource(StoredResource):
    """Notes under a ticket: every verb, declared by NOTE."""

    name = "note"
    parent = TicketResource
    declaration = NOTE
