"""Fixtures for gateway tests: real engines (tests/fixtures/engines.py) behind real gateways.

Gateways run as `scaleserve gateway` processes, started per configuration and shared for the
session; engines are the session's shared pair unless a test needs one it may destroy.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from scaleserve.engine.proto import engine_pb2, engine_pb2_grpc
from tests.fixtures.engines import (
    REPO_ROOT,
    EngineProcess,
    engine_launcher,
    engine_replica,
    engine_replicas,
    free_port,
    tiny_model_dir,
)

__all__ = [
    "engine_launcher",
    "engine_replica",
    "engine_replicas",
    "tiny_model_dir",
]

MODEL = "tiny"
START_TIMEOUT_S = 60.0


@dataclass
class GatewayProcess:
    port: int
    internal_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    @property
    def internal_url(self) -> str:
        return f"http://127.0.0.1:{self.internal_port}"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stats(self) -> dict:
        response = httpx.get(self.internal_url + "/stats", timeout=15)
        response.raise_for_status()  # a pod with a worker not answering says 503
        return response.json()  # type: ignore[no-any-return]

    def wait_in_flight(self, n: int, timeout_s: float = 60) -> None:
        """Until the gateway holds `n` requests (placed on replicas, answered or not); fails
        if it does not within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (held := self.stats()["in_flight"]) < n:
            assert time.monotonic() < deadline, f"{held} of {n} requests in flight"
            time.sleep(0.02)

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S, replicas: int = 1) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gateway exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    serving = [r for r in self.stats()["replicas"] if r["serving"]]
                    if len(serving) >= replicas:
                        return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        pytest.fail(f"gateway not ready after {timeout_s}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


GatewayFactory = Callable[..., GatewayProcess]


@pytest.fixture(scope="session")
def gateway_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    started: list[GatewayProcess] = []
    log_dir = tmp_path_factory.mktemp("gateways")

    def start(
        replicas: list[EngineProcess] | list[str], *args: str, ready: int = 0
    ) -> GatewayProcess:
        addresses = [r if isinstance(r, str) else r.address for r in replicas]
        port, internal_port = free_port(), free_port()
        log_path = log_dir / f"gateway-{len(started)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "scaleserve",
                    "gateway",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--internal-port",
                    str(internal_port),
                    "--replicas",
                    ",".join(addresses),
                    "--health-interval",
                    "0.25",
                    # a shared 2-core machine can delay a probe's answer by seconds: only the
                    # tests about unresponsive replicas set a short timeout (args come later)
                    "--health-timeout",
                    "10",
                    *args,
                ],
                cwd=REPO_ROOT,
                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        gw = GatewayProcess(port, internal_port, process, log_path)
        started.append(gw)
        gw.wait_ready(replicas=ready or len(addresses))
        return gw

    try:
        yield start
    finally:
        for gw in started:
            gw.stop()


@pytest.fixture(scope="session")
def gateway(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> GatewayProcess:
    """The default gateway (least-in-flight) over the two shared engines."""
    return gateway_factory(engine_replicas)


def engine_stats(address: str) -> engine_pb2.StatsResponse:
    with grpc.insecure_channel(address) as channel:
        stub = engine_pb2_grpc.EngineStub(channel)  # type: ignore[no-untyped-call]
        response: engine_pb2.StatsResponse = stub.Stats(engine_pb2.StatsRequest(), timeout=5)
        return response


def engine_generate_text(address: str, prompt_ids: list[int], max_tokens: int) -> str:
    """Greedy output straight from an engine, for comparison with what the gateway relays."""
    with grpc.insecure_channel(address) as channel:
        stub = engine_pb2_grpc.EngineStub(channel)  # type: ignore[no-untyped-call]
        request = engine_pb2.GenerateRequest(
            request_id=os.urandom(8).hex(),
            prompt_token_ids=engine_pb2.TokenIds(ids=prompt_ids),
            sampling=engine_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens),
        )
        return "".join(m.text for m in stub.Generate(request, timeout=60))
