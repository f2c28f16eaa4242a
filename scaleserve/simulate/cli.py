"""`scaleserve simulate`: compare layout strategies for one endpoint on simulated GPUs.

Engines are modelled from a performance profile (docs/profiles.md); the operator's layout
policy and transition planner and the gateway's routing policy run as they are. Writes
simulation.json, simulation.md (a table) and simulation.png (latency and GPUs over time, one
panel per strategy) to --out.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scaleserve.profiles import Profile
    from scaleserve.simulate.compare import Setup
    from scaleserve.simulate.traffic import Traffic

TRAFFIC_HELP = (
    "diurnal: a day squeezed into --duration, rising from peak/--peak-to-trough to "
    "--peak-rps mid-run and back; constant: --peak-rps throughout; sweep: closed-loop "
    "streams stepping through --levels (the ScaleLLM sweep), --stage-seconds each"
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate an endpoint on GPUs from a performance profile; compare strategies",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--profile", required=True, help="performance profile (YAML or JSON)")
    parser.add_argument(
        "--strategies",
        default="static:1x8,static:8x1,replicas:1,thresholds,objectives",
        help="comma-separated: static:RxT (fixed layout), replicas:T (replica autoscaler, TP "
        "T fixed, on in-flight requests), thresholds (scaleserve's thresholds mode), "
        "objectives[:MIN] (scaleserve's objectives mode, minGPUs MIN (default 1), maxGPUs "
        "--gpus, objectives --ttft-ms and --tbt-ms)",
    )
    _traffic_arguments(parser.add_argument_group("traffic"))
    e = parser.add_argument_group("endpoint")
    e.add_argument("--gpus", type=int, default=8, help="GPU budget (maxGPUs)")
    e.add_argument("--surge", type=int, default=8, help="GPUs a reshape may borrow")
    e.add_argument("--per-node", type=int, default=8)
    e.add_argument("--candidates", default="8,1", help="thresholds mode: TP candidates")
    e.add_argument("--thresholds", default="64", help="thresholds mode: concurrency bands")
    e.add_argument("--objective-candidates", default="8,4,2,1", help="objectives mode: TPs")
    e.add_argument("--window", type=int, default=60, help="scaleserve: window seconds")
    e.add_argument("--cooldown", type=int, default=300, help="scaleserve: cooldown seconds")
    e.add_argument(
        "--lookahead",
        type=float,
        help="objectives mode: seconds of a rising load a step up is sized ahead for "
        "(scaleUpLookaheadSeconds; default: two of the profile's start-ups; 0: none)",
    )
    e.add_argument(
        "--termination-seconds",
        type=float,
        help="a deleted, drained pod's time to terminate, its GPUs held meanwhile (default: "
        "the engine pod's preStop sleep, 5)",
    )
    e.add_argument("--ttft-ms", type=float, default=1000.0, help="objective: per-request TTFT")
    e.add_argument("--tbt-ms", type=float, default=25.0, help="objective: per-request mean TBT")
    e.add_argument(
        "--routing",
        default="least-in-flight",
        choices=["least-in-flight", "round-robin", "prefix-affinity"],
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="simulation", help="output directory")
    parser.add_argument("--no-plots", action="store_true")
    parser.set_defaults(run=run)


def _traffic_arguments(t: Any) -> None:
    t.add_argument(
        "--traffic", choices=["diurnal", "constant", "sweep"], default="diurnal", help=TRAFFIC_HELP
    )
    t.add_argument("--duration", type=float, default=86_400.0, help="simulated seconds")
    t.add_argument("--peak-rps", type=float, default=100.0, help="requests/s at the peak")
    t.add_argument("--peak-to-trough", type=float, default=30.0)
    t.add_argument("--arrivals", choices=["poisson", "gamma"], default="poisson")
    t.add_argument("--cv", type=float, default=2.0, help="gap variation for gamma arrivals")
    t.add_argument(
        "--burst",
        action="append",
        default=[],
        metavar="START:SECONDS:FACTOR",
        help="multiply the rate by FACTOR for SECONDS from START (repeatable)",
    )
    t.add_argument("--lengths", choices=["fixed", "chat"], default="fixed")
    t.add_argument("--input-tokens", type=int, help="default: the profile's workload")
    t.add_argument("--output-tokens", type=int, help="default: the profile's workload")
    t.add_argument("--levels", default="1,2,4,8,16,32,64,128,256", help="sweep stream counts")
    t.add_argument("--stage-seconds", type=float, default=120.0)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _traffic(args: argparse.Namespace, profile: Profile) -> Traffic:
    from scaleserve.simulate.traffic import Burst, Lengths, OpenLoop, Sweep

    workload = profile.workload
    lengths = Lengths(
        args.lengths,
        args.input_tokens or workload.input_tokens,
        args.output_tokens or workload.output_tokens,
    )
    if args.traffic == "sweep":
        return Sweep(_ints(args.levels), args.stage_seconds, lengths)
    bursts = tuple(Burst(*(float(x) for x in b.split(":"))) for b in args.burst)
    return OpenLoop(
        args.duration,
        args.peak_rps,
        args.traffic,
        args.peak_to_trough,
        args.arrivals,
        args.cv,
        bursts,
        lengths,
    )


def _setup(args: argparse.Namespace) -> Setup:
    from scaleserve.simulate.compare import Setup
    from scaleserve.simulate.metrics import Objectives

    return Setup(
        gpus=args.gpus,
        surge=args.surge,
        per_node=args.per_node,
        candidates=_ints(args.candidates),
        thresholds=tuple(float(x) for x in args.thresholds.split(",") if x.strip()),
        window_s=args.window,
        cooldown_s=args.cooldown,
        objectives=Objectives(args.ttft_ms, args.tbt_ms),
        objective_candidates=_ints(args.objective_candidates),
        lookahead_s=args.lookahead,
        **({} if args.termination_seconds is None else {"termination_s": args.termination_seconds}),
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from scaleserve.profiles import parse_profile
    from scaleserve.simulate import report
    from scaleserve.simulate.compare import compare

    profile = parse_profile(Path(args.profile).read_text())
    traffic, setup = _traffic(args, profile), _setup(args)
    names = tuple(n.strip() for n in args.strategies.split(",") if n.strip())
    bars: list[tqdm[Any]] = []

    def progress(name: str) -> Any:
        if bars:
            bars[-1].close()
        bar = tqdm(total=round(traffic.duration_s), desc=f"{name:<12}", unit="sim-s")
        bars.append(bar)
        return lambda t: bar.update(round(t) - bar.n)

    results = compare(
        profile, traffic, names, setup, seed=args.seed, routing=args.routing, progress=progress
    )
    bars[-1].close()
    summaries = [s for _, s in results]
    meta = {
        "profile": {
            "model": profile.model,
            "gpu": profile.gpu,
            "engine": profile.engine,
            "provenance": profile.provenance.model_dump(),
        },
        "traffic": repr(traffic),
        "setup": repr(setup),
        "seed": args.seed,
        "engine_model": "per-request continuous batching (discrete events)",
    }
    for path in report.write(Path(args.out), meta, summaries, plots=not args.no_plots):
        print(f"wrote {path}")
    print(report.markdown(summaries))
    broken = [f"{s['strategy']}: {v}" for s in summaries for v in s["violations"]]
    broken += [f"{s['strategy']}: requests not conserved" for s in summaries if not s["conserved"]]
    for line in broken:
        print(f"INVARIANT BROKEN {line}")
    return 1 if broken else 0
