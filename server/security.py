"""Who may call: TLS / mutual TLS credentials and bearer tokens from a file that can change at run time.

`--auth-token-file`: one token per line (blank lines and `#` comments ignored). Callers send
`authorization: Bearer <token>`; every RPC except health and reflection answers UNAUTHENTICATED without
a valid one. The file is re-read when its modification time changes (checked at most once a second), so
rotating a token needs no restart. Tokens are compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from .errors import refuse
from .log import event

OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")


class TokenFile:
    """The set of valid tokens, re-read when the file changes."""

    def __init__(self, path: str, check_every_s: float = 1.0) -> None:
        self.path = Path(path)
        self.check_every_s = check_every_s
        self._tokens: list[bytes] = []
        self._mtime: float | None = None
        self._checked = 0.0
        self._load(force=True)

    def _load(self, force: bool = False) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            if force:
                raise ValueError(f"--auth-token-file {self.path}: {exc.strerror}") from None
            event("auth_token_file_unreadable", 40, path=str(self.path), error=exc.strerror)
            return  # keep the tokens we had: a missing file during a rotation must not open the server
        if not force and st.st_mtime_ns == self._mtime:
            return
        lines = self.path.read_text().splitlines()
        tokens = [ln.strip().encode() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
        if force and not tokens:
            raise ValueError(f"--auth-token-file {self.path} holds no token")
        if tokens:
            self._tokens = tokens
        self._mtime = st.st_mtime_ns
        event("auth_tokens_loaded", path=str(self.path), tokens=len(self._tokens))

    def valid(self, presented: bytes) -> bool:
        now = time.monotonic()
        if now - self._checked >= self.check_every_s:
            self._checked = now
            self._load()
        ok = False
        for token in self._tokens:  # every token is compared, in constant time: no early exit to time
            ok |= hmac.compare_digest(presented, token)
        return ok


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler that answers UNAUTHENTICATED. It sets the status rather than calling `context.abort()`,
    whose reference cycle would keep each refused call until a full garbage collection (server/errors.py),
    and it never parses the body: an unauthenticated caller gets no protobuf parse of its bytes."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
        refuse(context, grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(request: Any, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        refuse(context, grpc.StatusCode.UNAUTHENTICATED, message)
        return
        yield  # pragma: no cover  (makes this an async generator)

    kw = {"request_deserializer": _unread, "response_serializer": handler.response_serializer}
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(deny, **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kw)
    return grpc.stream_stream_rpc_method_handler(deny_stream, **kw)


def _unread(data: bytes) -> None:
    return None


class BearerAuth(grpc.aio.ServerInterceptor):
    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        value = ""
        for key, val in details.invocation_metadata or ():
            if key == "authorization":
                value = val if isinstance(val, str) else val.decode("latin-1")
                break
        scheme, _, token = value.partition(" ")
        if scheme.lower() == "bearer" and token and self.tokens.valid(token.strip().encode()):
            return handler
        event("unauthenticated", 20, method=details.method, why="no token" if not value else "invalid token")
        return _deny(handler, "this server needs 'authorization: Bearer <token>' with a valid token "
                              "(see --auth-token-file; the SDK takes token=, lorat-client --token)")


def server_credentials(cert: str, key: str, client_ca: str) -> grpc.ServerCredentials:
    """TLS with `cert`/`key`; with `client_ca`, clients must present a certificate it signed (mTLS)."""
    chain = Path(cert).read_bytes()
    private = Path(key).read_bytes()
    root = Path(client_ca).read_bytes() if client_ca else None
    return grpc.ssl_server_credentials([(private, chain)], root_certificates=root, require_client_auth=root is not None)
