"""The generation endpoints' ASGI responses: admission, dispatch, SSE relay or one JSON body.

The response object runs the whole request so that it holds the ASGI `receive` channel: a
watcher waits for the client's disconnect and cancels the request wherever it is (queued,
waiting for the first token, relaying), which cancels the engine call and so aborts the
engine's request. Errors before the first byte are OpenAI JSON errors with their HTTP status;
errors after it are one SSE error event followed by [DONE].
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
import orjson

from scaleserve.gateway import sse
from scaleserve.gateway.errors import GatewayError, UpstreamError, from_rpc_error
from scaleserve.gateway.protocol import GenerationRequest
from scaleserve.gateway.service import Gateway, Upstream

log = logging.getLogger("scaleserve.gateway")

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]


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
        request_id: str,
        prompt_ids: list[int],
        engine_request: Any,
        route: str,
        arrived: float,
    ) -> None:
        self.gateway = gateway
        self.req = req
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
            upstream = await gw.open(self.prompt_ids, self.engine_request)
            gw.observe_ttft(upstream.first_at - self.arrived)
            try:
                if self.req.stream:
                    await self._stream(upstream, send)
                else:
                    await self._collect(upstream, send)
            finally:
                await gw.finish(upstream)
        finally:
            gw.in_flight.add(-1)

    async def _stream(self, up: Upstream, send: Any) -> None:
        enc = sse.StreamEncoder(
            "chat" if self.req.kind == "chat" else "completion",
            self.request_id,
            int(time.time()),
            self.req.model,
            self.req.include_usage,
        )
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        self.started = True
        msg = up.first
        head = enc.role() if self.req.kind == "chat" else b""
        try:
            while not msg.finish_reason:
                if msg.text:
                    await send(
                        {
                            "type": "http.response.body",
                            "body": head + enc.delta(msg.text) if head else enc.delta(msg.text),
                            "more_body": True,
                        }
                    )
                    head = b""
                msg = await up.next()
            up.complete = True
            if msg.finish_reason == "abort":
                raise UpstreamError("the engine aborted the request")
            tail = head + enc.finish(msg.finish_reason, msg.text)
            if self.req.include_usage:
                u = msg.usage
                tail += enc.usage(u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens)
            self.gateway.observe_tokens(msg.usage.prompt_tokens, msg.usage.completion_tokens)
        except grpc.aio.AioRpcError as exc:
            self.gateway.upstream_failed(up, exc)
            err = from_rpc_error(exc)
            self.status = err.status
            tail = head + sse.error_frame(err.message, err.type, err.code)
        except UpstreamError as err:
            self.status = err.status
            tail = head + sse.error_frame(err.message, err.type, err.code)
        self.finishing = True
        await send({"type": "http.response.body", "body": tail + sse.DONE, "more_body": False})

    async def _collect(self, up: Upstream, send: Any) -> None:
        parts: list[str] = []
        msg = up.first
        try:
            while True:
                if msg.text:
                    parts.append(msg.text)
                if msg.finish_reason:
                    break
                msg = await up.next()
        except grpc.aio.AioRpcError as exc:
            self.gateway.upstream_failed(up, exc)
            raise from_rpc_error(exc) from None
        up.complete = True
        if msg.finish_reason == "abort":
            raise UpstreamError("the engine aborted the request")
        u = msg.usage
        text = "".join(parts)
        choice: dict[str, Any]
        if self.req.kind == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": msg.finish_reason,
            }
        else:
            choice = {
                "index": 0,
                "text": text,
                "logprobs": None,
                "finish_reason": msg.finish_reason,
            }
        payload: dict[str, Any] = {
            "id": self.request_id,
            "object": "chat.completion" if self.req.kind == "chat" else "text_completion",
            "created": int(time.time()),
            "model": self.req.model,
        }
        if self.req.kind == "chat":
            payload["system_fingerprint"] = None
        payload["choices"] = [choice]
        payload["usage"] = sse.usage_dict(
            u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens
        )
        self.gateway.observe_tokens(u.prompt_tokens, u.completion_tokens)
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
