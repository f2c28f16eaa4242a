"""The ScaleLLM benchmark's pure parts: options, the --quick plan, turn order, command lines,
stream timing from SSE frames, ratios, targets and the report. No process is started."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from benchmarks import scalellm, stacks
from benchmarks.common import RequestRecord, openai_stream_by_frames

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


def test_quick_mode_is_a_small_plan_and_explicit_flags_still_win() -> None:
    args = scalellm.fill_defaults(
        scalellm.apply_quick(scalellm.build_parser().parse_args(["--quick"]))
    )
    assert args.concurrency == scalellm.QUICK_LEVELS
    assert args.replicas == [1]
    assert args.max_tokens == 16
    total = sum(scalellm.requests_for(c, args.rounds, args.min_requests) for c in args.concurrency)
    assert total <= 100

    argv = ["--quick", "--concurrency", "2,4", "--max-tokens", "8"]
    args = scalellm.fill_defaults(scalellm.apply_quick(scalellm.build_parser().parse_args(argv)))
    assert args.concurrency == [2, 4]
    assert args.max_tokens == 8


def test_full_run_defaults_cover_the_papers_levels_with_two_replica_phases() -> None:
    args = scalellm.fill_defaults(scalellm.apply_quick(scalellm.build_parser().parse_args([])))
    assert args.concurrency == [1, 2, 4, 8, 16, 32, 64, 128]
    assert args.replicas == [1, 2]
    assert args.stacks == ["vllm-server", "vllm-router", "sglang-router", "scaleserve"]
    assert args.dtype == "float32"


@pytest.mark.parametrize("text", ["", "0", "1,-2", "x"])
def test_bad_levels_are_rejected(text: str) -> None:
    with pytest.raises((argparse.ArgumentTypeError, ValueError)):
        scalellm.parse_levels(text)


def test_unknown_stack_is_rejected() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        scalellm.parse_stacks("vllm-server,nginx")


def test_turn_order_rotates_so_each_stack_goes_first_in_turn() -> None:
    labels = ["a", "b", "c", "d"]
    firsts = [scalellm.turn_order(labels, i)[0] for i in range(4)]
    assert firsts == labels
    assert sorted(scalellm.turn_order(labels, 5)) == labels


def test_requests_differ_in_prompt_and_ask_for_a_fixed_length_stream() -> None:
    a, b = scalellm.request_body(0, 32), scalellm.request_body(1, 32)
    assert a["prompt"] != b["prompt"]
    assert a["stream"] is True
    assert a["ignore_eos"] is True
    assert a["max_tokens"] == 32
    assert a["stream_options"] == {"include_usage": True}


def test_every_engine_gets_the_same_settings() -> None:
    settings = stacks.EngineSettings(model="/m", max_num_seqs=64)
    theirs = stacks.vllm_server_cmd(settings, 8001, python="py")
    ours = stacks.scaleserve_engine_cmd(settings, 50051, 9090, python="py")
    for cmd in (theirs, ours):
        joined = " ".join(cmd)
        assert "--dtype float32" in joined
        assert "--max-model-len 1024" in joined
        assert "--max-num-seqs 64" in joined
        assert "--enable-prefix-caching" in cmd
    assert theirs[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]


def test_routers_front_every_worker_with_round_robin() -> None:
    urls = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    for cmd in (
        stacks.vllm_router_cmd(9000, urls, bin_dir="/b"),
        stacks.sglang_router_cmd(9000, urls),
    ):
        i = cmd.index("--worker-urls")
        assert cmd[i + 1 : i + 3] == urls
        assert cmd[cmd.index("--policy") + 1] == "round_robin"
    gateway = stacks.scaleserve_gateway_cmd(9000, ["127.0.0.1:1", "127.0.0.1:2"], python="py")
    assert gateway[gateway.index("--replicas") + 1] == "127.0.0.1:1,127.0.0.1:2"


class FakeContent:
    def __init__(self, lines: list[bytes], clock: list[float]) -> None:
        self._lines = lines
        self._clock = clock

    def __aiter__(self) -> FakeContent:
        return self

    async def __anext__(self) -> bytes:
        if not self._lines:
            raise StopAsyncIteration
        self._clock[0] += 0.01
        return self._lines.pop(0)


class FakeResponse:
    status = 200

    def __init__(self, content: FakeContent) -> None:
        self.content = content

    async def __aenter__(self) -> FakeResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class FakeSession:
    def __init__(self, lines: list[bytes], clock: list[float]) -> None:
        self._content = FakeContent(lines, clock)

    def post(self, url: str, json: dict[str, Any]) -> FakeResponse:
        return FakeResponse(self._content)


@pytest.mark.asyncio
async def test_stream_timing_counts_tokens_from_usage_and_tbt_per_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("benchmarks.common.time.perf_counter", lambda: clock[0])
    lines = [
        b'data: {"choices":[{"index":0,"text":"a"}]}\n',
        b"\n",
        b'data: {"choices":[{"index":0,"text":""}]}\n',  # no text: not a token frame
        b'data: {"choices":[{"index":0,"text":"bcd"}]}\n',
        b'data: {"choices":[{"index":0,"text":"e","finish_reason":"length"}]}\n',
        b'data: {"choices":[],"usage":{"completion_tokens":5}}\n',
        b"data: [DONE]\n",
    ]
    record = await openai_stream_by_frames(FakeSession(lines, clock), "u", {}, timeout_s=5)
    assert record.error == ""
    assert record.tokens == 5
    assert record.messages == 3
    assert record.ttft == pytest.approx(0.01)
    # text frames at 100.01, 100.04, 100.05: 4 tokens after the first in 0.04 s
    assert record.tbt == pytest.approx([0.01] * 4)
    assert record.frame_gaps == pytest.approx([0.03, 0.01])


@pytest.mark.asyncio
async def test_stream_error_frame_counts_as_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr("benchmarks.common.time.perf_counter", lambda: clock[0])
    lines = [b'data: {"error":{"message":"boom"}}\n']
    record = await openai_stream_by_frames(FakeSession(lines, clock), "u", {})
    assert "boom" in record.error


def sample_rows() -> list[dict[str, Any]]:
    rows = []
    for level in (1, 64, 128):
        rows.append(row("vllm-server", level, 100.0, 10.0, 1000.0))
        rows.append(row("vllm-router", level, 120.0, 11.0, 900.0))
        rows.append(row("sglang-router", level, 110.0, 10.5, 950.0))
        rows.append(row("scaleserve", level, 40.0, 4.0, 2000.0))
    return rows


def test_ratios_are_against_vllms_server_at_the_same_level() -> None:
    out = scalellm.ratios(sample_rows())
    ours64 = next(r for r in out if r["stack"] == "scaleserve" and r["concurrency"] == 64)
    assert ours64["ttft_p50_ratio"] == 0.4
    assert ours64["tbt_p50_ratio"] == 0.4
    assert ours64["tokens_per_s_ratio"] == 2.0
    assert all(r["stack"] != "vllm-server" for r in out)


def test_targets_met_and_missed() -> None:
    targets = scalellm.evaluate_targets(sample_rows())
    assert targets
    assert all(t["met"] for t in targets)
    rows = sample_rows()
    rows[-1] = row("scaleserve", 128, 130.0, 4.0, 2000.0, errors=2)
    missed = {t["target"] for t in scalellm.evaluate_targets(rows) if not t["met"]}
    assert "128 streams: scaleserve ahead of vllm-router on all three" in missed
    assert "scaleserve: zero errors at every level" in missed


def test_report_has_the_papers_table_shape_and_plots_render(tmp_path: Path) -> None:
    rows = sample_rows()
    payload: dict[str, Any] = {
        "date": "2026-11-21T20:00:00",
        "command": ".venv/bin/python benchmarks/scalellm.py --quick",
        "machine": {"nproc": 2, "cpu_model": "cpu", "memory_gib": 24},
        "rows": rows,
        "targets": scalellm.evaluate_targets(rows),
    }
    text = scalellm.render_markdown(payload)
    assert (
        "| concurrency | vLLM server x1 | vllm-router x1 | sglang-router x1 | scaleserve x1 |"
        in text
    )
    assert "| 64 | 100 (1.00x)" not in text  # the baseline carries no ratio to itself
    assert "40 (0.40x)" in text
    assert "## Targets" in text
    scalellm.plot(payload, tmp_path / "lat.png", tmp_path / "tps.png")
    assert (tmp_path / "lat.png").stat().st_size > 1000
    assert (tmp_path / "tps.png").stat().st_size > 1000


def test_report_adds_the_cpu_table_when_the_rows_carry_cpu_figures() -> None:
    rows = [
        r | {"front_cpu_s_per_1k_tokens": 0.5, "stack_cpu_s_per_1k_tokens": 1.25}
        for r in sample_rows()
    ]
    text = scalellm.render_markdown({"rows": rows})
    assert "## CPU seconds per 1k output tokens, 1 replica(s)" in text
    assert "| 64 | 0.50 (1.25) |" in text
    assert "CPU seconds" not in scalellm.render_markdown({"rows": sample_rows()})


def test_repeats_pool_requests_and_wall_time() -> None:
    def record(tokens: int, ttft: float) -> RequestRecord:
        r = RequestRecord(sent=0.0, first=ttft, last=ttft + 1.0, tokens=tokens, messages=tokens)
        r.tbt = [1.0 / (tokens - 1)] * (tokens - 1)
        return r

    runs = [
        scalellm.Run([record(10, 0.1), record(10, 0.3)], 2.0, 0.2, 1.0, 30.0),
        scalellm.Run([record(10, 0.2), RequestRecord(error="timeout")], 3.0, 0.3, 1.5, 32.0),
    ]
    stack = stacks.Stack("scaleserve", 2, "http://x")
    out = scalellm.pooled_row(stack, 4, runs, max_tokens=10)
    assert out["requests"] == 4
    assert out["errors"] == 1
    assert out["timeouts"] == 1
    assert out["output_tokens"] == 30
    assert out["output_tokens_per_s"] == 6.0  # 30 tokens over 5 s
    assert out["ttft_p50_ms"] == 200.0
    assert out["front_cpu_s_per_1k_tokens"] == round(0.5 / 30 * 1000, 4)
    assert out["tokens_per_s_each"] == [10.0, round(10 / 3, 1)]
    assert (out["stack"], out["replicas"], out["concurrency"], out["repeats"]) == (
        "scaleserve",
        2,
        4,
        2,
    )


def test_replicas_get_their_own_core_when_spread() -> None:
    assert stacks.replica_env(0, True, cpus=2) == {"VLLM_CPU_OMP_THREADS_BIND": "0"}
    assert stacks.replica_env(1, True, cpus=2) == {"VLLM_CPU_OMP_THREADS_BIND": "1"}
    assert stacks.replica_env(2, True, cpus=2) == {"VLLM_CPU_OMP_THREADS_BIND": "0"}
    assert stacks.replica_env(1, False) == {}


def test_engines_sharing_a_gpu_start_one_at_a_time() -> None:
    assert stacks.start_one_by_one(stacks.EngineSettings(model="/m", gpu_memory_utilization=0.4))
    assert not stacks.start_one_by_one(stacks.EngineSettings(model="/m"))
    cmd = stacks.vllm_server_cmd(stacks.EngineSettings(model="/m", gpu_memory_utilization=0.4), 1)
    assert cmd[cmd.index("--gpu-memory-utilization") + 1] == "0.4"
