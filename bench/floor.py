"""The floor: Tornado's HTTPServer with a bare delegate answering a small JSON object.

No Application, no RequestHandler, no routing: the least Tornado's HTTP/1.1 layer
does per request on this machine. bench/run.py measures it beside the ceiling (a
bare RequestHandler, bench/ceiling.py) and reports every scenario against both.
Prints `listening on PORT` on stdout once it serves.
"""

from __future__ import annotations

import tornado.httputil
from ceiling import BODY, run

HEADERS = (("Content-Type", "application/json; charset=UTF-8"), ("Content-Length", str(len(BODY))))


class Answer(tornado.httputil.HTTPMessageDelegate):
    """Answer one request with BODY once it has been read."""

    def __init__(self, connection: tornado.httputil.HTTPConnection) -> None:
        self.connection = connection

    def finish(self) -> None:
        start = tornado.httputil.ResponseStartLine("HTTP/1.1", 200, "OK")
        self.connection.write_headers(start, tornado.httputil.HTTPHeaders(dict(HEADERS)), BODY)
        self.connection.finish()


class Floor(tornado.httputil.HTTPServerConnectionDelegate):
    def start_request(
        self, server_conn: object, request_conn: tornado.httputil.HTTPConnection
    ) -> tornado.httputil.HTTPMessageDelegate:
        return Answer(request_conn)


if __name__ == "__main__":
    run(Floor())
