"""The one exception type a resource raises to answer with an HTTP error.

It is a tornado HTTPError, so tornado knows its status too; `answer.error_answer` renders it.
"""

from __future__ import annotations

from collections.abc import Mapping

from tornado.web import HTTPError


class ApiError(HTTPError):
    """Answer the request with `status` and `{"error": message}` (plus `errors`).

    Raised anywhere below a handler; only the base handler renders it.
    `headers` are set on the error response (Allow, WWW-Authenticate, Retry-After).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        # No log_message: client mistakes are not server events worth a log line.
        super().__init__(status)
        self.status = status
        self.message = message
        self.errors = dict(errors) if errors else None
        self.headers = dict(headers) if headers else {}

    def body(self) -> dict[str, object]:
        """Return the JSON error document."""
        doc: dict[str, object] = {"error": self.message}
        if self.errors:
            doc["errors"] = self.errors
        return doc
