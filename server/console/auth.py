"""Console access: the gRPC API's bearer tokens (--auth-token-file) through a login form and an HttpOnly
session cookie (browsers cannot set headers on page loads or WebSockets), or `Authorization: Bearer`.

Static files hold no data and are open; every /api/ path except /api/login and /api/info needs a token
while a token file is set. Sessions re-check their token on every request, so removing it from the file
logs its sessions out. mTLS is enforced by the TLS layer itself (see `server.ssl_context`).
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

COOKIE = "lorat_console"
OPEN_PATHS = ("/api/login", "/api/info")


class ConsoleAuth:
    """`tokens` has `valid(bytes) -> bool` (server.security.TokenFile); None: no token needed."""

    def __init__(self, tokens: Any | None, secure_cookie: bool) -> None:
        self.tokens = tokens
        self.secure_cookie = secure_cookie
        self._sessions: dict[str, bytes] = {}

    @property
    def required(self) -> bool:
        return self.tokens is not None

    def login(self, token: str) -> str | None:
        """A new session id for a valid token, else None."""
        if self.tokens is None or not token or not self.tokens.valid(token.encode()):
            return None
        if len(self._sessions) > 10_000:  # bound memory against a login loop
            self._sessions.clear()
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = token.encode()
        return sid

    def allowed(self, request: web.Request) -> bool:
        if self.tokens is None:
            return True
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            return bool(self.tokens.valid(token.strip().encode()))
        stored = self._sessions.get(request.cookies.get(COOKIE, ""))
        return stored is not None and bool(self.tokens.valid(stored))

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path.startswith("/api/") and request.path not in OPEN_PATHS and not self.allowed(request):
            return web.json_response({"error": "log in with a token from --auth-token-file"}, status=401)
        return await handler(request)
