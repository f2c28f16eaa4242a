"""The gateway's FastAPI application: OpenAI routes, health, metrics and the /stats signal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from scaleserve.gateway.auth import ApiKeys, load_keys
from scaleserve.gateway.discovery.kubernetes import EndpointSliceDiscovery
from scaleserve.gateway.discovery.static import StaticDiscovery
from scaleserve.gateway.errors import (
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
)
from scaleserve.gateway.protocol import parse_chat, parse_completion, parse_json
from scaleserve.gateway.responses import GenerationResponse
from scaleserve.gateway.service import Gateway
from scaleserve.gateway.settings import GatewaySettings

log = logging.getLogger("scaleserve.gateway")
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"


class JSONBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)


def error_response(err: GatewayError) -> Response:
    return Response(
        err.body(), status_code=err.status, media_type="application/json", headers=err.headers
    )


def create_app(settings: GatewaySettings) -> FastAPI:
    gateway = Gateway(settings)
    keys = ApiKeys(load_keys(settings.api_key_file))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        discovery = (
            EndpointSliceDiscovery(gateway.pool, settings)
            if settings.discovery == "kubernetes"
            else StaticDiscovery(gateway.pool, settings)
        )
        tasks = [
            asyncio.create_task(discovery.run(), name="gateway-discovery"),
            asyncio.create_task(gateway.pool.run_health(), name="gateway-health"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await gateway.pool.close()

    app = FastAPI(
        title="scaleserve gateway",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = gateway

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

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> Response:
        return error_response(InvalidRequestError(str(exc)))

    async def read_body(request: Request) -> dict[str, Any]:
        keys.check(request.headers.get("authorization"))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            raise PayloadTooLargeError(
                f"request body is larger than {settings.max_body_bytes} bytes"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise PayloadTooLargeError(
                    f"request body is larger than {settings.max_body_bytes} bytes"
                )
            chunks.append(chunk)
        return parse_json(b"".join(chunks))

    def new_id(prefix: str) -> str:
        return prefix + os.urandom(12).hex()

    async def generate(request: Request, kind: str) -> Response:
        arrived = time.perf_counter()
        route = "chat" if kind == "chat" else "completions"
        try:
            data = await read_body(request)
            req = parse_chat(data) if kind == "chat" else parse_completion(data)
            request_id = new_id("chatcmpl-" if kind == "chat" else "cmpl-")
            prompt_ids, engine_request = gateway.prepare(req, request_id)
        except GatewayError as err:
            gateway.observe(route, err.status, arrived)
            raise
        return GenerationResponse(
            gateway, req, request_id, prompt_ids, engine_request, route, arrived
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await generate(request, "chat")

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        keys.check(request.headers.get("authorization"))
        model = gateway.model
        data = []
        if model is not None:
            data.append(
                {
                    "id": model.name,
                    "object": "model",
                    "created": model.created,
                    "owned_by": "scaleserve",
                    "max_model_len": model.max_model_len,
                }
            )
        return JSONBytes({"object": "list", "data": data})

    @app.get("/v1/models/{model_id:path}")
    async def model(request: Request, model_id: str) -> Response:
        keys.check(request.headers.get("authorization"))
        model = gateway.model
        if model is None or model.name != model_id:
            raise NotFoundError(f"The model `{model_id}` does not exist.", code="model_not_found")
        return JSONBytes(
            {
                "id": model.name,
                "object": "model",
                "created": model.created,
                "owned_by": "scaleserve",
            }
        )

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONBytes({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        if gateway.ready:
            return JSONBytes({"status": "ready"})
        return JSONBytes({"status": "not ready"}, status_code=503)

    @app.get("/stats")
    async def stats() -> Response:
        return JSONBytes(gateway.stats())

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(gateway.metrics.render(), media_type=PROMETHEUS)

    return app
