"""Calibration of the simulator's fine engine model against the tiny model's engine, measured
on this machine in one run:

1. profile: `scaleserve profile`'s load sweep of one `scaleserve engine` on the tiny model (TP1
   on one core) behind one `scaleserve gateway` (benchmarks/profile_tiny.py's stack), with
   prefix caching off (the simulator does not model it, and the sweep's levels send the same
   prompts);
2. measure the same stack again, independently, under traffic the simulator supports: closed
   loops at several stream counts (fixed lengths, and the chat mix at one count) and Poisson
   arrivals at two rates (a share of the profile's highest request rate; fixed lengths, and the
   mix at the higher rate);
3. simulate the same traffic on one TP1 replica of the measured profile with the fine engine
   model: the Poisson runs' arrivals and lengths as they were sent, replayed exactly; the
   closed loops with the lengths in the order they were sent;
4. print per scenario the measured and simulated figures and the relative errors, and a
   summary; write them to benchmarks/results/simulate_calibration.json and the profile to
   benchmarks/results/simulate_calibration.profile.yaml.

    flock /tmp/scaleserve-heavy.lock .venv/bin/python benchmarks/simulate_calibration.py

Figures are computed one way for both sides (scaleserve.simulate.calibration). On a shared
machine every measured figure moves with the other load; the JSON records the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import reshape_timeline  # noqa: E402
from benchmarks.common import write_json  # noqa: E402
from benchmarks.host import machine, versions  # noqa: E402
from benchmarks.profile_tiny import sweep_profile, tiny_stack  # noqa: E402
from scaleserve.operator.layout import GroupShape  # noqa: E402
from scaleserve.profiles import Profile, dump_profile, parse_profile  # noqa: E402
from scaleserve.profiling.load import (  # noqa: E402
    RequestRecord,
    closed_loop_for,
    open_loop_at,
    openai_stream_by_frames,
)
from scaleserve.profiling.sweep import SweepRequest, request_body  # noqa: E402
from scaleserve.simulate import calibration  # noqa: E402
from scaleserve.simulate.endpoint import Limits  # noqa: E402
from scaleserve.simulate.run import simulate  # noqa: E402
from scaleserve.simulate.strategies import Static  # noqa: E402
from scaleserve.simulate.traffic import Lengths, OpenLoop, Sweep, Trace, Traffic  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
CONTEXT_TOKENS = 1000  # prompt + output: within the engine's 1,024-token context, with room
MAX_SEQS = 64


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    lengths: Literal["fixed", "chat"]
    duration_s: float
    streams: int = 0  # closed loop: streams; 0 for Poisson arrivals
    rate: float = 0.0  # Poisson arrivals: requests/s


@dataclasses.dataclass
class Plan:
    """What a scenario sends: request i gets lengths[i] (and, open loop, goes at offsets[i])."""

    scenario: Scenario
    lengths: list[tuple[int, int]]
    offsets: list[float] | None = None


def scenarios(args: argparse.Namespace, profile: Profile) -> list[Scenario]:
    degree = profile.degrees[0]
    peak = max(p.output_tokens_per_s or 0.0 for p in degree.points) / args.output_tokens
    out = [Scenario(f"closed {c}", "fixed", args.duration, streams=c) for c in args.closed]
    out += [Scenario(f"closed {c} mix", "chat", args.duration, streams=c) for c in args.mix]
    rates = [round(share * peak, 1) for share in args.rates]
    out += [Scenario(f"poisson {r:g}/s", "fixed", args.open_duration, rate=r) for r in rates]
    out.append(Scenario(f"poisson {rates[-1]:g}/s mix", "chat", args.open_duration, rate=rates[-1]))
    return out


def plan(scenario: Scenario, args: argparse.Namespace, seed: int) -> Plan:
    """The scenario's request lengths (the chat mix clipped to the engine's context) and, for
    Poisson arrivals, their times from the simulator's own generator."""
    rng = np.random.default_rng(seed)
    offsets = None
    if scenario.rate:
        times, _, _ = OpenLoop(scenario.duration_s, scenario.rate).generate(rng)
        offsets, count = [float(t) for t in times], len(times)
    else:  # more than a closed loop can send in its window
        count = int(scenario.streams * scenario.duration_s * 200) + 1000
    mix = Lengths(scenario.lengths, args.input_tokens, args.output_tokens)
    inputs, outputs = mix.sample(rng, count)
    lengths = [
        (min(int(i), CONTEXT_TOKENS - int(o)), int(o)) for i, o in zip(inputs, outputs, strict=True)
    ]
    return Plan(scenario, lengths, offsets)


