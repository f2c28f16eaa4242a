"""The gateway's ASGI application: the OpenAI routes and health on the API port; /stats and
/metrics live on the internal port (internal.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from scaleserve.gateway import sse
from scaleserve.gateway.auth import ApiKeys
from scaleserve.gateway.deadlines import CURRENT_FLOW, Flow, bind_send, current_trace
from scaleserve.gateway.discovery.kubernetes import EndpointSliceDiscovery
from scaleserve.gateway.discovery.static import StaticDiscovery
from scaleserve.gateway.embed_route import EmbeddingsRoute
from scaleserve.gateway.engine_request import prepare
from scaleserve.gateway.errors import (
    ClientDisconnectedError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ShuttingDownError,
)
from scaleserve.gateway.internal import InternalServer
from scaleserve.gateway.models import Model
from scaleserve.gateway.protocol import parse_chat, parse_completion, parse_json
from scaleserve.gateway.responses import (
    GenerationResponse,
    error_response_messages,
    unless_client_leaves,
)
from scaleserve.gateway.service import Gateway
from scaleserve.gateway.settings import GatewaySettings
from scaleserve.tracing import MODEL, PROMPT_TOKENS, REQUEST_ID, Trace, Tracing, carrier_of

log = logging.getLogger("scaleserve.gateway")


class JSONBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return content if isinstance(content, bytes) else orjson.dumps(content)


def error_response(err: GatewayError) -> Response:
    return Response(
        err.body(), status_code=err.status, media_type="application/json", headers=err.headers
    )


INLINE_TOKENIZE_BYTES = 32 * 1024  # larger bodies are templated and tokenized in a thread
REQUEST_ID_CHARS = re.compile(rb"[A-Za-z0-9._:/+=-]+")
GENERATION_ROUTES = {"/v1/completions": "completion", "/v1/chat/completions": "chat"}
EMBEDDINGS_ROUTE = "/v1/embeddings"


class GatewayApp:
    """The ASGI entry point: generation POSTs take a direct path, everything else FastAPI.

    The two generation routes are the hot path; serving them straight from the server's
    `receive`/`send` skips the framework's routing and per-message middleware wrappers, which
    would otherwise run for every relayed token.
    """

    def __init__(
        self, api: FastAPI, gateway: Gateway, keys: ApiKeys, tracing: Tracing | None = None
    ) -> None:
        self.api = api
        self.state = api.state
        self.gateway = gateway
        self.keys = keys
        self.max_body = gateway.settings.max_body_bytes
        self.tracer = tracing.tracer if tracing is not None else None
        self.embeddings = EmbeddingsRoute(self)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            kind = GENERATION_ROUTES.get(scope["path"])
            if kind is not None:
                await self.generate(kind, scope, receive, send)
                return
            if scope["path"] == EMBEDDINGS_ROUTE:
                request_id = request_id_of(scope)
                send = with_header(send, (b"x-request-id", request_id.encode()))
                await self.embeddings(scope, receive, send, request_id)
                return
        if scope["type"] == "http":
            request_id = request_id_of(scope)
            scope["scaleserve.request_id"] = request_id
            send = with_header(send, (b"x-request-id", request_id.encode()))
        await self.api(scope, receive, send)

    async def read_body(self, scope: Any, receive: Any) -> bytes:
        """The whole body (its headers are checked first), within receive_timeout."""
        authorization = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise PayloadTooLargeError(f"request body is larger than {self.max_body} bytes")
        self.keys.check(authorization)
        chunks: list[bytes] = []
        size = 0
        timeout = self.gateway.settings.receive_timeout
        try:
            async with asyncio.timeout(timeout):
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        raise ClientDisconnectedError
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body:
                        raise PayloadTooLargeError(
                            f"request body is larger than {self.max_body} bytes"
                        )
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        except TimeoutError:
            raise RequestTimeoutError(
                f"the request body did not arrive within {timeout:g}s",
                headers={"connection": "close"},
            ) from None

    async def admit(self, receive: Any) -> None:
        """An admission slot, before the body is parsed, templated or tokenized."""
        admission = self.gateway.admission
        if not admission.try_acquire():
            await unless_client_leaves(admission.acquire(), receive)

    async def hold(self, name: str, receive: Any) -> Model:
        """Wait without an admission slot until a replica serves `name`, then take a slot."""
        self.gateway.admission.release()
        model = await unless_client_leaves(self.gateway.hold(name), receive)
        await self.admit(receive)
        return model

    async def generate(self, kind: str, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        flow = Flow(task, request_id_of(scope))
        if self.tracer is not None:  # the client's traceparent, if any, is the parent
            flow.trace = Trace(
                self.tracer,
                "gateway.request",
                carrier_of(scope["headers"]),
                {REQUEST_ID: flow.request_id, "http.route": scope["path"]},
            )
        CURRENT_FLOW.set(flow)  # this request's task only (uvicorn runs each in its own)
        send = bind_send(flow, send)
        sweeper = self.gateway.sweeper
        sweeper.flows.add(flow)
        try:
            await self._generate(kind, scope, receive, send)
        except asyncio.CancelledError:
            # Ended by a deadline or the end of a drain: say so, unless the client is gone or
            # not reading (flow.error None), or the cancel came from elsewhere.
            if not flow.ended or task.uncancel() > 0:
                raise
            if flow.error is not None:
                await self.answer_error(flow, send, flow.error)
        except Exception:
            log.exception("request %s failed", flow.request_id)
            await self.answer_error(
                flow, send, InternalError(f"internal error (request id {flow.request_id})")
            )
        finally:
            sweeper.flows.discard(flow)
            if flow.trace is not None:
                flow.trace.end()

    @staticmethod
    async def answer_error(flow: Flow, send: Any, err: GatewayError) -> None:
        """The error as JSON before the response started, else an SSE error event + [DONE]."""
        if not flow.started:
            start, body = error_response_messages(err)
            await send(start)
            await send(body)
        elif not flow.finished:
            frame = sse.error_frame(err.message, err.type, err.code) + sse.DONE
            await send({"type": "http.response.body", "body": frame, "more_body": False})

    async def _generate(self, kind: str, scope: Any, receive: Any, send: Any) -> None:
        gateway = self.gateway
        arrived = time.perf_counter()
        route = "chat" if kind == "chat" else "completions"
        admitted = False
        trace = current_trace()
        try:
            try:
                if gateway.draining:
                    raise ShuttingDownError(
                        "the gateway is shutting down; retry", headers={"connection": "close"}
                    )
                raw = await self.read_body(scope, receive)
                if trace is not None:
                    trace.stage("gateway.receive", {"http.request.body.size": len(raw)})
                await self.admit(receive)
                admitted = True
                if trace is not None:
                    trace.stage("gateway.queue")
                data = parse_json(raw)
                req = parse_chat(data) if kind == "chat" else parse_completion(data)
                model = gateway.lookup(req.model)
                if model is None:  # scaled to zero, or all starting
                    admitted = False
                    model = await self.hold(req.model, receive)
                    admitted = True
                request_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + os.urandom(12).hex()
                if trace is not None:
                    trace.stage("gateway.parse")
                    trace.annotate({MODEL: req.model, "gen_ai.response.id": request_id})
                if len(raw) > INLINE_TOKENIZE_BYTES:  # long prompts: keep the loop for streams
                    prompt_ids, engine_request = await asyncio.to_thread(  # copies the context
                        prepare, req, model, request_id
                    )
                else:
                    prompt_ids, engine_request = prepare(req, model, request_id)
                if trace is not None:
                    trace.stage("gateway.tokenize", {PROMPT_TOKENS: len(prompt_ids)})
            except GatewayError as err:
                gateway.observe(route, err.status, arrived)
                start, body = error_response_messages(err)
                await send(start)
                await send(body)
                return
            except ClientDisconnectedError:
                return
            response = GenerationResponse(
                gateway, req, model, request_id, prompt_ids, engine_request, route, arrived
            )
            await response(scope, receive, send)
        finally:
            if admitted:
                gateway.admission.release()


def with_header(send: Any, header: tuple[bytes, bytes]) -> Any:
    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), header]
        await send(message)

    return wrapped


def request_id_of(scope: Any) -> str:
    """The client's x-request-id when it is a sane token, else a new one."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if 0 < len(value) <= 128 and REQUEST_ID_CHARS.fullmatch(value):
                return str(value.decode())
            break
    return "req_" + os.urandom(12).hex()


