"""The generation endpoints' ASGI responses: admission, dispatch, SSE relay or one JSON body.

The response object runs the whole request so that it holds the ASGI `receive` channel: a
watcher waits for the client's disconnect and cancels the request wherever it is (queued,
waiting for the first token, relaying), which cancels the engine call and so aborts the
engine's request. Errors before the first byte are OpenAI JSON errors with their HTTP status;
errors after it are one SSE error event followed by [DONE].
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
import orjson

from scaleserve.gateway import sse
from scaleserve.gateway.choices import Collector, Echo, Framer
from scaleserve.gateway.deadlines import CURRENT_FLOW, current_trace
from scaleserve.gateway.dispatch import Upstream
from scaleserve.gateway.errors import (
    ClientDisconnectedError,
    GatewayError,
    UpstreamError,
    from_rpc_error,
)
from scaleserve.gateway.models import Model
from scaleserve.gateway.protocol import GenerationRequest
from scaleserve.gateway.service import Gateway

log = logging.getLogger("scaleserve.gateway")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]
# the status a request closed for not reading its response is counted under (the client is
# told nothing: it does not read)
WRITE_STALL_STATUS = 408


def error_response_messages(err: GatewayError) -> tuple[dict[str, Any], dict[str, Any]]:
    body = err.body()
    headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
    headers += [(k.encode(), v.encode()) for k, v in err.headers.items()]
    return (
        {"type": "http.response.start", "status": err.status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


class GenerationResponse:
    """One completion or chat completion, streamed or not, as an ASGI callable."""

    def __init__(
        self,
        gateway: Gateway,
        req: GenerationRequest,
        model: Model,
        request_id: str,
        prompt_ids: list[int],
        engine_request: Any,
        route: str,
        arrived: float,
    ) -> None:
        self.gateway = gateway
        self.req = req
        self.model = model
        self.request_id = request_id
        self.prompt_ids = prompt_ids
        self.engine_request = engine_request
        self.route = route
        self.arrived = arrived
        self.started = False  # response headers sent
        self.finishing = False
        self.disconnected = False
        self.status = 200

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(self._watch(receive, task))
        gw = self.gateway
        gw.requests_total += 1
        try:
            await self._run(send)
        except asyncio.CancelledError:
            flow = CURRENT_FLOW.get()
            if flow is not None and flow.ended:
                # a deadline or the end of a drain: counted by the error it ended with, even
                # when the stream had started with a 200
                self.status = flow.error.status if flow.error is not None else WRITE_STALL_STATUS
            if not self.disconnected or task.uncancel() > 0:
                raise
            self.status = 499
            gw.metrics_disconnect()
        except GatewayError as err:
            self.status = err.status
            if not self.started:
                start, body = error_response_messages(err)
                await send(start)
                await send(body)
        finally:
            self.finishing = True
            watcher.cancel()
            gw.observe(self.route, self.status, self.arrived)

    async def _watch(self, receive: Any, task: asyncio.Task[Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                if not self.finishing:
                    self.disconnected = True
                    task.cancel()
                return

    async def _run(self, send: Any) -> None:
        gw = self.gateway  # admitted by the app before the body was parsed
        gw.in_flight.add(1)
        try:
            upstream = await gw.dispatch.open(self.prompt_ids, self.engine_request)
            gw.observe_ttft(upstream.first_at - self.arrived)
            try:
                if self.req.stream:
                    await self._stream(upstream, send)
                else:
                    await self._collect(upstream, send)
            finally:
                await gw.dispatch.finish(upstream)
                trace = current_trace()
                if trace is not None:
                    trace.stage("gateway.stream", {"gateway.stream.messages": upstream.reads + 1})
        finally:
            gw.in_flight.add(-1)

    def _observe_latency(self, up: Upstream, completion_tokens: int) -> None:
        # the choices of one request stream side by side: time between tokens is per choice
        per_choice = completion_tokens // max(1, self.req.choices.n)
        self.gateway.observe_latency(up, self.arrived, per_choice)

    @property
    def _reasoning(self) -> bool:
        """Whether the engine splits reasoning from content for this request."""
        request = self.engine_request
        return request is not None and request.HasField("reasoning")

    def _echo(self) -> Echo | None:
        req = self.req
        if not req.choices.echo:
            return None
        tok = self.model.tokenizer
        ids = self.prompt_ids
        text = req.prompt if isinstance(req.prompt, str) else tok.decode(ids)
        return Echo(text, lambda: tok.decode(ids[:1], skip_special_tokens=False))

    async def _stream(self, up: Upstream, send: Any) -> None:
        req = self.req
        enc = sse.StreamEncoder(
            "chat" if req.kind == "chat" else "completion",
            self.request_id,
            int(time.time()),
            req.model,
            req.include_usage,
        )
        framer = Framer(req, enc, len(self.prompt_ids), self._echo(), self._reasoning)
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        self.started = True
        msg = up.first
        head = framer.opening()
        try:
            while True:
                if msg.finish_reason == "abort":
                    up.complete = True
                    raise UpstreamError("the engine aborted the request")
                frame = framer.frame(msg)
                if framer.done:
                    break
                if frame:
                    body = head + frame if head else frame
                    await send({"type": "http.response.body", "body": body, "more_body": True})
                    head = b""
                msg = await up.next()
            up.complete = True
            tail = head + frame
            u = msg.usage
            if req.include_usage:
                tail += enc.usage(u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens)
            self.gateway.observe_tokens(u.prompt_tokens, u.completion_tokens, msg.finish_reason)
            self._observe_latency(up, u.completion_tokens)
        except grpc.aio.AioRpcError as exc:
            self.gateway.dispatch.upstream_failed(up, exc)
            err = from_rpc_error(exc)
            self.status = err.status
            tail = head + sse.error_frame(err.message, err.type, err.code)
        except UpstreamError as err:
            self.status = err.status
            tail = head + sse.error_frame(err.message, err.type, err.code)
        self.finishing = True
        await send({"type": "http.response.body", "body": tail + sse.DONE, "more_body": False})

    async def _collect(self, up: Upstream, send: Any) -> None:
        collector = Collector(self.req, self._echo(), self._reasoning)
        msg = up.first
        try:
            while msg.finish_reason != "abort" and not collector.add(msg):
                msg = await up.next()
        except grpc.aio.AioRpcError as exc:
            self.gateway.dispatch.upstream_failed(up, exc)
            raise from_rpc_error(exc) from None
        up.complete = True
        if msg.finish_reason == "abort":
            raise UpstreamError("the engine aborted the request")
        u = msg.usage
        chat = self.req.kind == "chat"
        payload: dict[str, Any] = {
            "id": self.request_id,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.req.model,
        }
        if chat:
            payload["system_fingerprint"] = None
        payload["choices"] = collector.choices()
        payload["usage"] = sse.usage_dict(
            u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens
        )
        self.gateway.observe_tokens(u.prompt_tokens, u.completion_tokens, msg.finish_reason)
        self._observe_latency(up, u.completion_tokens)
        body = orjson.dumps(payload)
        self.finishing = True
        self.started = True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


T = TypeVar("T")


async def unless_client_leaves(work: Awaitable[T], receive: Any) -> T:
    """Await `work` (a wait in a queue, an engine call); a client that leaves meanwhile cancels
    it and raises ClientDisconnectedError. The request's body is read, so receive() now only
    reports a disconnect."""
    task = asyncio.ensure_future(work)
    left = asyncio.ensure_future(receive())
    try:
        await asyncio.wait((task, left), return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        if not task.done():
            # a queue is left (a slot that arrives meanwhile is handed on); an engine call is
            # cancelled, which aborts its requests in the engine
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise ClientDisconnectedError
    return task.result()  # the queue's refusal (429, 503 for holding) or the call's error
