"""The gateway's exception tree and its mapping to OpenAI-style JSON errors at the edge.

Everything the gateway rejects or fails on is a `GatewayError` carrying the HTTP status and the
OpenAI error fields; gRPC errors from engines are translated by `from_grpc`. Handlers raise, the
app's exception handler renders ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import grpc
import orjson


class GatewayError(Exception):
    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def payload(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.payload())


class InvalidRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class UnauthorizedError(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class NotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"


class MethodNotAllowedError(GatewayError):
    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RequestTimeoutError(GatewayError):
    """The client did not send its request (headers and body) within receive_timeout."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class UnsupportedMediaTypeError(GatewayError):
    status = 415
    type = "invalid_request_error"
    code = "unsupported_media_type"


class OverloadedError(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(GatewayError):
    """An engine failed the request."""

    status = 502
    type = "server_error"
    code = "engine_error"


class NoReplicaAvailableError(GatewayError):
    status = 503
    type = "server_error"
    code = "no_replica_available"


class EngineUnavailableError(UpstreamError):
    status = 503
    code = "engine_unavailable"


class EngineTimeoutError(UpstreamError):
    status = 504
    code = "engine_timeout"


class NotImplementedByEngineError(UpstreamError):
    status = 501
    code = "not_implemented"


class ShuttingDownError(GatewayError):
    """The gateway is draining: no new requests, and requests still running at the end of the
    drain are ended with this."""

    status = 503
    type = "server_error"
    code = "shutting_down"


class InternalError(GatewayError):
    """Anything unexpected: an OpenAI-shaped 500 naming the request id for the logs."""

    status = 500
    type = "server_error"
    code = "internal_error"


class ClientDisconnectedError(Exception):
    """The client went away (nothing to answer)."""


# gRPC status codes whose failure before the first token is worth one try on another replica.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
# Codes that say the replica itself is in trouble (take it out until a probe succeeds).
REPLICA_FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN})


def from_grpc(code: grpc.StatusCode, details: str | None) -> GatewayError:
    """Map an engine's gRPC status to the error the client sees."""
    message = details or code.name.lower()
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE):
        return InvalidRequestError(message, code="invalid_value")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return InvalidRequestError(message, code="failed_precondition")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(message)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return OverloadedError(f"engine overloaded: {message}", headers={"retry-after": "1"})
    if code == grpc.StatusCode.UNAVAILABLE:
        return EngineUnavailableError(f"engine unavailable: {message}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EngineTimeoutError(f"engine timed out: {message}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotImplementedByEngineError(message)
    return UpstreamError(f"engine error ({code.name}): {message}")


def from_rpc_error(exc: grpc.aio.AioRpcError) -> GatewayError:
    return from_grpc(exc.code(), exc.details())
