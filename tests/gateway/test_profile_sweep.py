"""`scaleserve profile` measures a real engine behind a real gateway and writes a profile the
format accepts: one point per level, with sane latencies and throughput."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scaleserve.profiles import parse_profile
from tests.fixtures.engines import REPO_ROOT, EngineProcess

from .conftest import GatewayFactory

pytestmark = pytest.mark.gateway


def test_a_sweep_through_the_gateway_writes_a_profile_of_the_tiny_model(
    gateway_factory: GatewayFactory, engine_replica: EngineProcess, tmp_path: Path
) -> None:
    gateway = gateway_factory([engine_replica])
    out = tmp_path / "tiny.yaml"
    argv = [
        sys.executable, "-m", "scaleserve", "profile",
        "--url", gateway.url,
        "--stats-url", gateway.internal_url + "/stats",
        "--gpu", "cpu",
        "--engine", "vllm-cpu",
        "--startup-seconds", "20",
        "--concurrency", "1,4",
        "--duration", "3",
        "--input-tokens", "64",
        "--output-tokens", "16",
        "-o", str(out),
    ]  # fmt: skip
    run = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "concurrency 4:" in run.stderr  # progress per level

    profile = parse_profile(out.read_text())
    assert profile.model == "tiny"
    assert profile.provenance.source == "sweep"
    assert (profile.workload.input_tokens, profile.workload.output_tokens) == (64, 16)
    degree = profile.degree(1)  # one replica of TP1, read from the gateway's /stats
    assert degree is not None
    assert [p.concurrency for p in degree.points] == [1, 4]
    for point in degree.points:
        assert point.ttft_p99_ms is not None
        assert point.tbt_p99_ms is not None
        assert point.output_tokens_per_s is not None
        assert 0 < point.ttft_ms <= point.ttft_p99_ms < 60_000
        assert 0 < point.tbt_ms <= point.tbt_p99_ms < 10_000
        assert point.output_tokens_per_s > 0
    # the gateway counted every request the sweep sent, the warm-up included
    assert gateway.stats()["requests_total"] >= 1 + 1 + 4