async def measure(
    session: Any, url: str, model: str, p: Plan, first_index: int
) -> tuple[list[RequestRecord], float]:
    """Send the plan's traffic; returns the records and the start (perf_counter)."""
    template = SweepRequest(url, (), 0.0, 0, 0, "cpu", "", 0.0)

    async def send(index: int) -> RequestRecord:
        n_in, n_out = p.lengths[index]
        request = dataclasses.replace(template, input_tokens=n_in, output_tokens=n_out)
        # the index seeds the prompt: distinct per request over the whole run
        body = request_body(request, model, first_index + index)
        return await openai_stream_by_frames(session, url + "/v1/completions", body, 300.0)

    start = time.perf_counter()
    if p.offsets is not None:
        records, _ = await open_loop_at(send, p.offsets)
    else:
        records, _ = await closed_loop_for(send, p.scenario.streams, p.scenario.duration_s)
    return records, start


def simulated_traffic(p: Plan, records: list[RequestRecord], start: float) -> Traffic:
    s = p.scenario
    if p.offsets is None:
        return Sweep(levels=(s.streams,), stage_s=s.duration_s, given=tuple(p.lengths))
    sent = [r.sent - start for r in records]  # when each really went, in sending order
    return Trace(
        s.duration_s,
        tuple(sent),
        tuple(n for n, _ in p.lengths[: len(sent)]),
        tuple(n for _, n in p.lengths[: len(sent)]),
    )


def compare(
    profile: Profile, p: Plan, records: list[RequestRecord], start: float
) -> dict[str, Any]:
    window = p.scenario.duration_s
    measured = calibration.figures(calibration.from_measured(records, start), window)
    traffic = simulated_traffic(p, records, start)
    outcome = simulate(profile, traffic, Static((GroupShape(1, 1),)), limits=Limits(MAX_SEQS))
    simulated = calibration.figures(calibration.from_simulated(outcome.endpoint.finished), window)
    return {
        **dataclasses.asdict(p.scenario),
        "failed_requests": sum(1 for r in records if r.error),
        "measured": measured,
        "simulated": simulated,
        "errors": calibration.relative_errors(simulated, measured),
    }


def median_profile(profiles: list[Profile]) -> Profile:
    """Per point, the median of each figure over the sweeps (same levels, same workload)."""
    first = profiles[0]
    fields = ("ttft_ms", "tbt_ms", "ttft_p99_ms", "tbt_p99_ms", "output_tokens_per_s")
    points = []
    for i, point in enumerate(first.degrees[0].points):
        values = [[getattr(p.degrees[0].points[i], f) for p in profiles] for f in fields]
        update = {f: statistics.median(v) for f, v in zip(fields, values, strict=True)}
        points.append(point.model_copy(update=update))
    degree = first.degrees[0].model_copy(update={"points": tuple(points)})
    notes = (
        f"{first.provenance.notes}; per point the median of {len(profiles)} sweeps, each "
        "followed by the check's closed loops at the same levels"
    )
    provenance = first.provenance.model_copy(update={"notes": notes})
    return first.model_copy(update={"degrees": (degree,), "provenance": provenance})


async def measure_points(
    session: Any, url: str, startup: float, args: argparse.Namespace
) -> tuple[Profile, list[Profile], list[dict[int, dict[str, Any]]]]:
    """`args.rounds` times: the profile's sweep, then closed loops at the same levels measured
    by the check's client; alternated so both sample the machine's load over the same span."""
    levels = tuple(args.levels)
    profiles, checks = [], []
    for r in range(args.rounds):
        profiles.append(
            await sweep_profile(
                url, startup, levels, args.profile_duration, args.input_tokens, args.output_tokens
            )
        )
        figures = {}
        for c in levels:
            scenario = Scenario(f"closed {c}", "fixed", args.duration, streams=c)
            p = plan(scenario, args, seed=args.seed)
            records, start = await measure(session, url, profiles[0].model, p, (r + 1) * 10**8)
            figures[c] = calibration.figures(
                calibration.from_measured(records, start), p.scenario.duration_s
            )
            print(f"round {r + 1}, measured closed {c}: {figures[c]}", flush=True)
        checks.append(figures)
    return median_profile(profiles), profiles, checks


