"""Engine settings: flags over environment over defaults, validation, and vLLM engine args."""

from __future__ import annotations

import argparse

import pytest
from pydantic import ValidationError

from scaleserve.engine.engine_args import build_engine_args, engine_args_kwargs
from scaleserve.engine.errors import SettingsError
from scaleserve.engine.settings import EngineSettings, add_arguments

pytestmark = pytest.mark.engine


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_win_over_environment_over_defaults() -> None:
    env = {
        "SCALESERVE_ENGINE_MODEL": "/models/env",
        "SCALESERVE_ENGINE_PORT": "6000",
        "SCALESERVE_ENGINE_ENABLE_PREFIX_CACHING": "false",
        "SCALESERVE_ENGINE_EXTRA_ENGINE_ARGS": '{"seed": 3}',
    }
    settings = EngineSettings.load(parse("--port", "7000", "--tensor-parallel-size", "2"), env)
    assert settings.model == "/models/env"
    assert settings.served_name == "env"
    assert settings.port == 7000
    assert settings.tensor_parallel_size == 2
    assert settings.enable_prefix_caching is False
    assert settings.extra_engine_args == {"seed": 3}
    assert settings.metrics_port == 9090
    assert settings.drain_timeout == 30.0


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        ((), {}, "--model"),
        (("--model", "m", "--port", "0"), {}, "--port"),
        (("--model", "m", "--gpu-memory-utilization", "1.5"), {}, "--gpu-memory-utilization"),
        (("--model", "m", "--tensor-parallel-size", "0"), {}, "--tensor-parallel-size"),
        (("--model", "m", "--max-num-seqs", "0"), {}, "--max-num-seqs"),
        (("--model", "m", "--drain-timeout", "-1"), {}, "--drain-timeout"),
        (("--model", "m"), {"SCALESERVE_ENGINE_PORT": "http"}, "SCALESERVE_ENGINE_PORT"),
        (("--model", "m"), {"SCALESERVE_ENGINE_EXTRA_ENGINE_ARGS": "[1]"}, "EXTRA_ENGINE_ARGS"),
    ],
)
def test_invalid_settings_are_refused_at_start_up(
    argv: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        EngineSettings.load(parse(*argv), env)


def test_settings_are_frozen() -> None:
    settings = EngineSettings(model="m", served_name="n")
    with pytest.raises(ValidationError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_settings_map_onto_vllm_engine_args() -> None:
    settings = EngineSettings.load(
        parse(
            "--model", "/models/mixtral", "--served-name", "mixtral",
            "--tensor-parallel-size", "4", "--dtype", "bfloat16", "--quantization", "fp8",
            "--max-model-len", "4096", "--gpu-memory-utilization", "0.85",
            "--enable-prefix-caching", "--max-num-seqs", "128", "--enable-expert-parallel",
            "--extra-engine-args", '{"seed": 1, "max_num_batched_tokens": 8192}',
        ),
        {},
    )  # fmt: skip
    args = build_engine_args(settings)
    assert args.model == "/models/mixtral"
    assert args.served_model_name == "mixtral"
    assert args.tensor_parallel_size == 4
    assert args.dtype == "bfloat16"
    assert args.quantization == "fp8"
    assert args.max_model_len == 4096
    assert args.gpu_memory_utilization == 0.85
    assert args.enable_prefix_caching is True
    assert args.max_num_seqs == 128
    assert args.enable_expert_parallel is True
    assert args.seed == 1
    assert args.max_num_batched_tokens == 8192


def test_unset_settings_leave_vllm_defaults() -> None:
    kwargs = engine_args_kwargs(EngineSettings(model="m", served_name="n"))
    for name in ("quantization", "max_model_len", "enable_prefix_caching", "max_num_seqs"):
        assert name not in kwargs


def test_unknown_extra_engine_args_are_refused() -> None:
    settings = EngineSettings(model="m", served_name="n", extra_engine_args={"no_such_arg": 1})
    with pytest.raises(SettingsError, match="no_such_arg"):
        build_engine_args(settings)


def test_the_reasoning_parser_reaches_vllms_engine_args() -> None:
    """As vLLM's --reasoning-parser, it is also an engine argument: structured outputs then
    constrain only what follows the reasoning."""
    from_env = EngineSettings.load(
        parse("--model", "m"), {"SCALESERVE_ENGINE_REASONING_PARSER": "qwen3"}
    )
    from_flag = EngineSettings.load(parse("--model", "m", "--reasoning-parser", "deepseek_r1"), {})
    assert engine_args_kwargs(from_env)["reasoning_parser"] == "qwen3"
    assert engine_args_kwargs(from_flag)["reasoning_parser"] == "deepseek_r1"
    assert "reasoning_parser" not in engine_args_kwargs(
        EngineSettings.load(parse("--model", "m"), {})
    )
