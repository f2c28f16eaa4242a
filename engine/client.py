"""A small asyncio client for one engine: tools, tests and benchmarks use it.

It holds one long-lived channel (HTTP/2 multiplexes every call over it).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from scaleserve.engine.proto import engine_pb2, engine_pb2_grpc

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 256 * 1024 * 1024),  # ModelInfo's tokenizer files
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]
Status = engine_pb2.HealthResponse.Status


@dataclass
class Completion:
    """A whole Generate stream gathered: what tests compare."""

    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = ""
    stop_reason: str = ""
    usage: engine_pb2.Usage | None = None
    messages: int = 0


def sampling(**fields: Any) -> engine_pb2.SamplingParams:
    """SamplingParams from keyword arguments (`stop`, `stop_token_ids` take sequences)."""
    return engine_pb2.SamplingParams(**fields)


def generate_request(
    prompt: Sequence[int] | str, request_id: str = "", **sampling_fields: Any
) -> engine_pb2.GenerateRequest:
    params = sampling(**sampling_fields)
    if isinstance(prompt, str):
        return engine_pb2.GenerateRequest(
            request_id=request_id, prompt_text=prompt, sampling=params
        )
    return engine_pb2.GenerateRequest(
        request_id=request_id,
        prompt_token_ids=engine_pb2.TokenIds(ids=list(prompt)),
        sampling=params,
    )


async def read_rest(call: Any) -> list[engine_pb2.GenerateResponse]:
    """The remaining messages of a Generate call that was read with `read()` so far."""
    messages = []
    while (message := await call.read()) is not grpc.aio.EOF:  # type: ignore[attr-defined]
        messages.append(message)
    return messages


class EngineClient:
    def __init__(self, address: str) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
        self.stub = engine_pb2_grpc.EngineStub(self.channel)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> EngineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close(grace=None)

    def stream(self, request: engine_pb2.GenerateRequest) -> Any:
        """The raw Generate call (iterate it; `.cancel()` cancels it)."""
        return self.stub.Generate(request)

    async def generate(
        self, prompt: Sequence[int] | str, request_id: str = "", **sampling_fields: Any
    ) -> Completion:
        result = Completion()
        call = self.stub.Generate(generate_request(prompt, request_id, **sampling_fields))
        async for message in call:
            result.text += message.text
            result.token_ids.extend(message.token_ids)
            result.messages += 1
            if message.finish_reason:
                result.finish_reason = message.finish_reason
                result.stop_reason = message.stop_reason
                result.usage = message.usage
        return result

    async def deltas(
        self, prompt: Sequence[int] | str, request_id: str = "", **sampling_fields: Any
    ) -> AsyncIterator[engine_pb2.GenerateResponse]:
        async for message in self.stub.Generate(
            generate_request(prompt, request_id, **sampling_fields)
        ):
            yield message

    async def abort(self, request_id: str) -> bool:
        response = await self.stub.Abort(engine_pb2.AbortRequest(request_id=request_id))
        return bool(response.found)

    async def health(self, rpc_timeout_s: float = 5.0) -> engine_pb2.HealthResponse:
        response: engine_pb2.HealthResponse = await self.stub.Health(
            engine_pb2.HealthRequest(), timeout=rpc_timeout_s
        )
        return response

    async def stats(self) -> engine_pb2.StatsResponse:
        response: engine_pb2.StatsResponse = await self.stub.Stats(
            engine_pb2.StatsRequest(), timeout=5.0
        )
        return response

    async def model_info(self) -> engine_pb2.ModelInfoResponse:
        response: engine_pb2.ModelInfoResponse = await self.stub.ModelInfo(
            engine_pb2.ModelInfoRequest(), timeout=30.0
        )
        return response

    async def wait_serving(self, within_s: float) -> None:
        """Wait until Health is SERVING; raise TimeoutError with the last status otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        last = "no answer"
        while loop.time() < deadline:
            try:
                health = await self.health(rpc_timeout_s=2.0)
                if health.status == Status.SERVING:
                    return
                last = f"{Status.Name(health.status)}: {health.message}"
            except grpc.aio.AioRpcError as exc:
                last = f"{exc.code().name}: {exc.details()}"
            await asyncio.sleep(0.2)
        raise TimeoutError(f"engine at {self.address} not serving after {within_s}s ({last})")
