"""Medusa's /config (replica of medusa/server/api/v2/config.py: the web interface keys)."""

from tornado.escape import json_decode

from medusa import app
from medusa.server.api.v2.base import BaseRequestHandler

PATCHES = {"apiKey": "API_KEY", "username": "WEB_USERNAME", "password": "WEB_PASSWORD"}


class ConfigHandler(BaseRequestHandler):
    name = "config"
    identifier = ("identifier", r"\w+")
    path_param = ("path_param", r"\w+")
    allowed_methods = ("GET", "PATCH")

    def get(self, identifier, path_param=None):
        if identifier and identifier != "main":
            return self.finish(self._not_found("Config not found"))
        return self.finish(self._ok(data={"main": {"webInterface": {"username": app.WEB_USERNAME}}}))

    def patch(self, identifier, *args, **kwargs):
        if not identifier:
            return self.finish(self._bad_request("Config identifier not specified"))
        if identifier != "main":
            return self.finish(self._not_found("Config not found"))
        data = json_decode(self.request.body)
        accepted = {}
        for key, value in data.get("webInterface", {}).items():
            if key in PATCHES:
                setattr(app, PATCHES[key], value)
                accepted[key] = value
        return self.finish(self._ok(data={"webInterface": accepted}))
