"""The dashboards' and alerts' PromQL against a real Prometheus scraping the local stack.

The stack's Prometheus (scaleserve/dev/prometheus.py) finds the pods through the API server (as
kubernetes_sd would label them) and the chart's PodMonitor relabelings, scrapes the operator, and
loads the chart's alerting rules.
Under a short load on a 1 x TP1 endpoint, every expression of the dashboards and the alerts must
return series (so metric names, labels and syntax are right), and every rule must evaluate
without error. An expression that selects nothing while all is well (an alert's condition, the
429 rate) is listed in QUIET with the reason, and its sibling, the same series without the
condition, must return series instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import pytest

from e2e.local.endpoints import apply_endpoint
from e2e.local.host import LocalStack
from e2e.local.layout import wait_until
from e2e.local.load import Load
from e2e.local.promql import ALERTS, Query, alert_queries, all_dashboard_queries, fill_variables
from scaleserve.dev import processes
from scaleserve.dev import prometheus as prom
from scaleserve.dev.watch import wait_endpoint_ready

pytestmark = pytest.mark.e2e
log = logging.getLogger("e2e")

NAME = "obs"
SELECTION = {"namespace": "default", "endpoint": NAME, "datasource": "prometheus"}
RATE_INTERVAL = "1m"
CLIENTS = 4
START_TIMEOUT_S = 600.0
EP = f'namespace="default", endpoint="{NAME}"'
# autoscaled (the operator reports observed concurrency only then) with one candidate layout,
# 1 x TP1, so the endpoint never reshapes
AUTOSCALING = {
    "gpuBudget": 1,
    "surgeGPUs": 0,
    "tensorParallelCandidates": [1],
    "concurrencyThresholds": [],
    "windowSeconds": 10,
}
# what must have been scraped before the expressions are evaluated
WARM = (
    f"sum(rate(scaleserve_gateway_requests_total{{{EP}}}[1m])) > 0",
    f"sum(rate(scaleserve_engine_requests_total{{{EP}}}[1m])) > 0",
    f"sum(rate(vllm:inter_token_latency_seconds_count{{{EP}}}[1m])) > 0",
    f'scaleserve_operator_endpoint_phase{{{EP}, phase="Ready"}} == 1',
    f"scaleserve_operator_endpoint_observed_concurrency{{{EP}}} > 0",
)

# where -> (sibling that must return series, why the expression itself may select nothing)
QUIET = {
    "endpoint.json: Queue and rejections [429/s]": (
        f"sum(rate(scaleserve_gateway_requests_total{{{EP}}}[1m]))",
        "4 clients never fill the gateway's queue: no 429 series; the same rate over every status",
    ),
    "endpoint.json: annotation Reshaping": (
        f"scaleserve_operator_endpoint_reshaping{{{EP}}}",
        "a static layout never reshapes: the gauge is 0",
    ),
    "endpoint.json: annotation Rollout": (
        f'scaleserve_operator_endpoint_phase{{{EP}, phase="Deploying"}}',
        "the endpoint is Ready by now: its Deploying phase gauge is 0",
    ),
    "alert ScaleserveEndpointNotReady": (
        'scaleserve_operator_endpoint_phase{phase=~"Pending|Deploying"}',
        "the endpoint is Ready: those phase gauges are 0",
    ),
    "alert ScaleserveEndpointDegraded": (
        'scaleserve_operator_endpoint_phase{phase="Degraded"}',
        "the endpoint is not Degraded: the gauge is 0",
    ),
    "alert ScaleserveReshapeStuck": (
        "scaleserve_operator_endpoint_reshaping",
        "no reshape: the gauge is 0",
    ),
    "alert ScaleserveRolloutStuck": (
        "max by (namespace, endpoint) (scaleserve_operator_endpoint_replicas)"
        " - max by (namespace, endpoint) (scaleserve_operator_endpoint_ready_replicas)",
        "every replica is ready: the difference is 0",
    ),
    "alert ScaleserveGatewayErrors": (
        "sum by (namespace, endpoint) (rate(scaleserve_gateway_requests_total[5m]))",
        "no request fails: no 5xx series; the denominator",
    ),
    "alert ScaleserveGatewayQueueFull": (
        "sum by (namespace, endpoint) (rate(scaleserve_gateway_requests_total[5m]))",
        "no 429 series at 4 clients; the denominator",
    ),
    "alert ScaleserveSlowFirstToken": (
        "histogram_quantile(0.99, sum by (namespace, endpoint, le)"
        " (rate(scaleserve_gateway_time_to_first_token_seconds_bucket[5m])))",
        "first tokens come well under 5 s: the quantile without the threshold",
    ),
    "alert ScaleserveEngineStalled": (
        "scaleserve_engine_in_flight_requests"
        " and increase(scaleserve_engine_generated_tokens_total[5m])",
        "the engine streams tokens: both sides of the condition, without it",
    ),
    "alert ScaleserveEngineNotServing": (
        "scaleserve_engine_serving",
        "the engine serves: the gauge is 1",
    ),
    "alert ScaleserveOperatorDown": (
        'up{component="operator"} == 1',
        "absent() is empty while the operator is scraped",
    ),
    "alert ScaleserveOperatorReconcileErrors": (
        "sum(rate(scaleserve_operator_reconciles_total[10m]))",
        "no pass fails: no error series; the denominator",
    ),
}


def test_alert_rules_pass_promtool_check() -> None:
    promtool = prom.binaries_dir() / "promtool"
    result = subprocess.run(
        [str(promtool), "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_queries())} rules found" in result.stdout


@pytest.fixture(scope="module")
def prometheus_url(local_stack: LocalStack) -> Iterator[str]:
    """The stack's Prometheus: the running one of a reused stack, else one for this module."""
    state = local_stack.state
    pid = state.pids.get("prometheus")
    if state.prometheus_url and pid is not None and processes.alive(pid):
        yield state.prometheus_url
        return
    url = local_stack.stack.start_prometheus(state, log.info)
    try:
        yield url
    finally:
        for name in ("prometheus", "prometheus-sd"):
            processes.stop(state.pids.pop(name), 10.0)


