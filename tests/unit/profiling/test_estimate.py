"""The offline estimate's conversion, on aiconfigurator 0.12.0 answers recorded in data/ (so no
estimator is needed here): points, KV-cache room, where a degree stops, provenance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scaleserve.profiles import dump_profile, parse_profile
from scaleserve.profiling.estimate import (
    Estimate,
    EstimateRequest,
    OutOfMemoryError,
    ctx_tokens,
    estimate_from_record,
    estimate_profile,
    startup_seconds,
)

pytestmark = pytest.mark.unit

RECORDED = json.loads((Path(__file__).parent / "data" / "aiconfigurator-0.12.0.json").read_text())
ISL, OSL = 1024, 256


def recorded_estimator(model: str, gpu: str) -> Any:
    """An estimator answering from the recording, as `aiconfigurator_estimator` would."""
    answers = {
        (a["tensor_parallel"], a["concurrency"]): a
        for a in RECORDED["answers"]
        if (a["model"], a["gpu"]) == (model, gpu)
    }

    def estimate(tensor_parallel: int, concurrency: int) -> Estimate:
        answer = answers[(tensor_parallel, concurrency)]
        assert answer["ctx_tokens"] == ctx_tokens(concurrency, ISL, OSL)
        if "error" in answer:
            raise OutOfMemoryError(answer["error"])
        return estimate_from_record(answer["answer"], ISL, OSL)

    return estimate


def request(
    model: str, gpu: str, degrees: tuple[int, ...], grid: tuple[int, ...]
) -> EstimateRequest:
    return EstimateRequest(model, gpu, degrees, ISL, OSL, concurrencies=grid)


def test_the_prefill_budget_grows_once_a_replica_runs_more_requests_than_output_tokens() -> None:
    assert ctx_tokens(1, ISL, OSL) == ISL
    assert ctx_tokens(256, ISL, OSL) == ISL
    assert ctx_tokens(257, ISL, OSL) == 2 * ISL
    assert ctx_tokens(2048, ISL, OSL) == 8 * ISL


def test_startup_is_the_published_figure_for_its_layout_and_grows_with_weights() -> None:
    assert startup_seconds(8.46) == 210.0  # 70B FP8 TP8: about 3.5 min
    assert startup_seconds(2 * 8.46) == 220.0
    assert startup_seconds(0.0) == 200.0


def test_an_answer_becomes_a_point_with_the_kv_cache_room_in_tokens() -> None:
    answer = next(
        a["answer"]
        for a in RECORDED["answers"]
        if a["gpu"] == "h200_sxm" and a["tensor_parallel"] == 1 and a["concurrency"] == 64
    )
    estimate = estimate_from_record(answer, ISL, OSL)
    assert estimate.ttft_ms == answer["ttft"]
    assert estimate.tpot_ms == answer["tpot"]
    assert estimate.fits
    # Llama-3.1-8B in bf16 keeps 32 layers x 8 KV heads x 128 x 2 (K, V) x 2 bytes per token
    per_token_gib = 32 * 8 * 128 * 2 * 2 / (1 << 30)
    assert estimate.kv_cache_tokens == pytest.approx(answer["kv_budget_gib"] / per_token_gib, 1e-6)


def test_a_degree_stops_before_the_first_load_its_kv_cache_cannot_hold() -> None:
    model = "meta-llama/Meta-Llama-3.1-8B"
    req = request(model, "h200_sxm", (1, 8), (1, 64, 512, 768))
    profile, skipped = estimate_profile(req, recorded_estimator(model, "h200_sxm"))
    assert skipped == []
    tp1, tp8 = profile.degree(1), profile.degree(8)
    assert tp1 is not None
    assert tp8 is not None
    assert [p.concurrency for p in tp1.points] == [1, 64, 512]  # 768: the KV cache is full
    assert [p.concurrency for p in tp8.points] == [1, 64, 512, 768]
    assert tp1.kv_cache_tokens is not None
    assert 512 * (ISL + OSL) <= tp1.kv_cache_tokens < 768 * (ISL + OSL)
    assert tp8.tbt_ms(1) < tp1.tbt_ms(1)  # more GPUs per replica: faster tokens
    assert all(p.output_tokens_per_s for p in tp1.points)


def test_degrees_that_do_not_fit_are_left_out_and_said_so_in_the_provenance() -> None:
    model = "meta-llama/Meta-Llama-3.1-70B"
    req = request(model, "h100_sxm", (1, 2), (1, 16))
    profile, skipped = estimate_profile(req, recorded_estimator(model, "h100_sxm"))
    assert [d.tensor_parallel for d in profile.degrees] == [2]
    assert skipped == ["TP1: does not fit in memory with one request"]
    tp2 = profile.degree(2)
    assert tp2 is not None
    assert [p.concurrency for p in tp2.points] == [1]
    assert profile.provenance.source == "estimate"
    assert profile.provenance.tool == "aiconfigurator 0.12.0"
    assert "TP1: does not fit" in profile.provenance.notes
    assert profile.engine == "vllm 0.24.0"
    assert (profile.workload.input_tokens, profile.workload.output_tokens) == (ISL, OSL)
    assert parse_profile(dump_profile(profile)) == profile


def test_a_model_that_fits_nowhere_is_an_error() -> None:
    model = "meta-llama/Meta-Llama-3.1-70B"
    with pytest.raises(OutOfMemoryError, match="none of the degrees"):
        estimate_profile(
            request(model, "h200_sxm", (1,), (1,)), recorded_estimator(model, "h200_sxm")
        )


def test_a_startup_given_by_hand_wins() -> None:
    model = "meta-llama/Meta-Llama-3.1-8B"
    req = EstimateRequest(model, "h200_sxm", (8,), ISL, OSL, (1, 64), startup_seconds=42)
    profile, _ = estimate_profile(req, recorded_estimator(model, "h200_sxm"))
    assert profile.degrees[0].startup_seconds == 42
    assert "set by hand" in profile.provenance.notes
