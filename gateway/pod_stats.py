"""A pod's /stats with several workers: each worker's own /stats, read over its Unix socket at
the moment of the request, and summed.

A worker opens its socket before it accepts its first request and removes it after its last
one has ended, so a worker without a socket holds nothing and adds nothing; a worker whose
socket is there but does not answer may hold requests, and then the pod's answer is an error
rather than a count that could be too low (the operator deletes a drained engine group only
when the gateways report nothing in flight on it).
"""

from __future__ import annotations

import http.client
import os
import socket
from collections.abc import Sequence
from typing import Any

import orjson

from scaleserve.latency import merge, parse_report

WORKER_TIMEOUT_S = 10.0


class WorkerSilentError(RuntimeError):
    """A worker that may hold requests did not answer."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def worker_get(path: str, route: str, timeout: float = WORKER_TIMEOUT_S) -> tuple[int, bytes]:
    """GET `route` from the worker whose internal socket is `path`."""
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("GET", route)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def read_workers(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Every serving worker's /stats; raises WorkerSilentError if one may hold requests but
    does not answer."""
    found = []
    for path in paths:
        if not os.path.exists(path):
            continue  # starting or gone: it holds no request
        try:
            status, body = worker_get(path, "/stats")
        except FileNotFoundError:
            continue  # gone between the check and the connect
        except OSError as exc:
            raise WorkerSilentError(f"worker {os.path.basename(path)}: {exc}") from None
        if status != 200:
            raise WorkerSilentError(f"worker {os.path.basename(path)}: /stats answered {status}")
        found.append(orjson.loads(body))
    return found


def merge_stats(workers: Sequence[dict[str, Any]], window_s: float) -> dict[str, Any]:
    """The pod's /stats from its workers': counts, time-weighted means and latency histograms
    add up (quantiles would not, hence histograms in the contract); a replica
    is healthy and serving for the pod only if it is for every worker (a worker that has not
    yet probed it would refuse its requests), terminating if any worker sees it so."""
    replicas: dict[str, dict[str, Any]] = {}
    for stats in workers:
        for rep in stats["replicas"]:
            merged = replicas.get(rep["address"])
            if merged is None:
                replicas[rep["address"]] = dict(rep)
                continue
            merged["in_flight"] += rep["in_flight"]
            merged["tensor_parallel"] = max(merged["tensor_parallel"], rep["tensor_parallel"])
            merged["healthy"] = merged["healthy"] and rep["healthy"]
            merged["serving"] = merged["serving"] and rep["serving"]
            merged["terminating"] = merged["terminating"] or rep["terminating"]
    for address, merged in replicas.items():
        if sum(any(r["address"] == address for r in s["replicas"]) for s in workers) < len(workers):
            merged["healthy"] = merged["serving"] = False  # unknown to some worker
    return {
        "in_flight": sum(s["in_flight"] for s in workers),
        "in_flight_avg": round(sum(s["in_flight_avg"] for s in workers), 4),
        "window_s": window_s,
        "queued": sum(s["queued"] for s in workers),
        "held": sum(s["held"] for s in workers),
        "requests_total": sum(s["requests_total"] for s in workers),
        "workers": len(workers),
        "replicas": list(replicas.values()),
        "latency": [
            d.to_json() for d in merge(e for s in workers for e in parse_report(s.get("latency")))
        ],
    }
