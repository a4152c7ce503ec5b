"""The error validation raises: plain Python, so declarations, list queries and the store need no Tornado.

The HTTP layer (`answer.error_answer`) answers it as it answers `ApiError(400, ...)`:
status 400, body `{"error": message}` plus `errors` when fields are named.
"""

from __future__ import annotations

from collections.abc import Mapping


class InvalidRequest(Exception):
    """A client's request (body, query, identifier) fails validation: answered 400."""

    status = 400

    def __init__(self, message: str, *, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errors = dict(errors) if errors else None

    def body(self) -> dict[str, object]:
        """Return the JSON error document."""
        doc: dict[str, object] = {"error": self.message}
        if self.errors:
            doc["errors"] = self.errors
        return doc
