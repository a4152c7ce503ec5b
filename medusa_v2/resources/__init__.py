"""The resources this package ships (ticket, nested message)."""

from __future__ import annotations

from ..resource import Resource
from .message import MessageResource
from .ticket import TicketResource

BUILTIN: dict[str, type[Resource]] = {"ticket": TicketResource, "message": MessageResource}
