"""The gateway's ASGI application: the OpenAI routes and health on the API port; /stats and
/metrics live on the internal port (internal.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI

from scaleserve.gateway import sse
from scaleserve.gateway.api_routes import add_error_handlers, add_health_routes, add_model_routes
from scaleserve.gateway.auth import ApiKeys
from scaleserve.gateway.deadlines import (
    CURRENT_FLOW,
    DROP_CONNECTION,
    Flow,
    bind_send,
    current_trace,
)
from scaleserve.gateway.discovery.kubernetes import EndpointSliceDiscovery
from scaleserve.gateway.discovery.static import StaticDiscovery
from scaleserve.gateway.embed_route import EmbeddingsRoute
from scaleserve.gateway.engine_request import prepare
from scaleserve.gateway.errors import (
    ClientDisconnectedError,
    GatewayError,
    InternalError,
    PayloadTooLargeError,
    RequestTimeoutError,
    ShuttingDownError,
)
from scaleserve.gateway.internal import InternalServer
from scaleserve.gateway.models import Model
from scaleserve.gateway.protocol import parse_chat, parse_completion
from scaleserve.gateway.responses import (
    GenerationResponse,
    error_response_messages,
    unless_client_leaves,
)
from scaleserve.gateway.service import Gateway
from scaleserve.gateway.settings import GatewaySettings
from scaleserve.tracing import MODEL, PROMPT_TOKENS, REQUEST_ID, Trace, Tracing, carrier_of

log = logging.getLogger("scaleserve.gateway")


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
            elif (drop := scope.get(DROP_CONNECTION)) is not None:
                drop()  # a client that stopped reading: nothing more can reach it
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
                req = parse_chat(raw) if kind == "chat" else parse_completion(raw)
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


def lifespan_of(
    gateway: Gateway,
    keys: ApiKeys,
    tracing: Tracing | None,
    internal_path: str,
) -> Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]]:
    """Discovery, health probes, deadlines and the internal server, for the app's lifetime."""
    settings = gateway.settings

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

    return lifespan


def create_app(
    settings: GatewaySettings, tracing: Tracing | None = None, internal_path: str = ""
) -> GatewayApp:
    """The gateway's app; `tracing` (scaleserve.tracing) turns request traces on;
    `internal_path`: a worker's internal Unix socket (workers.py) in place of the internal TCP
    port."""
    gateway = Gateway(settings)
    keys = ApiKeys.from_path(settings.api_key_file)
    app = FastAPI(
        title="scaleserve gateway",
        lifespan=lifespan_of(gateway, keys, tracing, internal_path),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = gateway
    add_error_handlers(app)
    add_model_routes(app, gateway, keys)
    add_health_routes(app, gateway)
    return GatewayApp(app, gateway, keys, tracing)
