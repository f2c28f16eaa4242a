"""The reshape timeline on the local stack against the simulator's, for the same scenario.

Measured: `scaleserve dev up`'s stack (two local nodes of two GPUs, the operator's reconcile
interval 2 s) runs the sample endpoint (the tiny model; thresholds mode, 1 x TP2 below 8 in
flight, 2 x TP1 from 8; window 10 s, drain bound 20 s) unchanged. Closed-loop streaming
clients (64 output tokens) hold at 1, then step 1, 2, 4, ..., 64 every 3 s and hold 64. Polled
every 0.5 s from the moment the offered load reaches 8 clients: the operator's ReshapeStarted
event, every new engine pod Ready, the operator's deletion of the old group (its GroupDeleted
or DrainTimedOut event; the old pod's deletionTimestamp is recorded too) and the first
layout's pod gone; deletion to gone is the pod's termination (preStop sleep, SIGTERM, the
engine's drain and exit, the kubelet's removal). Each engine pod's start (container start to
Ready) gives the simulator its start-to-ready time per TP degree.

Simulated: the same ramp, spec and interval through `scaleserve.simulate.timeline`, on the
calibration's measured TP1 profile with those start-up times and that termination time.
Error = (simulated - measured) / measured per interval.

    flock /tmp/scaleserve-heavy.lock .venv/bin/python benchmarks/reshape_timeline.py

Writes benchmarks/results/reshape_timeline.json. Needs root (the local stack's pod network).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import write_json  # noqa: E402
from benchmarks.host import machine, versions  # noqa: E402
from e2e.local.endpoints import LocalEndpoint, apply_endpoint, pod_ready  # noqa: E402
from e2e.local.load import Load  # noqa: E402
from scaleserve.dev.stack import Stack  # noqa: E402
from scaleserve.dev.watch import wait_endpoint_ready  # noqa: E402
from scaleserve.engine.tiny_model import default_model_dir, make_tiny_model  # noqa: E402
from scaleserve.operator.builders.naming import LABEL_TP  # noqa: E402
from scaleserve.operator.spec import parse_spec  # noqa: E402
from scaleserve.profiles import parse_profile  # noqa: E402
from scaleserve.simulate.calibration import relative_error  # noqa: E402
from scaleserve.simulate.timeline import (  # noqa: E402
    INTERVALS,
    Ramp,
    reshape_timeline,
    with_startups,
)

RESULTS = REPO / "benchmarks" / "results"
RAMP = Ramp((1, 2, 4, 8, 16, 32, 64), step_s=3.0, before_s=15.0, hold_s=0.0,
            input_tokens=32, output_tokens=64)  # fmt: skip
INTERVAL_S = 2.0  # `scaleserve dev up`'s --reconcile-interval
CLUSTER_GPUS = 4  # two local nodes of two
MAX_SEQS = 64  # the sample's maxNumSeqs
NAME = "timeline"


def startup_s(pod: Any) -> float | None:
    """Container start to Ready: the engine's own start (image, scheduling left out)."""
    statuses = pod.status.container_statuses or []
    started = [s.state.running.started_at for s in statuses if s.state and s.state.running]
    ready = [c.last_transition_time for c in pod.status.conditions or [] if c.type == "Ready"]
    if not started or not ready or not pod_ready(pod):
        return None
    return float((ready[0] - min(started)).total_seconds())


def tensor_parallel(pod: Any) -> int:
    return int(pod.metadata.labels[LABEL_TP])


DELETED = ("GroupDeleted", "DrainTimedOut")  # the operator's event when it deletes a group


