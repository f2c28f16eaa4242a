"""`scaleserve profile --estimate`: a profile estimated offline with NVIDIA's aiconfigurator.

aiconfigurator 0.12.0 (Apache-2.0, requirements/estimate.txt, an optional extra; 0.13 removes
this API) predicts TTFT, time per output token and tokens/s of one vLLM replica from measured
per-kernel data for a (model, GPU, TP degree, concurrency, ISL/OSL). For each TP degree this
walks a grid of per-replica concurrencies and stops where the replica runs out of memory or its
KV cache cannot hold that many requests (the estimator says so), so a profile never claims a
load the replica cannot run. Only `aiconfigurator_estimator` imports the estimator; everything
else is pure, and unit-tested on recorded answers.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scaleserve.profiles import API_VERSION, KIND, Profile, parse_profile

ESTIMATOR = "aiconfigurator"
ESTIMATOR_VERSION = "0.12.0"
INSTALL_HINT = (
    "the offline estimate needs NVIDIA's aiconfigurator 0.12.0, an optional extra: "
    "pip install -r requirements/estimate.txt"
)
# Per-replica concurrencies: powers of two and the halves between them, so that linear
# interpolation between points stays close to the estimator's curve.
DEFAULT_GRID: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)
DEFAULT_GRID += (384, 512, 768, 1024, 1536, 2048)

# Start-to-ready from published figures: a 70B FP8 TP8 vLLM start takes about 3.5 min, of which
# loading the weights (8.46 GiB per GPU, the estimator's figure for that layout) is about 10 s;
# the rest (checks, torch.compile, CUDA-graph capture) does not grow with the weights. Other
# layouts keep the fixed part and scale the weights' part by their weights per GPU.
PUBLISHED_START_S = 210.0
PUBLISHED_WEIGHTS_LOAD_S = 10.0
PUBLISHED_WEIGHTS_GIB_PER_GPU = 8.46


class OutOfMemoryError(Exception):
    """The model does not fit on the replica's GPUs at this degree and load."""


@dataclass(frozen=True)
class Estimate:
    """The estimator's answer for one replica at one load, reduced to what a profile needs."""

    concurrency: int
    ttft_ms: float
    tpot_ms: float
    tokens_per_s: float
    weights_gib: float  # per GPU
    kv_cache_tokens: int | None  # tokens the replica's KV cache holds
    fits: bool  # False: the KV cache cannot hold this many requests at once


@dataclass(frozen=True)
class EstimateRequest:
    model: str
    gpu: str
    tensor_parallel: Sequence[int]
    input_tokens: int
    output_tokens: int
    concurrencies: Sequence[int] = DEFAULT_GRID
    backend_version: str = "0.24.0"
    quant: str | None = None  # GEMM quantization, e.g. fp8; None: the checkpoint's own
    startup_seconds: float | None = None  # None: from the published figures


Estimator = Callable[[int, int], Estimate]  # (tensor parallel, concurrency) -> Estimate


def ctx_tokens(concurrency: int, input_tokens: int, output_tokens: int) -> int:
    """The prefill-token budget per engine step. At the estimator's default (one prompt's worth)
    a replica admits one prompt per step, so it cannot keep more than `output_tokens` requests
    running and its throughput falls with load; vLLM's own budget is far larger, so raise it to
    what the load needs."""
    return input_tokens * max(1, math.ceil(concurrency / output_tokens))


def startup_seconds(weights_gib_per_gpu: float) -> float:
    fixed = PUBLISHED_START_S - PUBLISHED_WEIGHTS_LOAD_S
    scaled = PUBLISHED_WEIGHTS_LOAD_S * weights_gib_per_gpu / PUBLISHED_WEIGHTS_GIB_PER_GPU
    return round(fixed + scaled, 1)


def estimate_from_record(record: dict[str, Any], input_tokens: int, output_tokens: int) -> Estimate:
    """An `Estimate` from the fields `aiconfigurator_estimator` reads off one answer. The KV
    cache's room in tokens: the budget the estimator checks the KV cache against, divided by
    what its KV cache takes per token (sized for `batch_size` sequences of ISL + OSL)."""
    memory = record["memory"]
    per_token = memory["kvcache"] / (record["batch_size"] * (input_tokens + output_tokens))
    budget = record["kv_budget_gib"]
    kv_tokens = int(budget / per_token) if per_token > 0 and budget > 0 else None
    return Estimate(
        concurrency=int(record["batch_size"]),
        ttft_ms=float(record["ttft"]),
        tpot_ms=float(record["tpot"]),
        tokens_per_s=float(record["tokens_per_s"]),
        weights_gib=float(memory["weights"]),
        kv_cache_tokens=kv_tokens,
        fits=not record["kv_cache_warning"],
    )


def estimate_degree(
    estimator: Estimator, tensor_parallel: int, grid: Iterable[int]
) -> list[Estimate]:
    """The estimates along `grid` up to the first load the replica cannot run (not included)."""
    found = []
    for concurrency in grid:
        try:
            estimate = estimator(tensor_parallel, concurrency)
        except OutOfMemoryError:
            break
        if not estimate.fits:
            break
        found.append(estimate)
    return found


