"""The ScaleLLM benchmark's driver and load: options, the --quick plan, turn order, requests,
pooled rows, command lines, stream timing from SSE frames, and --render-only. No process is
started. The report and plots: test_bench_scalellm_report.py."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import scalellm, scalellm_load, scalellm_report, stacks
from benchmarks.common import RequestRecord, openai_completion_stream, openai_stream_by_frames

pytestmark = pytest.mark.unit


def test_quick_mode_is_a_small_plan_and_explicit_flags_still_win() -> None:
    args = scalellm.fill_defaults(
        scalellm.apply_quick(scalellm.build_parser().parse_args(["--quick"]))
    )
    assert args.concurrency == scalellm.QUICK_LEVELS
    assert args.replicas == [1]
    assert args.max_tokens == 16
    total = sum(
        scalellm_load.requests_for(c, args.rounds, args.min_requests) for c in args.concurrency
    )
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
    firsts = [scalellm_load.turn_order(labels, i)[0] for i in range(4)]
    assert firsts == labels
    assert scalellm_load.turn_order(labels, 5) == ["b", "c", "d", "a"]
    assert scalellm_load.turn_order([], 3) == []


def test_requests_per_level_are_rounds_per_client_with_a_floor() -> None:
    assert scalellm_load.requests_for(1, rounds=2, min_requests=16) == 16
    assert scalellm_load.requests_for(64, rounds=2, min_requests=16) == 128


def test_requests_differ_in_prompt_and_ask_for_a_fixed_length_stream() -> None:
    a, b = scalellm_load.request_body(0, 32), scalellm_load.request_body(1, 32)
    assert a["prompt"] != b["prompt"]
    assert a["stream"] is True
    assert a["ignore_eos"] is True
    assert a["max_tokens"] == 32
    assert a["stream_options"] == {"include_usage": True}
    assert a["model"] == stacks.SERVED_NAME
    # numbered prompts: no two of a level's requests are the same text
    assert len({scalellm_load.request_body(i, 8)["prompt"] for i in range(256)}) == 256


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


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The stream clients' clock, which `FakeContent` moves on 10 ms per line read."""
    now = [0.0]
    monkeypatch.setattr("scaleserve.profiling.load.time.perf_counter", lambda: now[0])
    return now


class FakeSession:
    def __init__(self, lines: list[bytes], clock: list[float]) -> None:
        self._content = FakeContent(lines, clock)

    def post(self, url: str, json: dict[str, Any]) -> FakeResponse:
        return FakeResponse(self._content)


@pytest.mark.asyncio
async def test_stream_timing_counts_tokens_from_usage_and_tbt_per_stream(
    clock: list[float],
) -> None:
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
    # text frames at 0.01, 0.04, 0.05: 4 tokens after the first in 0.04 s
    assert record.tbt == pytest.approx([0.01] * 4)
    assert record.frame_gaps == pytest.approx([0.03, 0.01])


@pytest.mark.asyncio
async def test_usage_timed_stream_counts_tokens_per_chunk_usage(clock: list[float]) -> None:
    lines = [
        b'data: {"choices":[{"index":0,"text":"a"}],"usage":{"completion_tokens":1}}\n',
        b"\n",
        b'data: {"choices":[{"index":0,"text":"bc"}],"usage":{"completion_tokens":3}}\n',
        b'data: {"choices":[],"usage":{"completion_tokens":3}}\n',
        b"data: [DONE]\n",
        b'data: {"choices":[{"index":0,"text":"late"}],"usage":{"completion_tokens":9}}\n',
    ]
    record = await openai_completion_stream(FakeSession(lines, clock), "http://u", "m", [1], 3)
    assert record.error == ""
    assert (record.tokens, record.messages) == (3, 2)
    assert record.ttft == pytest.approx(0.01)
    assert record.tbt == pytest.approx([0.01, 0.01])  # 0.02 s for the second message's 2 tokens


@pytest.mark.asyncio
async def test_stream_error_frame_counts_as_an_error(clock: list[float]) -> None:
    lines = [b'data: {"error":{"message":"boom"}}\n']
    record = await openai_stream_by_frames(FakeSession(lines, clock), "u", {})
    assert "boom" in record.error


