"""Service errors carry the gRPC status code the caller gets."""

from __future__ import annotations

from typing import Any

import grpc


class ServiceError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(msg: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, msg)


def not_found(msg: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, msg)


def exists(msg: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, msg)


def exhausted(msg: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, msg)


def precondition(msg: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, msg)


def unavailable(msg: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, msg)


def refuse(context: Any, code: grpc.StatusCode, message: str) -> None:
    """Answer `code` with `message` once the handler returns, without `context.abort()`.

    Why not abort: grpc.aio keeps the AbortError it raises on the call (RPCState.abort_exception), and that
    error's traceback holds the handler's frames, so call, context, error and request form a reference cycle.
    Only a full garbage collection frees it, which is rare in a process holding torch's object graph, and each
    such cycle pins its request's protobuf arena (a 1 MiB label map, a 20,000-entry map): +30 MiB of native
    memory over the 10,000 refused requests of bench/faults.py. With the status set and the handler
    returning, a refused request is freed as soon as its call ends. Unary handlers then return None (grpc
    discards the response of a non-OK call); streaming handlers just return."""
    context.set_code(code)
    context.set_details(message)
