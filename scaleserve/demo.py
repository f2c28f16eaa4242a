"""`scaleserve demo`: the local stack on the tiny model, one streamed answer.

Starts one engine (real vLLM on the CPU) and one gateway in front of it on loopback, waits for
both to be ready with visible progress, streams a chat completion through the gateway with the
official `openai` client, and stops both processes again.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scaleserve.dev.processes import http_ok

READY_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(name: str, url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    start = time.monotonic()
    last_report = 0.0
    while not http_ok(url):
        elapsed = time.monotonic() - start
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; log:\n{tail(log)}")
        if elapsed > READY_TIMEOUT_S:
            raise RuntimeError(f"{name} not ready after {READY_TIMEOUT_S:.0f}s; log:\n{tail(log)}")
        if elapsed - last_report >= 5:
            print(f"    waiting for {name} ({elapsed:.0f}s) ...", flush=True)
            last_report = elapsed
        time.sleep(0.5)
    print(f"==> {name} ready in {time.monotonic() - start:.1f}s", flush=True)


def tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@contextlib.contextmanager
def process(cmd: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(args: argparse.Namespace) -> int:
    from scaleserve.engine.tiny_model import default_model_dir, make_tiny_model

    model = Path(args.model) if args.model else make_tiny_model(default_model_dir())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
    engine_port, metrics_port, gateway_port = free_port(), free_port(), free_port()
    exe = [sys.executable, "-m", "scaleserve"]
    with tempfile.TemporaryDirectory(prefix="scaleserve-demo-") as tmp:
        logs = Path(tmp)
        engine_cmd = [
            *exe, "engine", "--model", str(model), "--served-name", args.served_name,
            "--host", "127.0.0.1", "--port", str(engine_port),
            "--metrics-port", str(metrics_port), "--dtype", args.dtype,
            "--max-model-len", "1024",
        ]  # fmt: skip
        gateway_cmd = [
            *exe, "gateway", "--host", "127.0.0.1", "--port", str(gateway_port),
            "--replicas", f"127.0.0.1:{engine_port}",
        ]  # fmt: skip
        print(f"==> starting engine on 127.0.0.1:{engine_port} (vLLM on the CPU, {model.name})")
        with process(engine_cmd, logs / "engine.log", env) as engine:
            wait_ready(
                "engine", f"http://127.0.0.1:{metrics_port}/readyz", engine, logs / "engine.log"
            )
            print(f"==> starting gateway on 127.0.0.1:{gateway_port}")
            with process(gateway_cmd, logs / "gateway.log", env) as gateway:
                url = f"http://127.0.0.1:{gateway_port}"
                wait_ready("gateway", f"{url}/readyz", gateway, logs / "gateway.log")
                print(f"==> gateway URL: {url}/v1")
                stream_answer(f"{url}/v1", args.served_name, args.prompt, args.max_tokens)
    return 0


def stream_answer(base_url: str, model: str, prompt: str, max_tokens: int) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="unused")
    print(f"==> POST /v1/chat/completions (stream): {prompt!r}")
    start = time.monotonic()
    first: float | None = None
    chunks = 0
    stream: Any = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                first = first or time.monotonic()
                chunks += 1
                print(choice.delta.content, end="", flush=True)
    total = time.monotonic() - start
    print()
    ttft = f"{(first - start) * 1000:.0f} ms" if first else "n/a"
    tokens = usage.completion_tokens if usage else chunks
    print(f"==> streamed {tokens} tokens in {total:.2f}s (time to first token {ttft})")
    print("    (random weights: the text is noise; the path is the real one)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run an engine and a gateway locally on the tiny model; stream one answer"
    )
    parser.add_argument("--model", help="model directory (default: the tiny test model)")
    parser.add_argument("--served-name", default="tiny-llama")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prompt", default="Write a short poem about the sea.")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.set_defaults(run=run)