def create_app(
    settings: GatewaySettings, tracing: Tracing | None = None, internal_path: str = ""
) -> GatewayApp:
    """The gateway's app; `tracing` (scaleserve.tracing) turns request traces on;
    `internal_path`: a worker's internal Unix socket (workers.py) in place of the internal TCP
    port."""
    gateway = Gateway(settings)
    keys = ApiKeys.from_path(settings.api_key_file)

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
            asyncio.create_task(gateway.sweeper.run(), name="gateway-deadlines"),
        ]
        internal = InternalServer(
            settings.host,
            settings.internal_port,
            gateway.stats,
            gateway.metrics.render,
            lambda: gateway.sweeper.last_tick,
            path=internal_path,
        )
        internal.start()
        if not keys.enabled:
            log.warning("no API key is configured: the OpenAI API is open to anyone who reaches it")
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await internal.stop()
            await gateway.pool.close()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # flushes the last spans

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

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONBytes({"status": "ok"})

    @app.get("/readyz")
    async def readyz() -> Response:
        # Ready without replicas while requests can be held: a Service that dropped every
        # gateway of an endpoint scaled to zero would refuse the request that wakes it.
        if (gateway.ready or settings.max_held > 0) and not gateway.draining:
            return JSONBytes({"status": "ready"})
        status = "draining" if gateway.draining else "not ready"
        return JSONBytes({"status": status}, status_code=503)

    return GatewayApp(app, gateway, keys, tracing)