def test_repeats_pool_requests_and_wall_time() -> None:
    def record(tokens: int, ttft: float) -> RequestRecord:
        r = RequestRecord(sent=0.0, first=ttft, last=ttft + 1.0, tokens=tokens, messages=tokens)
        r.tbt = [1.0 / (tokens - 1)] * (tokens - 1)
        return r

    runs = [
        scalellm_load.Run([record(10, 0.1), record(10, 0.3)], 2.0, 0.2, 1.0, 30.0),
        scalellm_load.Run([record(10, 0.2), RequestRecord(error="timeout")], 3.0, 0.3, 1.5, 32.0),
    ]
    stack = stacks.Stack("scaleserve", 2, "http://x")
    out = scalellm_load.pooled_row(stack, 4, runs, max_tokens=10)
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


def test_rows_count_requests_that_end_short_and_keep_error_samples() -> None:
    full = RequestRecord(sent=0.0, first=0.1, last=0.2, tokens=8, messages=8)
    full.frame_gaps = [0.01, 0.03]
    short = RequestRecord(sent=0.0, first=0.1, last=0.2, tokens=3, messages=3)
    failed = RequestRecord(error="HTTP 500: boom")
    out = scalellm_load.summarize_level({}, [full, short, failed], max_tokens=8)
    assert out["short"] == 1
    assert out["timeouts"] == 0
    assert out["error_samples"] == ["HTTP 500: boom"]
    assert out["frame_gap_p99_ms"] > out["frame_gap_p50_ms"] >= 10.0


def test_payload_records_the_command_and_its_ratios_and_targets() -> None:
    argv = ["--quick", "--stacks", "vllm-server,scaleserve"]
    args = scalellm.fill_defaults(scalellm.apply_quick(scalellm.build_parser().parse_args(argv)))
    rows = [
        {"stack": s, "replicas": 1, "phase": 1, "concurrency": 64, "errors": 0}
        | {"ttft_p50_ms": t, "tbt_p50_ms": t / 10, "output_tokens_per_s": 1000 / t}
        for s, t in (("vllm-server", 100.0), ("scaleserve", 40.0))
    ]
    payload = scalellm.build_payload(args, argv, 0.0, (1.0, 2.0, 3.0), rows, {"x": "why"})
    assert payload["command"] == (
        ".venv/bin/python benchmarks/scalellm.py --quick --stacks vllm-server,scaleserve"
    )
    assert payload["settings"]["concurrency"] == scalellm.QUICK_LEVELS
    assert payload["not_serving"] == {"x": "why"}
    assert payload["ratios"] == scalellm_report.ratios(rows)
    assert [t["met"] for t in payload["targets"]] == [True, True, True, True]


def test_render_only_rewrites_the_report_from_the_json(tmp_path: Path) -> None:
    rows = [
        {"stack": s, "replicas": 1, "concurrency": c, "errors": 0, "timeouts": 0}
        | {"ttft_p50_ms": 10.0 * c, "tbt_p50_ms": 2.0, "output_tokens_per_s": 100.0 * c}
        for s in ("vllm-server", "scaleserve")
        for c in (1, 8)
    ]
    payload = {"date": "2026-11-21T20:00:00", "machine": {"nproc": 2}, "rows": rows}
    (tmp_path / "scalellm.json").write_text(json.dumps(payload))
    assert scalellm.main(["--render-only", "--out-dir", str(tmp_path)]) == 0
    assert (tmp_path / "scalellm.md").read_text() == scalellm_report.render_markdown(payload)
    for name in scalellm.OUTPUTS:
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.asyncio
async def test_a_router_that_cannot_start_is_recorded_not_fatal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = str(tmp_path / "no-such-router")
    monkeypatch.setattr(stacks, "vllm_router_cmd", lambda port, urls: [missing, "--port", "1"])
    backends = stacks.Backends(vllm_urls=["http://127.0.0.1:1"])
    serving, failed = await stacks.start_stacks(["vllm-router"], 1, backends, tmp_path)
    assert serving == []
    assert list(failed) == ["vllm-router x1"]
    assert missing in failed["vllm-router x1"]
