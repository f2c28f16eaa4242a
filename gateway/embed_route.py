"""POST /v1/embeddings: admission, tokenization, one unary Embed call to a replica, one JSON body.

The request takes the generation routes' admission queue and holding (an endpoint scaled to
zero), and the same routing policy over the same pooled channels; the whole batch goes to one
replica. A failure before an answer is tried once more on another replica, as for generation;
a client that disconnects cancels the call, which aborts the engine's requests.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import grpc

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.dispatch import RetryElsewhere, on_a_replica
from scaleserve.gateway.embed_protocol import EmbeddingRequest, embedding_body, parse_embedding
from scaleserve.gateway.errors import (
    ClientDisconnectedError,
    EngineTimeoutError,
    GatewayError,
    InvalidRequestError,
    NotImplementedByEngineError,
    ShuttingDownError,
)
from scaleserve.gateway.models import Model
from scaleserve.gateway.pool import Replica
from scaleserve.gateway.protocol import parse_json
from scaleserve.gateway.responses import (
    JSON_HEADERS,
    error_response_messages,
    unless_client_leaves,
)

if TYPE_CHECKING:
    from scaleserve.gateway.app import GatewayApp
    from scaleserve.gateway.service import Gateway

ROUTE = "embeddings"  # the metrics' route label


def tokenize(model: Model, req: EmbeddingRequest) -> list[list[int]]:
    """Token ids per input, checked against the model's vocabulary and context length."""
    if model.task != "embed":
        raise NotImplementedByEngineError("The model does not support Embeddings API")
    tok = model.tokenizer
    result = []
    for item in req.inputs:
        ids = tok.encode(item) if isinstance(item, str) else list(item)
        if model.vocab_size and max(ids) >= model.vocab_size:
            raise InvalidRequestError(
                f"token ids in 'input' must be below the vocabulary size {model.vocab_size}",
                param="input",
                code="invalid_value",
            )
        limit = model.max_model_len
        if limit and len(ids) > limit:
            raise InvalidRequestError(
                f"This model's maximum context length is {limit} tokens. However, your prompt "
                f"contains {len(ids)} input tokens, which exceeds this limit even without any "
                f"output tokens. Please reduce the length of the input prompt.",
                param="input",
                code="context_length_exceeded",
            )
        result.append(ids)
    return result


async def call_embed(
    gateway: Gateway, model: Model, inputs: list[list[int]], request: engine_pb2.EmbedRequest
) -> engine_pb2.EmbedResponse:
    """The Embed call on a replica of `model` the policy picks; one retry elsewhere."""
    timeout = gateway.settings.first_token_timeout
    metadata = (("x-request-id", request.request_id),)

    async def attempt(replica: Replica) -> engine_pb2.EmbedResponse:
        gateway.pool.acquire(replica)
        try:
            response: engine_pb2.EmbedResponse = await replica.stub.Embed(
                request, metadata=metadata, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
            gateway.pool.report_stall(replica, "no embeddings within the timeout")
            raise RetryElsewhere(
                EngineTimeoutError(f"the engine sent no embeddings within {timeout:g}s")
            ) from None
        finally:
            gateway.pool.release(replica)
        replica.outputs += 1  # proof of life for the replica's probe
        return response

    return await on_a_replica(gateway, model.key, inputs[0], attempt)


class EmbeddingsRoute:
    """The route's ASGI handler; `app` supplies body reading, admission and holding."""

    def __init__(self, app: GatewayApp) -> None:
        self.app = app
        self.gateway = app.gateway

    async def __call__(self, scope: Any, receive: Any, send: Any, request_id: str) -> None:
        app, gateway = self.app, self.gateway
        arrived = time.perf_counter()
        admitted = False
        status = 200
        try:
            if gateway.draining:
                raise ShuttingDownError(
                    "the gateway is shutting down; retry", headers={"connection": "close"}
                )
            raw = await app.read_body(scope, receive)
            await app.admit(receive)
            admitted = True
            req = parse_embedding(parse_json(raw))
            model = gateway.lookup(req.model)
            if model is None:  # scaled to zero, or all starting
                admitted = False
                model = await app.hold(req.model, receive)
                admitted = True
            body = await self._embed(req, model, receive, request_id)
            headers = [*JSON_HEADERS, (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        except GatewayError as err:
            status = err.status
            start, error_body = error_response_messages(err)
            await send(start)
            await send(error_body)
        except ClientDisconnectedError:
            status = 499
            gateway.metrics_disconnect()
        finally:
            if admitted:
                gateway.admission.release()
            gateway.observe(ROUTE, status, arrived)

    async def _embed(
        self, req: EmbeddingRequest, model: Model, receive: Any, request_id: str
    ) -> bytes:
        gateway = self.gateway
        inputs = tokenize(model, req)
        request = engine_pb2.EmbedRequest(
            request_id=request_id, inputs=[engine_pb2.TokenIds(ids=ids) for ids in inputs]
        )
        if req.dimensions is not None:
            request.dimensions = req.dimensions
        gateway.requests_total += 1
        gateway.in_flight.add(1)
        try:
            response = await unless_client_leaves(
                call_embed(gateway, model, inputs, request), receive
            )
        finally:
            gateway.in_flight.add(-1)
        gateway.metrics.tokens.labels("prompt").inc(response.prompt_tokens)
        vectors = [e.vector for e in response.embeddings]
        return embedding_body(req.model, vectors, response.prompt_tokens, req.encoding_format)