async def watch(ep: LocalEndpoint, first: set[str], seen: dict[str, Any]) -> None:
    """Until the first layout's pods are gone: when each moment was first seen, the operator's
    deletion of the old group (its event) and its pods' termination (deletionTimestamp set,
    then the pod object gone) apart."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(ep.client)
    while "old_gone" not in seen:
        now = time.monotonic()
        events = await asyncio.to_thread(
            core.list_namespaced_event, ep.namespace, field_selector=f"involvedObject.name={NAME}"
        )
        reasons = {str(e.reason) for e in events.items}
        if "ReshapeStarted" in reasons:
            seen.setdefault("started", now)
        if reasons & set(DELETED):
            seen.setdefault("deleted", now)
            seen.setdefault("deleted_how", sorted(reasons & set(DELETED)))
        pods = await asyncio.to_thread(ep.pods, "engine")
        new = [p for p in pods if p.metadata.name not in first]
        if len(new) >= 2 and all(pod_ready(p) for p in new):
            seen.setdefault("new_ready", now)
            seen.setdefault("pods", {p.metadata.name: p for p in new})
        old = [p for p in pods if p.metadata.name in first]
        if any(p.metadata.deletion_timestamp for p in old):
            seen.setdefault("terminating", now)
        if not old:
            seen.setdefault("old_gone", now)
        await asyncio.sleep(0.5)


async def measure(ep: LocalEndpoint, timeout_s: float) -> dict[str, Any]:
    pods = await asyncio.to_thread(ep.pods, "engine")
    first = {p.metadata.name for p in pods}
    startups = {tensor_parallel(p): startup_s(p) for p in pods}
    seen: dict[str, Any] = {}
    async with Load(ep.gateway_url(), max_tokens=RAMP.output_tokens) as load:
        await load.set_clients(RAMP.levels[0])
        await asyncio.sleep(RAMP.before_s)
        crossed = 0.0
        watcher = None
        for clients in RAMP.levels:
            await load.set_clients(clients)
            if clients >= ep_threshold(ep) and not crossed:
                crossed = time.monotonic()
                watcher = asyncio.create_task(watch(ep, first, seen))
            await asyncio.sleep(RAMP.step_s)
        assert watcher is not None
        await asyncio.wait_for(watcher, timeout_s)
        counts = dict(load.counts())
    new = list(seen.pop("pods").values())
    startups[tensor_parallel(new[0])] = statistics.median(s for p in new if (s := startup_s(p)))
    moments = ("started", "new_ready", "deleted", "terminating", "old_gone")
    intervals = {f"{k}_s": round(seen[k] - crossed, 1) for k in moments if k in seen}
    # the old pods' termination: from the operator's delete to the last pod object gone
    # (preStop sleep, SIGTERM, the engine's drain and exit, the kubelet's removal)
    gone_after = seen["old_gone"] - seen.get("deleted", seen.get("terminating", seen["old_gone"]))
    return {
        "intervals": intervals,
        "termination_s": round(gone_after, 1),
        "deleted_by": seen.get("deleted_how", []),
        "startup_s": {str(tp): round(s, 1) for tp, s in startups.items() if s is not None},
        "requests": counts,
    }


def ep_threshold(ep: LocalEndpoint) -> float:
    return float(ep.get()["spec"]["autoscaling"]["concurrencyThresholds"][0])


def measure_local(timeout_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The sample endpoint's spec and the measured timeline, on a stack of its own."""
    model = make_tiny_model(default_model_dir())
    stack = Stack(f"timeline-{os.getpid()}")
    stack.up(sample=False, progress=print)
    client = stack.kube_client()
    try:
        ep = apply_endpoint(client, model, NAME, {})
        try:
            wait_endpoint_ready(client, ep.namespace, NAME, 600.0, print)
            return ep.get()["spec"], asyncio.run(measure(ep, timeout_s))
        finally:
            ep.delete()
    finally:
        client.close()
        stack.down()


def simulated(measured: dict[str, Any], profile_path: Path) -> dict[str, Any]:
    """The simulator's timeline for the recorded scenario; each interval's relative error."""
    startups = {int(tp): s for tp, s in measured["measured"]["startup_s"].items()}
    profile = with_startups(parse_profile(profile_path.read_text()), startups)
    spec = parse_spec(measured["spec"])
    hold = max(measured["measured"]["intervals"].values()) * 2 + 60
    ramp = Ramp(**{**measured["ramp"], "levels": tuple(measured["ramp"]["levels"]), "hold_s": hold})
    termination = measured["measured"].get("termination_s", 0.0)
    sim = reshape_timeline(
        profile,
        spec,
        ramp,
        cluster_gpus=CLUSTER_GPUS,
        interval_s=INTERVAL_S,
        max_seqs=MAX_SEQS,
        termination_s=termination,
    )
    real = measured["measured"]["intervals"]
    errors = {k: relative_error(sim["intervals"][k], real[k]) for k in INTERVALS if k in real}
    return {"simulated": sim, "errors": errors}


def table(result: dict[str, Any]) -> str:
    """Measured / simulated (error) per interval from the threshold's crossing."""
    heads = {"started_s": "ReshapeStarted", "new_ready_s": "new group Ready",
             "deleted_s": "old group deleted", "old_gone_s": "old group gone"}  # fmt: skip
    lines = [
        "| from the threshold crossed to | measured s | simulated s | error |",
        "|---|---|---|---|",
    ]
    for key, head in heads.items():
        if key not in result["measured"]["intervals"]:
            continue
        real = result["measured"]["intervals"][key]
        sim = result["comparison"]["simulated"]["intervals"][key]
        err = result["comparison"]["errors"][key]
        shown = "-" if err is None else f"{err:+.0%}"
        lines.append(f"| {head} | {real} | {sim} | {shown} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--profile", type=Path, default=RESULTS / "simulate_calibration.profile.yaml"
    )
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "reshape_timeline.json")
    parser.add_argument(
        "--simulate-only", action="store_true", help="re-simulate the recorded measurement in --out"
    )
    args = parser.parse_args()
    if args.simulate_only:
        import json

        result = json.loads(args.out.read_text())
    else:
        load_before = os.getloadavg()[0]
        spec, measured = measure_local(args.timeout)
        result = {
            "benchmark": "reshape_timeline",
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "conditions": (
                "scaleserve dev up's local stack (two nodes of two GPUs, reconcile interval 2 s), "
                "the sample endpoint on the tiny model (engines on the CPU), clients on the same "
                "shared 2-core machine with other work running"
            ),
            "load_average": {
                "before": round(load_before, 2),
                "after": round(os.getloadavg()[0], 2),
            },
            "machine": machine(),
            "versions": versions(),
            "ramp": {k: v for k, v in vars(RAMP).items() if k != "hold_s"},
            "spec": spec,
            "measured": measured,
        }
    result["profile"] = args.profile.name
    result["comparison"] = simulated(result, args.profile)
    print(table(result))
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
