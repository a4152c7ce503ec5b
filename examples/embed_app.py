#!/usr/bin/env python3
"""Embed medusa_v2 in a Medusa-style Tornado application.

The application has pages of its own (a home page under its web root, an HTML 404)
and mounts the API under `{web_root}/api/v2` with one call, the way Medusa's own web
server adds its API v2 routes (mount() puts them ahead of the application's own):

    mount(app, web_root + "/api/v2", api)

Run it with a config.ini (a Medusa config.ini works as is):

    python examples/embed_app.py --config conf/config.ini --port 8081

The config path comes from --config, else $MEDUSA_V2_CONFIG, else conf/config.ini;
the port from --port, else [General] web_port. SIGTERM or Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import logging
import re
import signal
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web

import medusa_v2
from medusa_v2.app import log_request
from medusa_v2.config import ConfigError, default_config_path, load_config
from medusa_v2.context import ApiContext
from medusa_v2.mount import mount
from medusa_v2.settings import Settings
from medusa_v2.store import StoreUnavailable, store_from_url

log = logging.getLogger("embed_app")

PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title></head>
<body>
<h1>{title}</h1>
{body}
</body>
</html>
"""


class PageHandler(tornado.web.RequestHandler):
    """The application's own pages: HTML, and an HTML error page of its own."""

    def initialize(self, web_root: str) -> None:
        """Receive the web root from the URL table (no module-level state)."""
        self.web_root = web_root

    def set_default_headers(self) -> None:
        """Mark every page (and every error page) as the application's own."""
        self.set_header("X-Embed-App", "1")

    def render_page(self, title: str, body: str) -> None:
        """Finish with an HTML page."""
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.finish(PAGE.format(title=html.escape(title), body=body))

    def write_error(self, status_code: int, **kwargs: object) -> None:
        """Answer errors with the application's HTML page, not the API's JSON."""
        self.render_page(f"{status_code} {self._reason}", "<p>This page is not part of the application.</p>")


class RootHandler(PageHandler):
    """`/` and `{web_root}/`: send the browser to the home page."""

    def get(self) -> None:
        """Redirect to `{web_root}/home/`."""
        self.redirect(self.web_root + "/home/")


class HomeHandler(PageHandler):
    """`{web_root}/home/`: the application's home page, linking to its API."""

    def get(self) -> None:
        """Show the home page."""
        api = self.web_root + "/api/v2"
        self.render_page(
            "Medusa home",
            f"<p>medusa_v2 {html.escape(medusa_v2.__version__)} is mounted at "
            f'<a href="{html.escape(api)}/health">{html.escape(api)}</a>.</p>',
        )


class NotFoundPage(PageHandler):
    """The application's own 404 for anything outside the API (default_handler_class)."""

    def prepare(self) -> None:
        """Answer 404 for every method."""
        raise tornado.web.HTTPError(404)


def make_embedding_app(settings: Settings, api: ApiContext) -> tornado.web.Application:
    """Return the application: its own pages, plus the API under `{web_root}/api/v2`."""
    web_root = settings.web_root  # "" or "/medusa": normalised by Settings
    own = {"web_root": web_root}
    root = re.escape(web_root)  # a web root is a literal prefix, not a pattern
    app = tornado.web.Application(
        [
            (r"/", RootHandler, own),
            (rf"{root}/?", RootHandler, own),  # web_root "" makes this a second "/"
            (rf"{root}/home/?", HomeHandler, own),
        ],
        default_handler_class=NotFoundPage,
        default_handler_args=own,
        compress_response=settings.web_use_gzip,
        log_function=log_request,  # one access-log line per request, api_key redacted
    )
    # The API's context reaches every API handler through the URL table's kwargs, so
    # the application needs no globals for it. mount() puts the API's rules before the
    # application's own; its JSON 404 catch-all only covers paths under {web_root}/api/v2.
    mount(app, web_root + "/api/v2", api)
    return app


async def serve(settings: Settings, host: str, port: int) -> int:
    """Serve until SIGTERM/SIGINT, then stop accepting, close the store and return 0."""
    try:
        api = ApiContext(settings, store_from_url(settings.database_url), opened=False)
        app = make_embedding_app(settings, api)
    except ValueError as exc:  # a url, resource or extra handler that cannot be used
        log.error("%s", exc)
        return 2
    try:
        await api.open()  # the tables of every mounted resource, created or migrated
    except StoreUnavailable as exc:
        log.error("cannot open the store: %s", exc)
        return 1
    server = tornado.httpserver.HTTPServer(app, xheaders=settings.handle_reverse_proxy)
    sockets = tornado.netutil.bind_sockets(port, host or None)
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()  # the real port when --port 0
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    log.info(
        "embed_app serving http://%s:%s%s/home/ (API at %s/api/v2)",
        bound[0],
        bound[1],
        settings.web_root,
        settings.web_root,
    )
    await stopping.wait()
    log.info("stopping")
    server.stop()
    await server.close_all_connections()
    await api.close()
    log.info("stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, load config.ini and serve; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default=None, help="config.ini (default: $MEDUSA_V2_CONFIG, else conf/config.ini)")
    parser.add_argument("--host", default=None, help="address to listen on (default: [General] web_host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: [General] web_port; 0: any free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_config(args.config or default_config_path())
    except ConfigError as exc:
        print(f"embed_app: {exc}", file=sys.stderr)
        return 2
    host = args.host if args.host is not None else settings.web_host
    port = args.port if args.port is not None else settings.web_port
    return asyncio.run(serve(settings, host, port))


if __name__ == "__main__":
    raise SystemExit(main())
