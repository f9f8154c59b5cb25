"""SDK errors: one exception type carrying the gRPC status code and the server's message."""

from __future__ import annotations

import grpc


class LoratError(Exception):
    """A call failed. ``code`` is the grpc.StatusCode (e.g. INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.details = message

    @classmethod
    def from_rpc(cls, err: grpc.RpcError) -> LoratError:
        code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
        details = err.details() if hasattr(err, "details") else str(err)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")
