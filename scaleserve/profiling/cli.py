"""`scaleserve profile`: write a performance profile (docs/profiles.md).

    scaleserve profile --url http://127.0.0.1:8000 --gpu cpu --startup-seconds 20 -o tiny.yaml
    scaleserve profile --estimate --model meta-llama/Meta-Llama-3.1-8B --gpu h200_sxm -o p.yaml
    scaleserve profile --layouts p.yaml --gpus 8

Measuring needs only the runtime's aiohttp; estimating needs the optional aiconfigurator extra
(requirements/estimate.txt), imported only when `--estimate` runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

SWEEP_CONCURRENCIES = "1,8,32,64"


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"need integers of at least 1: {text!r}")
    return values


def token_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    if not sep or not low.isdigit() or not high.isdigit() or int(low) > int(high):
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH token ids, got {text!r}")
    return int(low), int(high)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile",
        help="measure (load sweep) or estimate (aiconfigurator) a performance profile",
        description="Write a performance profile (docs/profiles.md): by a load sweep against a "
        "running OpenAI endpoint (--url), offline with NVIDIA's aiconfigurator (--estimate), "
        "or read one back as the best layout of a GPU budget by load (--layouts).",
    )
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--url", help="sweep: the endpoint's root URL (a gateway's, or a server's)")
    mode.add_argument("--estimate", action="store_true", help="estimate offline (needs the extra)")
    mode.add_argument("--layouts", type=Path, metavar="PROFILE", help="best layouts by load")
    _add_workload_options(p)
    _add_sweep_options(p.add_argument_group("sweep"))
    _add_estimate_options(p.add_argument_group("estimate and layouts"))
    p.set_defaults(run=run)


def _add_workload_options(p: Any) -> None:
    """What every mode shares: the model, GPU, request shape, loads, degrees and output."""
    p.add_argument("--model", help="model (estimate: aiconfigurator's id; sweep: default listed)")
    p.add_argument("--gpu", help="GPU type recorded, and the estimator's system (h200_sxm, ...)")
    p.add_argument("--input-tokens", type=int, default=1024, help="prompt tokens (default 1024)")
    p.add_argument("--output-tokens", type=int, default=256, help="output tokens (default 256)")
    p.add_argument(
        "--concurrency",
        type=int_list,
        help="per-replica loads, e.g. 1,8,32,64 "
        f"(sweep default {SWEEP_CONCURRENCIES}; estimate default 1,2,3,4,6,...,2048)",
    )
    p.add_argument(
        "--tensor-parallel",
        type=int_list,
        help="degree(s): estimate default 1,2,4,8; sweep default from the gateway's /stats, else 1",
    )
    p.add_argument(
        "--startup-seconds",
        type=float,
        help="start-to-ready time per replica, s "
        "(estimate default: from published figures; required for a sweep)",
    )
    p.add_argument("-o", "--output", type=Path, help="write the profile here (default stdout)")
    p.add_argument("--json", action="store_true", help="write JSON instead of YAML")


def _add_sweep_options(g: Any) -> None:
    g.add_argument("--duration", type=float, default=20.0, help="seconds per level (default 20)")
    g.add_argument("--replicas", type=int, help="replicas behind the URL (default: its /stats)")
    g.add_argument(
        "--stats-url",
        help="the gateway's /stats (default: the URL's host, port 8001, the internal port)",
    )
    g.add_argument("--engine", default="vllm", help="engine recorded in the profile")
    g.add_argument(
        "--token-ids",
        type=token_range,
        default=(10, 250),
        metavar="LOW:HIGH",
        help="prompt token ids are drawn from this range (default 10:250)",
    )


def _add_estimate_options(e: Any) -> None:
    e.add_argument("--backend-version", default="0.24.0", help="vLLM data set (default 0.24.0)")
    e.add_argument("--quant", help="GEMM quantization, e.g. fp8 (default: the checkpoint's)")
    e.add_argument(
        "--max-concurrency",
        type=int,
        default=2048,
        help="highest load: per replica for an estimate, on the endpoint for --layouts "
        "(default 2048)",
    )
    e.add_argument("--gpus", type=int, default=8, help="layouts: the GPU budget (default 8)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.layouts is not None:
            return _layouts(args)
        profile = _estimate(args) if args.estimate else _sweep(args)
    except _UsageError as exc:
        print(f"scaleserve profile: {exc}", file=sys.stderr)
        return 2
    from scaleserve.profiles import dump_profile

    text = dump_profile(profile, as_json=args.json)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


class _UsageError(Exception):
    pass


def _estimate(args: argparse.Namespace) -> Any:
    from scaleserve.profiling import estimate

    if not args.model or not args.gpu:
        raise _UsageError("--estimate needs --model and --gpu")
    grid = args.concurrency or estimate.DEFAULT_GRID
    request = estimate.EstimateRequest(
        model=args.model,
        gpu=args.gpu,
        tensor_parallel=args.tensor_parallel or (1, 2, 4, 8),
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        concurrencies=tuple(c for c in grid if c <= args.max_concurrency),
        backend_version=args.backend_version,
        quant=args.quant,
        startup_seconds=args.startup_seconds,
    )
    try:
        estimator = estimate.aiconfigurator_estimator(request)
    except ImportError as exc:
        raise _UsageError(f"{estimate.INSTALL_HINT} ({exc})") from None
    try:
        profile, skipped = estimate.estimate_profile(request, estimator)
    except estimate.OutOfMemoryError as exc:
        raise _UsageError(str(exc)) from None
    for note in skipped:
        print(f"left out {note}", file=sys.stderr)
    return profile


def _sweep(args: argparse.Namespace) -> Any:
    import asyncio

    from scaleserve.profiling import sweep

    if args.startup_seconds is None or not args.gpu:
        raise _UsageError(
            "a sweep needs --gpu and --startup-seconds (the replica's measured start)"
        )
    degrees = args.tensor_parallel or ()
    if len(degrees) > 1:
        raise _UsageError("a sweep measures one degree: give one --tensor-parallel")
    request = sweep.SweepRequest(
        url=args.url,
        concurrencies=args.concurrency or int_list(SWEEP_CONCURRENCIES),
        duration_s=args.duration,
        input_tokens=args.input_tokens,
        output_tokens=args.output_tokens,
        gpu=args.gpu,
        engine=args.engine,
        startup_seconds=args.startup_seconds,
        model=args.model,
        replicas=args.replicas,
        tensor_parallel=degrees[0] if degrees else None,
        token_ids=args.token_ids,
        stats_url=args.stats_url,
    )

    def progress(concurrency: int, summary: dict[str, Any]) -> None:
        print(
            f"concurrency {concurrency}: {summary['requests']} requests, TTFT p50 "
            f"{summary['ttft_p50_ms']} ms, TBT p50 {summary['tbt_p50_ms']} ms, "
            f"{summary['output_tokens_per_s']} tokens/s, {summary['errors']} errors",
            file=sys.stderr,
            flush=True,
        )

    try:
        return asyncio.run(sweep.run_sweep(request, progress))
    except sweep.SweepError as exc:
        raise _UsageError(str(exc)) from None


def _layouts(args: argparse.Namespace) -> int:
    from scaleserve.profiles import ProfileError, parse_profile
    from scaleserve.profiling.layouts import best_by_load, crossover, layouts

    try:
        profile = parse_profile(args.layouts.read_text())
    except (OSError, ProfileError) as exc:
        raise _UsageError(f"{args.layouts}: {exc}") from None
    candidates = layouts(profile, args.gpus)
    if not candidates:
        raise _UsageError(f"no degree of {args.layouts} divides {args.gpus} GPUs")
    print(f"{profile.model} on {args.gpus} x {profile.gpu} ({profile.provenance.source}):")
    per_request = profile.workload.input_tokens + profile.workload.output_tokens
    for layout in candidates:
        room = layout.most_load(per_request)
        print(f"  {layout.name}: KV cache holds {'?' if room is None else room} requests")
    for load, name in best_by_load(profile, args.gpus, args.max_concurrency):
        print(f"  lowest request latency from {load} requests in flight: {name}")
    most, fewest = candidates[0], candidates[-1]
    if most is not fewest:
        at = crossover(profile, most, fewest, args.max_concurrency)
        where = f"at {at} requests in flight" if at else f"nowhere up to {args.max_concurrency}"
        print(f"  {most.name} overtakes {fewest.name} {where}")
    return 0
