"""Several workers per pod: the per-pod limits divided, the pod's /stats summed from the
workers' own, read over their Unix sockets (threads and sockets, no engine)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from scaleserve.gateway.internal import InternalServer
from scaleserve.gateway.pod_stats import WorkerSilentError, merge_stats, read_workers
from scaleserve.gateway.settings import GatewaySettings, SettingsError, worker_share
from scaleserve.gateway.workers import worker_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("total", "workers"), [(1024, 2), (1024, 3), (7, 4), (100, 1)])
def test_worker_shares_add_up_to_the_pod_limit(total: int, workers: int) -> None:
    shares = [worker_share(total, workers, i) for i in range(workers)]
    assert sum(shares) == total
    assert max(shares) - min(shares) <= 1


def test_unlimited_stays_unlimited_and_no_worker_gets_nothing() -> None:
    assert [worker_share(0, 3, i) for i in range(3)] == [0, 0, 0]
    assert [worker_share(2, 4, i) for i in range(4)] == [1, 1, 1, 1]  # 0 would mean unlimited


def test_each_worker_gets_its_share_of_the_admission_and_connection_limits() -> None:
    pod = GatewaySettings(max_concurrency=1000, max_queue=11, max_connections=8192, workers=2)
    first, second = worker_settings(pod, 0), worker_settings(pod, 1)
    assert (first.max_concurrency, second.max_concurrency) == (500, 500)
    assert (first.max_queue, second.max_queue) == (6, 5)
    assert first.max_connections + second.max_connections == 8192
    assert first.queue_timeout == pod.queue_timeout  # deadlines are not divided


@pytest.mark.parametrize("workers", [0, 65])
def test_worker_count_is_bounded(workers: int) -> None:
    with pytest.raises(SettingsError, match="workers"):
        GatewaySettings(workers=workers)


def worker_stats(in_flight: int, replicas: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "in_flight": in_flight,
        "in_flight_avg": in_flight / 2,
        "window_s": 30.0,
        "queued": 1,
        "held": in_flight % 2,
        "requests_total": 10 * in_flight,
        "replicas": replicas,
    }


def replica(address: str, in_flight: int, serving: bool = True) -> dict[str, Any]:
    return {
        "address": address,
        "tensor_parallel": 2,
        "in_flight": in_flight,
        "healthy": True,
        "serving": serving,
        "terminating": False,
    }


def test_the_pods_stats_are_the_sum_of_its_workers() -> None:
    a = worker_stats(3, [replica("e1:1", 2), replica("e2:1", 1)])
    b = worker_stats(4, [replica("e1:1", 4), replica("e2:1", 0, serving=False)])
    pod = merge_stats([a, b], 30.0)
    assert (pod["in_flight"], pod["in_flight_avg"], pod["queued"], pod["held"]) == (7, 3.5, 2, 1)
    assert (pod["requests_total"], pod["workers"]) == (70, 2)
    replicas = {r["address"]: r for r in pod["replicas"]}
    assert replicas["e1:1"]["in_flight"] == 6  # what the operator's drain waits on
    assert replicas["e1:1"]["serving"] is True
    assert replicas["e2:1"]["serving"] is False  # one worker would refuse it


def test_a_replica_one_worker_does_not_know_yet_is_not_serving_for_the_pod() -> None:
    pod = merge_stats([worker_stats(1, [replica("e1:1", 1)]), worker_stats(0, [])], 30.0)
    (only,) = pod["replicas"]
    assert only["in_flight"] == 1
    assert only["serving"] is False


@pytest.mark.asyncio
async def test_workers_stats_are_read_over_their_sockets(tmp_path: Path) -> None:
    paths = [str(tmp_path / f"worker-{i}.sock") for i in range(3)]
    servers = [
        InternalServer(
            "", 0, lambda n=n: worker_stats(n, []), lambda: b"", lambda: 0.0, path=paths[n]
        )
        for n in (1, 2)
    ]
    for server in servers:
        server.start()
    try:
        # the third worker has no socket: starting or gone, it holds nothing
        found = await asyncio.to_thread(read_workers, paths)
        assert sorted(s["in_flight"] for s in found) == [1, 2]
    finally:
        for server in servers:
            await server.stop()
    left = await asyncio.to_thread(lambda: [p for p in paths if os.path.exists(p)])
    assert left == []  # a stopped worker removes its socket


@pytest.mark.asyncio
async def test_a_worker_that_does_not_answer_fails_the_pods_stats(tmp_path: Path) -> None:
    path = str(tmp_path / "worker-0.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(path)  # there, but not listening: it may hold requests
        with pytest.raises(WorkerSilentError, match=r"worker-0\.sock"):
            await asyncio.to_thread(read_workers, [path])
