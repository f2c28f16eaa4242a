"""A synthetic engine for gateway benchmarks: the scaleserve engine protocol, no model.

It speaks `scaleserve.engine.v1.Engine` like the real engine but generates nothing: each
Generate call emits one token every 1/rate seconds (a fixed rate per stream, after an optional
first-token delay), coalescing the tokens that fell due into one message when the consumer is
behind, as the real engine does. ModelInfo serves the tokenizer files of a real model directory
(by default the tiny test model), so a gateway in front of it tokenizes for real.

    python benchmarks/synthetic_engine.py --port 50061 --tokens-per-s 500

With --tokens-per-s 0 it sends one token per message as fast as the reader takes them (flow
control paces it), which measures relay throughput in messages, not in coalesced batches.

It is only a benchmark instrument, named synthetic everywhere; tests of the engine use vLLM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from pathlib import Path

import grpc

from scaleserve.engine.proto import engine_pb2, engine_pb2_grpc

WORDS = [" the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog", ".", " A"]
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "generation_config.json",
)


class SyntheticEngine(engine_pb2_grpc.EngineServicer):  # type: ignore[misc]
    def __init__(
        self,
        model_dir: Path,
        served_name: str,
        tokens_per_s: float,
        first_token_delay_s: float,
        default_max_tokens: int,
        tensor_parallel: int,
    ) -> None:
        self.interval = 1.0 / tokens_per_s if tokens_per_s > 0 else 0.0
        self.first_delay = first_token_delay_s
        self.default_max_tokens = default_max_tokens
        files = {
            n: (model_dir / n).read_bytes() for n in TOKENIZER_FILES if (model_dir / n).exists()
        }
        config = json.loads(files.get("tokenizer_config.json", b"{}") or b"{}")
        self.info = engine_pb2.ModelInfoResponse(
            served_model_name=served_name,
            model_path=str(model_dir),
            tokenizer_path=str(model_dir),
            chat_template=config.get("chat_template", ""),
            max_model_len=1 << 20,
            tensor_parallel_size=tensor_parallel,
            eos_token_ids=[2],
            vocab_size=1 << 20,
            tokenizer_files=files,
            protocol_version="v1",
        )
        self.in_flight = 0
        self.requests_total = 0
        self.aborted_total = 0
        self.generated_total = 0

    async def Generate(self, request, context):  # noqa: N802
        self.in_flight += 1
        self.requests_total += 1
        sampling = request.sampling
        max_tokens = (
            sampling.max_tokens if sampling.HasField("max_tokens") else self.default_max_tokens
        )
        prompt_tokens = len(request.prompt_token_ids.ids)
        loop = asyncio.get_running_loop()
        start = loop.time() + self.first_delay
        sent = 0
        finished = False
        try:
            if not self.interval:  # burst: one token per message, as fast as it is read
                if self.first_delay:
                    await asyncio.sleep(self.first_delay)
                while sent < max_tokens:
                    msg = engine_pb2.GenerateResponse(
                        text=WORDS[sent % len(WORDS)], token_ids=(sent,)
                    )
                    sent += 1
                    if sent >= max_tokens:
                        msg.finish_reason = "length"
                        msg.usage.prompt_tokens = prompt_tokens
                        msg.usage.completion_tokens = sent
                    await context.write(msg)
            while sent < max_tokens:
                now = loop.time()
                due = min(max_tokens, int((now - start) / self.interval) + 1) if now >= start else 0
                if due <= sent:
                    await asyncio.sleep(start + sent * self.interval - now)
                    continue
                n = due - sent
                text = "".join(WORDS[(sent + i) % len(WORDS)] for i in range(n))
                msg = engine_pb2.GenerateResponse(text=text, token_ids=range(sent, sent + n))
                sent = due
                if sent >= max_tokens:
                    msg.finish_reason = "length"
                    msg.usage.prompt_tokens = prompt_tokens
                    msg.usage.completion_tokens = sent
                await context.write(msg)
            finished = True
        finally:
            self.in_flight -= 1
            self.generated_total += sent
            if not finished:
                self.aborted_total += 1

    async def Abort(self, request, context):  # noqa: N802
        return engine_pb2.AbortResponse(found=False)

    async def Health(self, request, context):  # noqa: N802
        return engine_pb2.HealthResponse(status=engine_pb2.HealthResponse.SERVING)

    async def Stats(self, request, context):  # noqa: N802
        return engine_pb2.StatsResponse(
            served_model_name=self.info.served_model_name,
            max_model_len=self.info.max_model_len,
            tensor_parallel_size=self.info.tensor_parallel_size,
            in_flight_requests=self.in_flight,
            running_requests=self.in_flight,
            requests_total=self.requests_total,
            aborted_total=self.aborted_total,
            generated_tokens_total=self.generated_total,
        )

    async def ModelInfo(self, request, context):  # noqa: N802
        return self.info


async def serve(args: argparse.Namespace) -> None:
    server = grpc.aio.server(
        options=[("grpc.max_send_message_length", 256 * 1024 * 1024)],
    )
    engine = SyntheticEngine(
        Path(args.model),
        args.served_name,
        args.tokens_per_s,
        args.first_token_delay_ms / 1000.0,
        args.max_tokens,
        args.tensor_parallel_size,
    )
    engine_pb2_grpc.add_EngineServicer_to_server(engine, server)
    port = server.add_insecure_port(f"{args.host}:{args.port}")
    await server.start()
    print(f"synthetic engine listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1.0)


def default_model() -> str:
    from scaleserve.engine.tiny_model import default_model_dir, make_tiny_model

    directory = default_model_dir()
    make_tiny_model(directory)
    return str(directory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50061)
    parser.add_argument("--model", default="", help="model dir with tokenizer files (tiny model)")
    parser.add_argument("--served-name", default="synthetic")
    parser.add_argument(
        "--tokens-per-s", type=float, default=500.0, help="per stream; 0: one per message, unpaced"
    )
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--max-tokens", type=int, default=128, help="when the request sets none")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    args = parser.parse_args()
    if not args.model:
        args.model = default_model()
    if args.uvloop:
        import uvloop

        uvloop.install()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args))


if __name__ == "__main__":
    main()
