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
    ClientDisconnectedError,
    GatewayError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
)
from scaleserve.gateway.protocol import parse_chat, parse_completion, parse_json
from scaleserve.gateway.responses import GenerationResponse, error_response_messages
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


INLINE_TOKENIZE_BYTES = 32 * 1024  # larger bodies are templated and tokenized in a thread
GENERATION_ROUTES = {"/v1/completions": "completion", "/v1/chat/completions": "chat"}


class GatewayApp:
    """The ASGI entry point: generation POSTs take a direct path, everything else FastAPI.

    The two generation routes are the hot path; serving them straight from the server's
    `receive`/`send` skips the framework's routing and per-message middleware wrappers, which
    would otherwise run for every relayed token.
    """

    def __init__(self, api: FastAPI, gateway: Gateway, keys: ApiKeys) -> None:
        self.api = api
        self.state = api.state
        self.gateway = gateway
        self.keys = keys
        self.max_body = gateway.settings.max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            kind = GENERATION_ROUTES.get(scope["path"])
            if kind is not None:
                await self.generate(kind, scope, receive, send)
                return
        await self.api(scope, receive, send)

    async def read_body(self, scope: Any, receive: Any) -> bytes:
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise PayloadTooLargeError(f"request body is larger than {self.max_body} bytes")
        self.keys.check(authorization)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnectedError
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLargeError(f"request body is larger than {self.max_body} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def generate(self, kind: str, scope: Any, receive: Any, send: Any) -> None:
        gateway = self.gateway
        arrived = time.perf_counter()
        route = "chat" if kind == "chat" else "completions"
        try:
            raw = await self.read_body(scope, receive)
            data = parse_json(raw)
            req = parse_chat(data) if kind == "chat" else parse_completion(data)
            request_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + os.urandom(12).hex()
            if len(raw) > INLINE_TOKENIZE_BYTES:  # long prompts: keep the loop free for streams
                prompt_ids, engine_request = await asyncio.to_thread(
                    gateway.prepare, req, request_id
                )
            else:
                prompt_ids, engine_request = gateway.prepare(req, request_id)
        except GatewayError as err:
            gateway.observe(route, err.status, arrived)
            start, body = error_response_messages(err)
            await send(start)
            await send(body)
            return
        except ClientDisconnectedError:
            return
        response = GenerationResponse(
            gateway, req, request_id, prompt_ids, engine_request, route, arrived
        )
        await response(scope, receive, send)


def create_app(settings: GatewaySettings) -> GatewayApp:
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

    @app.post("/v1/completions")
    @app.post("/v1/chat/completions")
    async def generation_routes() -> Response:  # served by GatewayApp's fast path
        raise NotFoundError("no such route")

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

    return GatewayApp(app, gateway, keys)
