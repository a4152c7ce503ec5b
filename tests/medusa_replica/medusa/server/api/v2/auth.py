"""Medusa's /authenticate (replica of medusa/server/api/v2/auth.py)."""

import random
import string
import time

import jwt
from tornado.escape import json_decode

from medusa import app
from medusa.server.api.v2.base import BaseRequestHandler


class AuthHandler(BaseRequestHandler):
    name = "authenticate"
    allowed_methods = ("POST",)

    def _check_authentication(self):
        return None

    def post(self, *args, **kwargs):
        username = app.WEB_USERNAME
        password = app.WEB_PASSWORD
        if not username.strip() or not password.strip():
            return self.finish(self._login())
        if not self.request.body:
            return self.finish(self._unauthorized("No Credentials Provided"))
        if self.request.headers["content-type"] != "application/json":
            return self.finish(self._unauthorized("Incorrect content-type"))
        request_body = json_decode(self.request.body)
        if username != request_body.get("username") or password != request_body.get("password"):
            return self.finish(self._unauthorized("Invalid credentials"))
        return self.finish(self._login(request_body.get("exp", 86400)))

    def _login(self, exp=86400):
        self.set_header("Content-Type", "application/json")
        time_now = int(time.time())
        return self._ok(data={
            "token": jwt.encode({
                "iss": "Medusa " + str(app.APP_VERSION),
                "iat": time_now,
                "jti": "".join(random.choice(string.ascii_letters + string.digits) for _ in range(20)),
                "exp": time_now + int(exp),
                "username": app.WEB_USERNAME,
                "apiKey": app.API_KEY,
            }, app.ENCRYPTION_SECRET, algorithm="HS256")
        })
