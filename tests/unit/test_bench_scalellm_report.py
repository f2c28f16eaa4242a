"""The ScaleLLM benchmark's report and plots: ratios to vLLM's server, the issue's targets, the
markdown tables and the PNGs, from rows made up here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import scalellm_plot, scalellm_report

pytestmark = pytest.mark.unit


def row(
    stack: str, concurrency: int, ttft: float, tbt: float, tps: float, **extra: Any
) -> dict[str, Any]:
    base = {
        "stack": stack,
        "replicas": 1,
        "concurrency": concurrency,
        "ttft_p50_ms": ttft,
        "ttft_p99_ms": ttft * 2,
        "tbt_p50_ms": tbt,
        "tbt_p99_ms": tbt * 2,
        "output_tokens_per_s": tps,
        "errors": 0,
        "timeouts": 0,
    }
    return base | extra


def sample_rows(phase: int = 1) -> list[dict[str, Any]]:
    rows = []
    for level in (1, 64, 128):
        rows.append(row("vllm-server", level, 100.0, 10.0, 1000.0, phase=phase))
        for name, ttft, tbt, tps in (
            ("vllm-router", 120.0, 11.0, 900.0),
            ("sglang-router", 110.0, 10.5, 950.0),
            ("scaleserve", 40.0, 4.0, 2000.0),
        ):
            rows.append(row(name, level, ttft, tbt, tps, replicas=phase, phase=phase))
    return rows


def test_ratios_are_against_vllms_server_at_the_same_level() -> None:
    out = scalellm_report.ratios(sample_rows())
    ours64 = next(r for r in out if r["stack"] == "scaleserve" and r["concurrency"] == 64)
    assert ours64["ttft_p50_ratio"] == 0.4
    assert ours64["tbt_p50_ratio"] == 0.4
    assert ours64["tokens_per_s_ratio"] == 2.0
    assert all(r["stack"] != "vllm-server" for r in out)
    assert len(out) == 9  # three stacks at three levels


def test_ratios_stay_within_a_phase_and_skip_what_has_no_baseline() -> None:
    two = [r | {"ttft_p50_ms": r["ttft_p50_ms"] * 2} for r in sample_rows(phase=2)]
    two = [r for r in two if not (r["stack"] == "vllm-server" and r["concurrency"] == 128)]
    two[0]["tbt_p50_ms"] = 0.0  # the baseline at level 1 in phase 2
    out = scalellm_report.ratios(sample_rows() + two)
    by_key = {(r["phase"], r["stack"], r["concurrency"]): r for r in out}
    # phase 2 divides by phase 2's baseline (both doubled), not phase 1's
    assert by_key[(2, "scaleserve", 64)]["ttft_p50_ratio"] == 0.4
    assert by_key[(2, "scaleserve", 64)]["replicas"] == 2
    assert (2, "scaleserve", 128) not in by_key
    assert by_key[(2, "scaleserve", 1)]["tbt_p50_ratio"] is None  # no dividing by zero
    assert by_key[(1, "scaleserve", 128)]["ttft_p50_ratio"] == 0.4


def test_targets_met_and_missed() -> None:
    targets = scalellm_report.evaluate_targets(sample_rows())
    assert len(targets) == 3 + 4 + 1
    assert all(t["met"] for t in targets)
    rows = sample_rows()
    rows[-1] = row("scaleserve", 128, 130.0, 4.0, 2000.0, errors=2, phase=1)
    missed = {t["target"] for t in scalellm_report.evaluate_targets(rows) if not t["met"]}
    assert missed == {
        "128 streams: scaleserve ahead of vllm-router on all three",
        "128 streams: scaleserve ahead of sglang-router on all three",
        "scaleserve: zero errors at every level",
    }


def test_baseline_targets_carry_the_ratio_and_their_bound() -> None:
    rows = [
        row("vllm-server", 64, 100.0, 10.0, 1000.0),
        row("scaleserve", 64, 50.0, 5.1, 1500.0),
    ]
    targets = {t["target"]: t for t in scalellm_report.evaluate_targets(rows)}
    ttft = targets["64 streams vs vLLM server: TTFT p50 <= 0.5x"]
    tbt = targets["64 streams vs vLLM server: TBT p50 <= 0.5x"]
    tps = targets["64 streams vs vLLM server: tokens/s >= 1.5x"]
    assert (ttft["value"], ttft["met"]) == (0.5, True)  # the bound itself counts as met
    assert (tbt["value"], tbt["met"]) == (0.51, False)
    assert (tps["value"], tps["met"]) == (1.5, True)


def test_targets_are_judged_per_phase() -> None:
    two = sample_rows(phase=2)
    for r in two:
        if r["stack"] == "scaleserve" and r["concurrency"] == 64:
            r["output_tokens_per_s"] = 100.0
    targets = scalellm_report.evaluate_targets(sample_rows() + two)
    missed = [(t["phase"], t["target"]) for t in targets if not t["met"]]
    assert missed == [
        (2, "64 streams vs vLLM server: tokens/s >= 1.5x"),
        (2, "64 streams: scaleserve ahead of vllm-router on all three"),
        (2, "64 streams: scaleserve ahead of sglang-router on all three"),
    ]


def test_no_targets_without_scaleserve() -> None:
    rows = [r for r in sample_rows() if r["stack"] != "scaleserve"]
    assert scalellm_report.evaluate_targets(rows) == []


@pytest.mark.parametrize(
    ("value", "ref", "text"),
    [
        (40.0, 100.0, "40 (0.40x)"),
        (455.4, 204.0, "455 (2.23x)"),
        (0.0071, 0.007, "0.0071 (1.01x)"),
        (12.345, None, "12.3"),
        (5.0, 0.0, "5"),  # a zero baseline: the figure alone
    ],
)
def test_cells_show_three_significant_digits_and_the_ratio(
    value: float, ref: float | None, text: str
) -> None:
    ref_row = None if ref is None else {"k": ref}
    assert scalellm_report.cell({"k": value}, "k", ref_row) == text


def test_report_has_the_papers_table_shape() -> None:
    rows = sample_rows()
    payload: dict[str, Any] = {
        "date": "2026-11-21T20:00:00",
        "command": ".venv/bin/python benchmarks/scalellm.py --quick",
        "machine": {"nproc": 2, "cpu_model": "cpu", "memory_gib": 24},
        "rows": rows,
        "targets": scalellm_report.evaluate_targets(rows),
    }
    text = scalellm_report.render_markdown(payload)
    assert (
        "| concurrency | vLLM server x1 | vllm-router x1 | sglang-router x1 | scaleserve x1 |"
        in text
    )
    assert "| 64 | 100 | 120 (1.20x) | 110 (1.10x) | 40 (0.40x) |" in text
    assert "| 64 | 100 (1.00x)" not in text  # the baseline carries no ratio to itself
    assert "## TBT p50 (ms), 1 engine replica(s) behind each router" in text
    assert "Command: `.venv/bin/python benchmarks/scalellm.py --quick`" in text
    assert "## Targets" in text
    assert "| 1 | scaleserve: zero errors at every level | 0 | yes |" in text


def test_report_marks_missing_cells_and_stacks_that_did_not_serve() -> None:
    rows = [r for r in sample_rows() if not (r["stack"] == "scaleserve" and r["concurrency"] == 1)]
    rows = [r for r in rows if r["stack"] != "sglang-router"]
    rows.append(row("scaleserve", 64, 1.0, 1.0, 1.0, phase=1, errors=3, timeouts=2))
    payload = {"rows": rows, "not_serving": {"sglang-router x1": "exited\ntraceback"}}
    text = scalellm_report.render_markdown(payload)
    assert "| 1 | 100 | 120 (1.20x) | — |" in text
    assert "sglang-router x1 |" not in text  # a stack with no rows gets no column
    assert "Stacks that did not serve here: sglang-router x1: exited" in text
    assert "traceback" not in text
    assert "scaleserve 3 (2)" in text
    assert "## Targets" not in text  # none were passed in


def test_phases_get_their_own_tables() -> None:
    text = scalellm_report.render_markdown({"rows": sample_rows() + sample_rows(phase=2)})
    heads = (
        "| concurrency | vLLM server x1 | vllm-router x{n} | sglang-router x{n} | scaleserve x{n} |"
    )
    assert text.count(heads.format(n=1)) == 3
    assert text.count(heads.format(n=2)) == 3
    phase1_errors = text.index("Errors (timeouts), all levels, 1 replica(s)")
    assert phase1_errors < text.index("## TTFT p50 (ms), 2 engine replica(s) behind each router")
    assert "Errors (timeouts), all levels, 2 replica(s)" in text


def test_rows_without_a_phase_are_grouped_by_their_replicas() -> None:
    assert scalellm_report.phase_of({"replicas": 2}) == 2
    assert scalellm_report.phase_of({"replicas": 1, "phase": 2}) == 2
    legacy = [{k: v for k, v in r.items() if k != "phase"} for r in sample_rows()]
    assert list(scalellm_report.by_phase(legacy)) == [1]


def test_report_adds_the_cpu_table_when_the_rows_carry_cpu_figures() -> None:
    rows = [
        r | {"front_cpu_s_per_1k_tokens": 0.5, "stack_cpu_s_per_1k_tokens": 1.25}
        for r in sample_rows()
    ]
    text = scalellm_report.render_markdown({"rows": rows})
    assert "## CPU seconds per 1k output tokens, 1 replica(s)" in text
    assert "| 64 | 0.50 (1.25) |" in text
    assert "CPU seconds" not in scalellm_report.render_markdown({"rows": sample_rows()})


def test_plot_series_follow_the_table_order_and_name_the_baselines_run() -> None:
    rows = list(reversed(sample_rows() + sample_rows(phase=2)))
    series = scalellm_plot.series(rows)
    assert [(phase, stack) for phase, stack, _ in series][:4] == [
        (1, "vllm-server"),
        (1, "vllm-router"),
        (1, "sglang-router"),
        (1, "scaleserve"),
    ]
    assert [p["concurrency"] for p in series[0][2]] == [1, 64, 128]
    assert scalellm_plot.series_label(1, "vllm-server", 1) == "vLLM server x1"
    assert scalellm_plot.series_label(2, "vllm-server", 1) == "vLLM server x1 (2-replica run)"
    assert scalellm_plot.series_label(2, "scaleserve", 2) == "scaleserve x2"
    assert [scalellm_plot.minor_label(v, None) for v in (20.0, 30.0, 500.0)] == ["20", "", "500"]


def test_plots_render(tmp_path: Path) -> None:
    payload = {"date": "2026-11-21", "machine": {"nproc": 2}, "rows": sample_rows()}
    scalellm_plot.plot(payload, tmp_path / "lat.png", tmp_path / "tps.png")
    for name in ("lat.png", "tps.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / name).stat().st_size > 1000
