"""A gateway pod with two worker processes: requests succeed, the internal port reports the
pod's sums (in flight now, per replica, request and token counters) while streams are open
on both workers, SIGTERM still drains every stream to a clean end, and a rotated API key
reaches every worker; a worker killed outright is started again while the other serves."""

from __future__ import annotations

import os
import re
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from scaleserve.gateway.workers import STARTUP_FAILURE_S
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


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's gateway workers (its other child, multiprocessing's resource tracker,
    is not one)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            spawned = b"spawn_main" in (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if ppid == supervisor and spawned:
            pids.append(int(stat.parent.name))
    return sorted(pids)


def age_s(pid: int) -> float:
    started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - started / os.sysconf("SC_CLK_TCK")


def test_a_killed_worker_is_started_again_and_the_pod_keeps_serving(
    gateway_factory: GatewayFactory, engine_replicas: list[EngineProcess]
) -> None:
    gw = gateway_factory(engine_replicas, "--workers", "2")
    pod = gw.process.pid
    assert until(lambda: len(worker_pids(pod)) == 2, 60), gw.log_tail()
    killed, survivor = worker_pids(pod)
    # a worker dying this young counts as failing to start, which stops the pod instead
    assert until(lambda: age_s(killed) > STARTUP_FAILURE_S + 1, 60)
    body = {"model": MODEL, "prompt": "a worker dies", "max_tokens": 2}

    def answered() -> int:
        """Over a fresh connection, which either worker may take."""
        return httpx.post(gw.base_url + "/completions", json=body, timeout=60).status_code

    os.kill(killed, signal.SIGKILL)
    assert answered() == 200  # the survivor serves meanwhile

    def restarted() -> bool:
        workers = worker_pids(pod)
        return len(workers) == 2 and killed not in workers and survivor in workers

    assert until(restarted, 60), gw.log_tail()

    def both_answer() -> bool:
        """The pod's /stats counts the workers that answer it: the new one too, once up."""
        response = httpx.get(gw.internal_url + "/stats", timeout=15)
        return response.status_code == 200 and response.json()["workers"] == 2

    assert until(both_answer, 60), gw.log_tail()
    assert [answered() for _ in range(8)] == [200] * 8
    assert gw.process.poll() is None
    assert re.search(r"worker \d exited with -9; starting it again", gw.log_tail(200))
