"""The message resource, nested: `/ticket/{id}/message`, `/ticket/{id}/message/{id}`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..declaration import Declaration, Field
from ..errors import ApiError
from .stored import StoredResource
from .ticket import TICKET, TicketResource

MESSAGE = Declaration(
    "message",
    (
        Field("id", int, writable=False, min=1, sortable=True),
        Field("ticket_id", int, writable=False, min=1),
        Field("author", str, required=True, min=1, max=100, sortable=True, filter="one"),
        Field("body", str, required=True, min=1, max=10000, searchable=True),
        Field("created_at", str, writable=False, sortable=True),
        Field("updated_at", str, writable=False, sortable=True),
    ),
    parent=TICKET,
    parent_field="ticket_id",
)


class MessageResource(StoredResource):
    """A ticket's messages: reachable only under their own ticket."""

    name = "message"
    parent = TicketResource
    declaration = MESSAGE

    def check_parent(self, parent_row: Mapping[str, Any]) -> None:
        """Refuse a message on a closed ticket (409)."""
        if parent_row["state"] == "closed":
            raise ApiError(409, f"Ticket {parent_row['id']} is closed: it takes no new messages")
