"""The gateway's FastAPI routes, one function per family: OpenAI-shaped error handlers, the
model list, and health. The generation and embeddings POSTs are served before FastAPI
(GatewayApp in app.py); FastAPI only declares them so other methods get a 405."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from scaleserve.gateway.auth import ApiKeys
from scaleserve.gateway.errors import (
    GatewayError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
)
from scaleserve.gateway.models import Model
from scaleserve.gateway.service import Gateway

log = logging.getLogger("scaleserve.gateway")


class JSONBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)


def error_response(err: GatewayError) -> Response:
    return Response(
        err.body(), status_code=err.status, media_type="application/json", headers=err.headers
    )


def add_error_handlers(app: FastAPI) -> None:
    """Every failure, the framework's included, as an OpenAI-style JSON error."""

    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, err: GatewayError) -> Response:
        return error_response(err)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return error_response(NotFoundError("no such route"))
        if exc.status_code == 405:
            return error_response(MethodNotAllowedError("method not allowed on this route"))
        err = InvalidRequestError(str(exc.detail))
        err.status = exc.status_code
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        request_id = request.scope.get("scaleserve.request_id", "")
        log.error("request %s failed", request_id, exc_info=exc)
        return error_response(InternalError(f"internal error (request id {request_id})"))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(InvalidRequestError(str(exc)))

    @app.post("/v1/completions")
    @app.post("/v1/chat/completions")
    @app.post("/v1/embeddings")
    async def generation_routes() -> Response:  # served by GatewayApp's fast path
        raise NotFoundError("no such route")


def add_model_routes(app: FastAPI, gateway: Gateway, keys: ApiKeys) -> None:
    """/v1/models and /v1/models/{id}: the models replicas serve and those configured."""

    def model_object(name: str, model: Model | None) -> dict[str, Any]:
        card: dict[str, Any] = {
            "id": name,
            "object": "model",
            "created": model.created if model is not None else gateway.started,
            "owned_by": "scaleserve",
        }
        if model is not None:  # a configured name no replica has described yet has no length
            card["max_model_len"] = model.max_model_len
        return card

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        keys.check(request.headers.get("authorization"))
        data = [model_object(name, m) for name, m in gateway.listed_models()]
        return JSONBytes({"object": "list", "data": data})

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> Response:
        keys.check(request.headers.get("authorization"))
        for name, listed in gateway.listed_models():
            if name == model_id:
                return JSONBytes(model_object(name, listed))
        raise NotFoundError(f"The model `{model_id}` does not exist.", code="model_not_found")


def add_health_routes(app: FastAPI, gateway: Gateway) -> None:
    """/healthz (the process answers) and /readyz (it can take requests)."""

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONBytes({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        # Ready without replicas while requests can be held: a Service that dropped every
        # gateway of an endpoint scaled to zero would refuse the request that wakes it.
        if (gateway.ready or gateway.settings.max_held > 0) and not gateway.draining:
            return JSONBytes({"status": "ready"})
        status = "draining" if gateway.draining else "not ready"
        return JSONBytes({"status": status}, status_code=503)
