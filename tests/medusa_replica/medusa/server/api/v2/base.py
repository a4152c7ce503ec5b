"""Medusa's API v2 base handler (replica of medusa/server/api/v2/base.py, synchronous)."""

import base64
import json
import logging

import jwt
from tornado.web import HTTPError, RequestHandler

from medusa import app

log = logging.getLogger("medusa.server.api.v2.base")


class BaseRequestHandler(RequestHandler):
    """A base class used for shared RequestHandler methods."""

    DEFAULT_ALLOWED_METHODS = ("OPTIONS",)
    name = None
    identifier = None
    path_param = None
    allowed_methods = None
    parent_handler = None

    def prepare(self):
        # Medusa wraps every verb in make_async, which checks authentication first.
        content = self._check_authentication()
        if content is not None:
            self.finish(content)

    def _check_authentication(self):
        """Check if JWT or API key is provided and valid."""
        if self.request.method == "OPTIONS":
            return
        api_key = self.get_argument("api_key", default=None) or self.request.headers.get("X-Api-Key")
        if api_key and api_key == app.API_KEY:
            return
        authorization = self.request.headers.get("Authorization")
        x_auth = self.request.headers.get("x-auth")
        if not authorization and not x_auth:
            return self._unauthorized("No authorization token.")
        if x_auth and x_auth.startswith("Bearer"):
            try:
                token = x_auth.replace("Bearer ", "")
                jwt.decode(token, app.ENCRYPTION_SECRET, algorithms=["HS256"])
            except jwt.ExpiredSignatureError:
                return self._unauthorized("Token has expired.")
            except jwt.DecodeError:
                return self._unauthorized("Invalid token.")
        elif authorization.startswith("Basic"):
            auth_decoded = base64.b64decode(authorization[6:])
            username, password = auth_decoded.decode().split(":", 2)
            if username != app.WEB_USERNAME or password != app.WEB_PASSWORD:
                return self._unauthorized("Invalid user/pass.")
        else:
            return self._unauthorized("Invalid token.")

    def options(self, *args, **kwargs):
        self.finish(self._no_content())

    def write_error(self, status_code, *args, **kwargs):
        exc_info = kwargs.get("exc_info", None)
        if exc_info and isinstance(exc_info[1], HTTPError):
            error = exc_info[1].log_message or exc_info[1].reason
            response = self.api_response(status=status_code, error=error)
        else:
            response = self.api_response(500, error="Internal Server Error")
        self.finish(response)

    def set_default_headers(self):
        if app.APP_VERSION:
            self.set_header("X-Medusa-Server", app.APP_VERSION)
        self.set_header("Access-Control-Allow-Origin", "*")
        allowed_headers = ("Origin", "Accept", "Authorization", "Content-Type",
                           "X-Requested-With", "X-CSRF-Token", "X-Api-Key", "X-Medusa-Server")
        self.set_header("Access-Control-Allow-Headers", ", ".join(allowed_headers))
        allowed_methods = self.DEFAULT_ALLOWED_METHODS
        if self.allowed_methods:
            allowed_methods += self.allowed_methods
        self.set_header("Access-Control-Allow-Methods", ", ".join(allowed_methods))

    def api_response(self, status=None, error=None, data=None, headers=None):
        content_type = "application/json; charset=UTF-8"
        if error is not None and status is not None:
            self.set_status(status)
            self.set_header("content-type", content_type)
            return {"error": error}
        self.set_status(status or 200)
        if data is not None:
            self.set_header("content-type", content_type)
            return json.JSONEncoder().encode(data)
        return None

    @classmethod
    def _create_base_url(cls, prefix_url, resource_name, *args):
        elements = [prefix_url, resource_name] + [
            r"(?P<{key}>{value})".format(key=key, value=value) for (key, value) in args
        ]
        return "/".join(elements)

    @classmethod
    def create_url(cls, prefix_url, resource_name, *args):
        resource_url = prefix_url + "/" + resource_name
        path_params = ""
        for arg in args:
            if not arg:
                continue
            key, value = arg
            q = r"(?:/(?P<{key}>{value}))".format(key=key, value=value)
            if path_params:
                path_params = r"(?:{previous}(?:{current}|/?))".format(previous=path_params, current=q)
            else:
                path_params = q
            path_params = r"(?:{path}|/?)".format(path=path_params)
        return resource_url + path_params + "/?$"

    @classmethod
    def create_app_handler(cls, base):
        if cls.parent_handler:
            base = cls._create_base_url(base, cls.parent_handler.name, cls.parent_handler.identifier)
        return cls.create_url(base, cls.name, *(cls.identifier, cls.path_param)), cls

    def _ok(self, data=None):
        return self.api_response(200, data=data)

    def _no_content(self):
        return self.api_response(204)

    def _bad_request(self, error):
        return self.api_response(400, error=error)

    def _unauthorized(self, error):
        return self.api_response(401, error=error)

    def _not_found(self, error="Resource not found"):
        return self.api_response(404, error=error)


class NotFoundHandler(BaseRequestHandler):
    """A class used for the API v2 404 page."""

    def get(self, *args, **kwargs):
        self.finish(self.api_response(status=404))

    @classmethod
    def create_app_handler(cls, base):
        return r"{base}(/?.*)".format(base=base), cls
