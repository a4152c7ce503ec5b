"""Medusa's web server set-up (replica of medusa/server/core.py's AppWebServer.__init__).

`AppWebServer.MOUNT` is where the one line of docs/embedding.md goes, right after
Medusa's own `self.app.add_handlers('.*$', get_apiv2_handlers(...))`: the tests set
it to that line, exactly as a Medusa developer writes it.
"""

import logging
from posixpath import join

from tornado.web import Application, RedirectHandler, RequestHandler, StaticFileHandler

from medusa import app
from medusa.server.api.v2.auth import AuthHandler
from medusa.server.api.v2.base import BaseRequestHandler, NotFoundHandler
from medusa.server.api.v2.config import ConfigHandler
from medusa.server.api.v2.series import SeriesHandler

log = logging.getLogger("medusa.server.core")


def clean_url_path(*args, **kwargs):
    end_with_slash = kwargs.pop("end_with_slash", False)
    build_path = ""
    for arg in args:
        build_path = join(build_path.strip("/"), arg.strip("/"))
    build_path = "/" + build_path if build_path else ""
    if end_with_slash:
        build_path += "/"
    return build_path


def get_apiv2_handlers(base):
    return [
        SeriesHandler.create_app_handler(base),
        ConfigHandler.create_app_handler(base),
        AuthHandler.create_app_handler(base),
        # Always keep this last!
        NotFoundHandler.create_app_handler(base),
    ]


class HomeHandler(RequestHandler):
    """The web UI (Medusa's tornroutes pages)."""

    def get(self, *args):
        self.finish("<html><body>Medusa home</body></html>")


class WebSocketUIHandler(RequestHandler):
    def get(self, *args):
        self.set_status(400)
        self.finish("Can \"Upgrade\" only to \"WebSocket\".")


class AppWebServer:
    MOUNT = None  # the line under test, as source text

    def __init__(self, options=None):
        self.options = options or {}
        self.options.setdefault("web_root", "/")
        self.log_lines = []
        if self.options["web_root"]:
            app.WEB_ROOT = self.options["web_root"] = clean_url_path(self.options["web_root"])
        app.WEB_ROOT = self.options["theme_path"] = clean_url_path(app.WEB_ROOT)
        self.options["api_root"] = r"{root}/api/(?:v1/)?{key}".format(root=app.WEB_ROOT, key=app.API_KEY)
        self.options["api_v2_root"] = r"{root}/api/v2".format(root=app.WEB_ROOT)
        self.options["web_socket"] = r"{root}/ws".format(root=app.WEB_ROOT)

        self.app = Application(
            [],
            debug=True,
            autoreload=False,
            gzip=app.WEB_USE_GZIP,
            xheaders=app.HANDLE_REVERSE_PROXY,
            cookie_secret=app.WEB_COOKIE_SECRET,
            login_url=r"{root}/login/".format(root=self.options["theme_path"]),
            log_function=self.log_request,
        )

        self.app.add_handlers(".*$", get_apiv2_handlers(self.options["api_v2_root"]))
        if self.MOUNT:
            exec(self.MOUNT, {"self": self})

        self.app.add_handlers(".*$", [
            (r"{base}/ui(/?.*)".format(base=self.options["web_socket"]), WebSocketUIHandler)
        ])
        self.app.add_handlers(".*$", [
            (r"{base}/favicon\.ico()".format(base=self.options["theme_path"]), StaticFileHandler,
             {"path": "/nonexistent/favicon.ico"}),
        ])
        # Used for hot-swapping themes: the 2nd rule from the end.
        self.app.static_file_handlers = self.app.default_router.rules[-2]
        self.app.add_handlers(".*$", [
            (r"{base}/api/builder".format(base=self.options["web_root"]),
             RedirectHandler, {"url": "{base}/apibuilder/".format(base=self.options["web_root"])}),
            (r"{base}/home(/?.*)".format(base=self.options["theme_path"]), HomeHandler),
        ])

    def log_request(self, handler):
        """Medusa's log_request: 4xx of handlers other than its own APIv2 ones are WARNINGs."""
        if not app.WEB_LOG:
            return
        level = None
        if handler.get_status() < 400:
            level = logging.INFO
        elif handler.get_status() < 500:
            level = logging.INFO if isinstance(handler, BaseRequestHandler) else logging.WARNING
        elif not isinstance(handler, BaseRequestHandler):
            level = logging.ERROR
        if level is None:
            return
        self.log_lines.append((level, handler.get_status(), handler.request.uri))
        log.log(level, "%d %s %.2fms", handler.get_status(), handler._request_summary(),
                1000.0 * handler.request.request_time())