def points(
    profile: Profile, checks: list[dict[int, dict[str, Any]]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Per level: the checks' median figures and each round's, the simulation's, the errors."""
    out = []
    for c in args.levels:
        rounds = [check[c] for check in checks]
        measured = {k: statistics.median(r[k] for r in rounds) for k in calibration.FIGURES}
        simulated = calibration.closed_loop(profile, c, args.duration, MAX_SEQS)
        out.append(
            {
                "name": f"closed {c}",
                "streams": c,
                "measured": measured,
                "measured_rounds": rounds,
                "simulated": simulated,
                "errors": calibration.relative_errors(simulated, measured),
            }
        )
    return out


async def run(args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    import aiohttp

    load_before = os.getloadavg()[0]
    rows = []
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
    async with (
        tiny_stack(log_dir, prefix_caching=False) as (url, startup),
        aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session,
    ):
        profile, sweeps, checks = await measure_points(session, url, startup, args)
        for i, scenario in enumerate(scenarios(args, profile)):
            p = plan(scenario, args, seed=args.seed + i)
            records, start = await measure(session, url, profile.model, p, (i + 1) * 10**6)
            rows.append((p, records, start))
            print(f"measured {scenario.name}: {len(records)} requests", flush=True)
    load_after = os.getloadavg()[0]
    results = [compare(profile, p, records, start) for p, records, start in rows]
    return {
        "benchmark": "simulate_calibration",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "conditions": (
            "one scaleserve engine (tiny model, TP1 on one core, float32, max_num_seqs 64, "
            "prefix caching off) behind one scaleserve gateway, client on the same machine; a "
            "shared 2-core machine with other work running"
        ),
        "load_average": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "machine": machine(),
        "versions": versions(),
        "arguments": {k: v for k, v in vars(args).items() if k != "out"},
        "engine_model": "fine (per-request continuous batching, discrete events), one TP1 replica",
        "max_seqs": MAX_SEQS,
        "profile": profile.to_dict(),
        "sweeps": [p.to_dict()["tensorParallel"][0]["points"] for p in sweeps],
        "points": points(profile, checks, args),
        "scenarios": results,
        "summary": calibration.summary([r["errors"] for r in results]),
        "tolerance": calibration.TOLERANCE,
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: measured / simulated (error) per figure and row, and a summary."""
    heads = ("TTFT p50 ms", "TTFT p99 ms", "TBT p50 ms", "TBT p99 ms", "output tok/s")
    lines = ["| scenario | " + " | ".join(heads) + " |", "|---" * (len(heads) + 1) + "|"]
    for row in rows:
        cells = []
        for key in calibration.FIGURES:
            real, sim, err = row["measured"][key], row["simulated"][key], row["errors"][key]
            shown = "-" if err is None else f"{err:+.0%}"
            cells.append(f"{real:,.4g} / {sim:,.4g} ({shown})")
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    summary = calibration.summary([r["errors"] for r in rows]).values()
    mean = ["mean abs error"] + [
        "-" if (v := s["mean_abs_error"]) is None else f"{v:.0%}" for s in summary
    ]
    within = ["within 25%"] + [f"{s['within_tolerance']} of {s['scenarios']}" for s in summary]
    lines += ["| " + " | ".join(mean) + " |", "| " + " | ".join(within) + " |"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--profile-duration", type=float, default=15.0, help="s per level")
    parser.add_argument(
        "--rounds", type=int, default=3, help="sweeps, each followed by closed loops at its levels"
    )
    parser.add_argument("--closed", type=int, nargs="+", default=[16], help="more closed loops")
    parser.add_argument("--mix", type=int, nargs="+", default=[32], help="closed loops, chat mix")
    parser.add_argument("--duration", type=float, default=15.0, help="s per closed loop")
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[0.25, 0.6], help="shares of the peak rate"
    )
    parser.add_argument("--open-duration", type=float, default=20.0, help="s per Poisson run")
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "simulate_calibration.json")
    parser.add_argument(
        "--reshape",
        type=Path,
        default=RESULTS / "reshape_timeline.json",
        help="the local stack's reshape timeline (benchmarks/reshape_timeline.py records it), "
        "compared with the simulator's on this run's profile",
    )
    parser.add_argument(
        "--reshape-only", action="store_true", help="only that comparison, on the recorded profile"
    )
    args = parser.parse_args()
    if args.reshape_only:
        return reshape(args.reshape, args.out)
    with tempfile.TemporaryDirectory(prefix="calibration-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    print(f"figures measured / simulated (relative error), {result['conditions']}")
    print(f"at the profile's levels, median of {args.rounds} rounds:")
    print(table(result["points"]))
    print("other traffic:")
    print(table(result["scenarios"]))
    write_json(args.out, result)
    profile_path = args.out.with_suffix(".profile.yaml")
    profile_path.write_text(dump_profile(parse_profile(result["profile"])))
    print(f"wrote {args.out} and {profile_path}")
    return reshape(args.reshape, args.out)


def reshape(recorded_path: Path, out: Path) -> int:
    """The recorded reshape timeline against the simulator's on the profile beside `out`,
    added to `out` and printed."""
    if not recorded_path.exists():
        print(f"no reshape timeline recorded at {recorded_path}: not compared")
        return 0
    recorded = json.loads(recorded_path.read_text())
    comparison = reshape_timeline.simulated(recorded, out.with_suffix(".profile.yaml"))
    result = json.loads(out.read_text())
    result["reshape"] = {
        "recorded": recorded_path.name,
        "date": recorded["date"],
        "measured": recorded["measured"],
        "comparison": comparison,
    }
    print("reshape timeline, local stack / simulator:")
    print(reshape_timeline.table(result["reshape"]))
    write_json(out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
