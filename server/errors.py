"""Service errors carry the gRPC status code the caller gets."""

from __future__ import annotations

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
