"""The engine's exception tree and its mapping to gRPC status codes, applied at the edge."""

from __future__ import annotations

import grpc


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class SettingsError(EngineError, ValueError):
    """A flag or environment value is invalid; the process refuses to start."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class InvalidRequestError(EngineError, ValueError):
    """A request field is invalid. The message names the field, e.g. `sampling.max_tokens`."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class WrongTaskError(EngineError):
    """A Generate call on an embedding engine, or an Embed call on a generating one."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class DuplicateRequestError(EngineError):
    code = grpc.StatusCode.ALREADY_EXISTS

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request_id: {request_id!r} is already running on this engine")


class NotReadyError(EngineError):
    """The engine is loading or draining: no new work (the caller should try another one)."""

    code = grpc.StatusCode.UNAVAILABLE


class CoreDeadError(EngineError):
    """The engine core process died; the engine can serve nothing until it is restarted."""

    code = grpc.StatusCode.UNAVAILABLE


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The gRPC status code and details for an exception reaching the service's edge."""
    if isinstance(exc, EngineError):
        return exc.code, str(exc)
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"