def degree_profile(
    tensor_parallel: int, estimates: Sequence[Estimate], startup_override: float | None
) -> dict[str, Any]:
    """One `tensorParallel` entry of the profile format."""
    first = estimates[0]
    startup = startup_seconds(first.weights_gib) if startup_override is None else startup_override
    degree: dict[str, Any] = {"tensorParallel": tensor_parallel, "startupSeconds": startup}
    if first.kv_cache_tokens is not None:
        degree["kvCacheTokens"] = first.kv_cache_tokens
    degree["points"] = [
        {
            "concurrency": e.concurrency,
            "ttftMs": round(e.ttft_ms, 3),
            "tbtMs": round(e.tpot_ms, 4),
            "outputTokensPerS": round(e.tokens_per_s, 1),
        }
        for e in estimates
    ]
    return degree


def estimate_profile(request: EstimateRequest, estimator: Estimator) -> tuple[Profile, list[str]]:
    """The profile over every degree that fits, and a note per degree left out."""
    degrees, skipped = [], []
    for tp in sorted(request.tensor_parallel):
        estimates = estimate_degree(estimator, tp, sorted(request.concurrencies))
        if not estimates:
            skipped.append(f"TP{tp}: does not fit in memory with one request")
            continue
        degrees.append(degree_profile(tp, estimates, request.startup_seconds))
    if not degrees:
        raise OutOfMemoryError(f"{request.model} fits on {request.gpu} at none of the degrees")
    quant = request.quant or "the checkpoint's precision"
    notes = [
        f"{ESTIMATOR} {ESTIMATOR_VERSION} agg mode, database SILICON, vllm "
        f"{request.backend_version}, weights in {quant}; ctx_tokens = inputTokens x "
        "ceil(concurrency / outputTokens); TTFT is the estimator's heuristic, TBT and tokens/s "
        "are built from measured kernels; each degree stops at the first load that runs out "
        "of memory or KV cache",
        "startupSeconds: "
        + (
            "set by hand"
            if request.startup_seconds is not None
            else "published 3.5 min for a 70B FP8 TP8 vLLM start, weights' 10 s of it scaled "
            "by weights per GPU"
        ),
        *skipped,
    ]
    profile = parse_profile(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "model": request.model,
            "gpu": request.gpu,
            "engine": f"vllm {request.backend_version}",
            "workload": {
                "inputTokens": request.input_tokens,
                "outputTokens": request.output_tokens,
            },
            "provenance": {
                "source": "estimate",
                "tool": f"{ESTIMATOR} {ESTIMATOR_VERSION}",
                "date": datetime.datetime.now(datetime.UTC).date().isoformat(),
                "notes": "; ".join(notes),
            },
            "tensorParallel": degrees,
        }
    )
    return profile, skipped


def aiconfigurator_estimator(request: EstimateRequest) -> Estimator:
    """The estimator over aiconfigurator's Python API (ImportError when it is not installed)."""
    import importlib.metadata
    import logging

    from aiconfigurator.cli.api import cli_estimate

    installed = importlib.metadata.version(ESTIMATOR)
    if installed != ESTIMATOR_VERSION:
        raise ImportError(f"{ESTIMATOR} {installed} is installed, not {ESTIMATOR_VERSION}")

    for name in ("aiconfigurator", "aiconfigurator_core"):  # per-call and data-set chatter
        logging.getLogger(name).setLevel(logging.ERROR)

    def estimate(tensor_parallel: int, concurrency: int) -> Estimate:
        try:
            result = cli_estimate(
                request.model,
                request.gpu,
                mode="agg",
                backend_name="vllm",
                backend_version=request.backend_version,
                isl=request.input_tokens,
                osl=request.output_tokens,
                batch_size=concurrency,
                ctx_tokens=ctx_tokens(concurrency, request.input_tokens, request.output_tokens),
                tp_size=tensor_parallel,
                gemm_quant_mode=request.quant,
            )
        except RuntimeError as exc:
            if str(exc).startswith("OOM"):
                raise OutOfMemoryError(str(exc)) from None
            raise
        return estimate_from_record(
            estimator_record(result), request.input_tokens, request.output_tokens
        )

    return estimate


def estimator_record(result: Any) -> dict[str, Any]:
    """The fields of one aiconfigurator answer a profile needs, as plain data (what the unit
    tests record). The KV budget is the estimator's own formula over its own settings."""
    from aiconfigurator_core.sdk.memory import kv_cache_budget_bytes

    summary = result.summary
    memory = {k: float(v) for k, v in summary.get_memory().items()}
    fraction = summary._free_gpu_memory_fraction  # None: the estimator checked no KV budget
    budget = (
        0.0
        if fraction is None
        else kv_cache_budget_bytes(
            capacity=summary.get_mem_capacity_bytes() / (1 << 30),
            non_kv=memory["total"] - memory["kvcache"],
            fraction=fraction,
            of_free=summary._fraction_of_free,
            reserved=summary._kv_cache_reserved_fraction,
            tolerance=summary._kv_cache_tolerance,
        )
    )
    return {
        "batch_size": result.batch_size,
        "ttft": float(result.ttft),
        "tpot": float(result.tpot),
        "tokens_per_s": float(result.tokens_per_second),
        "memory": memory,
        "kv_budget_gib": float(budget),
        "kv_cache_warning": bool(result.kv_cache_warning),
    }
