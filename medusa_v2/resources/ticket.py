"""The ticket resource: `/ticket`, `/ticket/{id}`."""

from __future__ import annotations

from ..declaration import Declaration, Field
from .stored import StoredResource

TICKET = Declaration(
    "ticket",
    (
        Field("id", int, writable=False, settable_on_create=True, min=1, sortable=True),
        Field("title", str, required=True, min=1, max=200, sortable=True, searchable=True),
        Field("description", str, default="", max=10000, searchable=True),
        Field("state", str, default="open", choices=("open", "pending", "closed"), sortable=True, filter="many"),
        Field("priority", int, default=3, min=1, max=5, sortable=True, filter="many"),
        Field("assignee", str, default=None, nullable=True, min=1, max=100, sortable=True, filter="one"),
        Field("created_at", str, writable=False, sortable=True),
        Field("updated_at", str, writable=False, sortable=True),
    ),
)


class TicketResource(StoredResource):
    """Tickets: every verb, declared by TICKET."""

    name = "ticket"
    declaration = TICKET