def _series(url: str, expr: str) -> int:
    return len(prom.query(url, expr))


async def _wait_series(url: str, expr: str, timeout_s: float = 120.0) -> None:
    try:
        await wait_until(lambda: _series(url, expr), expr, timeout_s)
    except TimeoutError as exc:
        targets = [
            (t["labels"].get("pod") or t["scrapeUrl"], t["health"], t["lastError"])
            for t in prom.active_targets(url)
        ]
        names = prom.query(url, f'count by (__name__) ({{endpoint="{NAME}"}})')
        seen = sorted(r["metric"]["__name__"] for r in names)
        raise AssertionError(f"{exc}\ntargets: {targets}\nseries of {NAME}: {seen}") from exc


def _rules(url: str) -> dict[str, str]:
    """Each loaded rule's health: ok once evaluated without error, unknown before, err."""
    with urllib.request.urlopen(f"{url}/api/v1/rules", timeout=10) as response:
        groups = json.loads(response.read())["data"]["groups"]
    return {r["name"]: r["health"] for g in groups for r in g["rules"]}


@pytest.mark.timeout(900)
@pytest.mark.asyncio
async def test_every_dashboard_and_alert_expression_returns_series(
    local_stack: LocalStack, prometheus_url: str
) -> None:
    queries: list[Query] = [*all_dashboard_queries(), *alert_queries()]
    wheres = {q.where for q in queries}
    assert set(QUIET) <= wheres, set(QUIET) - wheres  # no stale entry
    started = time.monotonic()
    ep = await asyncio.to_thread(
        apply_endpoint, local_stack.client, local_stack.model_dir, NAME,
        {"autoscaling": AUTOSCALING},
    )  # fmt: skip
    try:
        await asyncio.to_thread(
            wait_endpoint_ready, ep.client, ep.namespace, ep.name, START_TIMEOUT_S, log.info
        )
        ready = time.monotonic()
        async with Load(ep.gateway_url(), max_tokens=32) as load:
            await load.set_clients(CLIENTS)
            # a minute's rates need two scrapes with traffic; the operator must say Ready
            for expr in WARM:
                await _wait_series(prometheus_url, expr)
            await wait_until(
                lambda: set(_rules(prometheus_url).values()) == {"ok"}, "rules evaluated", 60.0
            )
            assert len(_rules(prometheus_url)) == len(alert_queries())
            empty, failed = [], []
            for q in queries:
                expr = fill_variables(q.expr, SELECTION, RATE_INTERVAL)
                if await asyncio.to_thread(_series, prometheus_url, expr):
                    continue
                if q.where not in QUIET:
                    empty.append(f"{q.where}: {expr}")
                elif not await asyncio.to_thread(_series, prometheus_url, QUIET[q.where][0]):
                    failed.append(f"{q.where}: sibling {QUIET[q.where][0]}")
            await load.set_clients(0, wait=True)
        assert not empty, "expressions without series:\n" + "\n".join(empty)
        assert not failed, "quiet expressions whose sibling has no series:\n" + "\n".join(failed)
        assert load.problems() == [], load.problems()[:5]
        print(
            f"\nobservability: {len(queries)} expressions, {len(QUIET)} quiet; endpoint ready "
            f"in {ready - started:.1f}s, checked {time.monotonic() - ready:.1f}s later"
        )
    finally:
        await asyncio.to_thread(ep.delete)
