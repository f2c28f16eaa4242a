"""A gateway pod with two worker processes: requests succeed, the internal port reports the
pod's sums (in flight now, per replica, request and token counters) while streams are open
on both workers, SIGTERM still drains every stream to a clean end, and a rotated API key
reaches every worker."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaleserve.latency import count, parse_report
from tests.fixtures.engines import EngineProcess
from tests.gateway.conftest import MODEL, GatewayFactory
from tests.gateway.test_protection import until
from tests.gateway.test_shutdown import assert_each_ended_cleanly, sigterm_mid_answer

pytestmark = pytest.mark.gateway

STREAMS = 12
ANSWERS = 6
MAX_TOKENS = 3


def metric(text: str, name: str) -> float:
    """A sample's value in a Prometheus exposition (0 when absent)."""
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_two_workers_serve_sum_their_stats_and_drain_on_sigterm(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    gw = gateway_factory(
        engine_replicas, "--workers", "2", "--routing", "round-robin", "--drain-timeout", "3"
    )
    body = {"model": MODEL, "prompt": "two workers", "max_tokens": MAX_TOKENS, "ignore_eos": True}
    with ThreadPoolExecutor(ANSWERS) as pool:  # a connection each: the kernel spreads them
        answers = list(
            pool.map(
                lambda _: httpx.post(gw.base_url + "/completions", json=body, timeout=120),
                range(ANSWERS),
            )
        )
    assert [a.status_code for a in answers] == [200] * ANSWERS, [a.text for a in answers]
    stats = gw.stats()
    assert stats["workers"] == 2
    assert stats["requests_total"] == ANSWERS
    # the workers' latency histograms add up to every request's (the operator reads the sum)
    (tp1,) = parse_report(stats["latency"])
    assert tp1.tensor_parallel == 1
    assert count(tp1.ttft_ms) == count(tp1.tbt_ms) == ANSWERS
    metrics = httpx.get(gw.internal_url + "/metrics", timeout=15).text
    ok = 'scaleserve_gateway_requests_total{route="completions",status="200"}'
    assert metric(metrics, ok) == ANSWERS, metrics
    completion = 'scaleserve_gateway_tokens_total{kind="completion"}'
    assert metric(metrics, completion) == ANSWERS * MAX_TOKENS

    def inspect(stats: dict[str, Any]) -> None:
        assert stats["in_flight"] == STREAMS
        placed = {r["address"]: r["in_flight"] for r in stats["replicas"]}
        assert sum(placed.values()) == STREAMS  # what the operator's drain reads, summed
        metrics = httpx.get(gw.internal_url + "/metrics", timeout=15).text
        assert metric(metrics, "scaleserve_gateway_in_flight") == STREAMS

    results, exit_code = sigterm_mid_answer(gw, engine_replicas, STREAMS, inspect)
    assert_each_ended_cleanly(results)
    assert exit_code == 0, gw.log_tail()


def test_each_worker_takes_a_rotated_api_key_without_a_restart(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess], tmp_path: Path
) -> None:
    (tmp_path / "key-a").write_text("sk-first\n")
    gw = gateway_factory(engine_replicas, "--workers", "2", "--api-key-file", str(tmp_path))
    body = {"model": MODEL, "prompt": "keys", "max_tokens": 1}

    def statuses(key: str) -> set[int]:
        """Over fresh connections, which the kernel spreads over both workers."""
        headers = {"authorization": f"Bearer {key}"}
        return {
            httpx.post(
                gw.base_url + "/completions", json=body, headers=headers, timeout=60
            ).status_code
            for _ in range(8)
        }

    assert statuses("sk-first") == {200}
    (tmp_path / "key-b").write_text("sk-rotated\n")
    assert until(lambda: statuses("sk-rotated") == {200})
    (tmp_path / "key-a").unlink()
    assert until(lambda: statuses("sk-first") == {401})
    assert statuses("sk-rotated") == {200}
