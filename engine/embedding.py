"""Embed calls on vLLM's pooling runner: a batch of token-id lists in, float32 vectors out.

Each input is one vLLM pooling request (`AsyncLLM.encode`), all submitted at once so the
scheduler batches them; cancelling the call cancels every one of them, which aborts them in
vLLM.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from vllm import PoolingParams

from scaleserve.engine.embed_requests import PreparedEmbed
from scaleserve.engine.lifecycle import Runtime
from scaleserve.engine.proto import engine_pb2


async def embed(
    runtime: Runtime, prepared: PreparedEmbed, request_id: str
) -> engine_pb2.EmbedResponse:
    """The EmbedResponse for a validated request (vLLM's errors propagate)."""
    engine = runtime.engine
    inputs = engine.renderer.render_cmpl([{"prompt_token_ids": ids} for ids in prepared.inputs])
    tasks = [
        asyncio.ensure_future(
            _encode_one(runtime, engine_input, prepared.dimensions, f"{request_id}-{index}")
        )
        for index, engine_input in enumerate(inputs)
    ]
    try:
        outputs = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:  # one input failed, or the call was cancelled: abort the rest
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    response = engine_pb2.EmbedResponse(embeddings=outputs)
    response.prompt_tokens = sum(e.prompt_tokens for e in outputs)
    return response


async def _encode_one(
    runtime: Runtime, engine_input: Any, dimensions: int | None, request_id: str
) -> engine_pb2.Embedding:
    params = PoolingParams(task="embed", dimensions=dimensions)
    final = None
    async for out in runtime.engine.encode(engine_input, params, request_id):
        runtime.progress()
        final = out
    assert final is not None  # encode() ends with the finished output
    vector = final.outputs.data.float().numpy().astype("<f4", copy=False)
    return engine_pb2.Embedding(
        vector=np.ascontiguousarray(vector).tobytes(),
        prompt_tokens=len(final.prompt_token_ids or ()),
    )
