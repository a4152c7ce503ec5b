"""The ceiling: a bare Tornado handler answering a small JSON object (no auth, no store).

Run by bench/run.py beside the daemon, in the same conditions (one process, no gzip,
Tornado's defaults), so its req/s is what this stack can do at best on this machine.
Prints `listening on PORT` on stdout once it serves.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web

BODY = b'{"id":1,"title":"Printer on fire","state":"open","priority":3}'


class Ceiling(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(BODY)


async def listen(callback: Any) -> None:
    """Serve `callback` (an Application or a connection delegate) on a free port; print it; run forever."""
    sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server = tornado.httpserver.HTTPServer(callback)
    server.add_sockets(sockets)
    print(f"listening on {sockets[0].getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


def run(callback: Any) -> None:
    try:
        asyncio.run(listen(callback))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    run(tornado.web.Application([(r"/.*", Ceiling)]))  # defaults: what a bare app costs
