"""The engine's settings: one frozen object, built once from flags and environment, validated.

Every flag `--some-flag` can also be given as `SCALESERVE_ENGINE_SOME_FLAG`; an explicit flag
wins over the environment, which wins over the default.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaleserve.engine.errors import SettingsError

ENV_PREFIX = "SCALESERVE_ENGINE_"
DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
TASKS = ("generate", "embed")


@dataclass(frozen=True)
class EngineSettings:
    model: str
    served_name: str
    host: str = "0.0.0.0"
    port: int = 50051
    metrics_port: int = 9090  # 0 disables the HTTP endpoint
    tensor_parallel_size: int = 1
    dtype: str = "auto"
    quantization: str | None = None
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    enable_prefix_caching: bool | None = None  # None: vLLM's default for the model
    max_num_seqs: int | None = None
    enable_expert_parallel: bool = False
    drain_timeout: float = 30.0
    stall_timeout: float = 120.0  # NOT_SERVING after this long without progress (0: never)
    extra_engine_args: Mapping[str, Any] = field(default_factory=dict)
    tool_call_parser: str | None = None  # a vLLM tool parser name: tool_choice auto/required
    reasoning_parser: str | None = None  # a vLLM reasoning parser name: reasoning_content
    task: str = "generate"  # embed: vLLM's pooling runner, the Embed call instead of Generate
    log_level: str = "info"

    def __post_init__(self) -> None:
        _require(bool(self.model), "model", "is required")
        _require(bool(self.served_name), "served_name", "must not be empty")
        _require(0 < self.port < 65536, "port", f"must be in 1..65535, got {self.port}")
        _require(
            0 <= self.metrics_port < 65536,
            "metrics_port",
            f"must be in 0..65535, got {self.metrics_port}",
        )
        _require(self.tensor_parallel_size >= 1, "tensor_parallel_size", "must be >= 1")
        _require(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
        _require(self.task in TASKS, "task", f"must be one of {', '.join(TASKS)}")
        _require(
            self.task == "generate" or not self.tool_call_parser,
            "tool_call_parser",
            "has no use with --task embed",
        )
        _require(
            0.0 < self.gpu_memory_utilization <= 1.0,
            "gpu_memory_utilization",
            f"must be in (0, 1], got {self.gpu_memory_utilization}",
        )
        _require(
            self.max_model_len is None or self.max_model_len >= 1,
            "max_model_len",
            "must be >= 1",
        )
        _require(
            self.max_num_seqs is None or self.max_num_seqs >= 1, "max_num_seqs", "must be >= 1"
        )
        _require(self.drain_timeout >= 0, "drain_timeout", "must be >= 0")
        _require(self.stall_timeout >= 0, "stall_timeout", "must be >= 0")
        _require(
            isinstance(self.extra_engine_args, Mapping),
            "extra_engine_args",
            "must be a JSON object",
        )

    @property
    def model_path(self) -> Path | None:
        """The model directory when the model is a local path (else a hub id)."""
        path = Path(self.model)
        return path if path.exists() else None


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise SettingsError(f"--{name.replace('_', '-')} {message}")


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text) if text.strip() else {}
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    return value


def _optional_str(text: str) -> str | None:
    return text or None


# flag name -> parser of its environment value
_PARSERS: dict[str, Callable[[str], Any]] = {
    "model": str,
    "served_name": str,
    "host": str,
    "port": int,
    "metrics_port": int,
    "tensor_parallel_size": int,
    "dtype": str,
    "quantization": _optional_str,
    "max_model_len": int,
    "gpu_memory_utilization": float,
    "enable_prefix_caching": _bool,
    "max_num_seqs": int,
    "enable_expert_parallel": _bool,
    "drain_timeout": float,
    "stall_timeout": float,
    "extra_engine_args": _json_object,
    "tool_call_parser": _optional_str,
    "reasoning_parser": _optional_str,
    "task": str,
    "log_level": str,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the engine's flags. Every default is None so that the environment can fill in."""
    add = parser.add_argument
    add("--model", help="model directory or hub id")
    add("--served-name", help="name clients use for the model (default: the model's dir name)")
    add("--host", help="gRPC listen address (default 0.0.0.0)")
    add("--port", type=int, help="gRPC port (default 50051)")
    add("--metrics-port", type=int, help="HTTP port for /metrics, /healthz, /readyz (0: off)")
    add("--tensor-parallel-size", type=int, help="GPUs per replica (default 1)")
    add("--dtype", choices=DTYPES, help="weights and activations dtype (default auto)")
    add("--quantization", help="quantization method, e.g. fp8, awq, gptq")
    add("--max-model-len", type=int, help="context length (default: the model's)")
    add("--gpu-memory-utilization", type=float, help="GPU memory fraction (default 0.9)")
    add("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    add("--max-num-seqs", type=int, help="max concurrently running sequences")
    add("--enable-expert-parallel", action=argparse.BooleanOptionalAction, default=None)
    add("--drain-timeout", type=float, help="seconds to finish in-flight work on SIGTERM")
    add(
        "--stall-timeout",
        type=float,
        help="seconds without progress, with requests in flight, before Health says "
        "NOT_SERVING and /readyz fails (default 120; 0: never)",
    )
    add("--extra-engine-args", type=_json_object, help="JSON object merged into vLLM's args")
    add(
        "--tool-call-parser",
        help="vLLM tool parser for the model's tool-call format (hermes, llama3_json, mistral, "
        "...): enables tool_choice auto, required and named functions (default: off)",
    )
    add(
        "--reasoning-parser",
        help="vLLM reasoning parser for the model's thinking format (deepseek_r1, qwen3, ...): "
        "chat answers carry the reasoning in reasoning_content, apart from content "
        "(default: off)",
        "--task",
        choices=TASKS,
        help="generate (default) or embed: serve embeddings with vLLM's pooling runner (a "
        "causal LM is converted to an embedding model)",
    )
    add("--log-level", help="debug, info, warning or error (default info)")


def settings_from(args: argparse.Namespace, environ: Mapping[str, str]) -> EngineSettings:
    """Merge flags over `SCALESERVE_ENGINE_*` environment values over defaults; validate."""
    values: dict[str, Any] = {}
    for name, parse in _PARSERS.items():
        flag_value = getattr(args, name, None)
        if flag_value is not None:
            values[name] = flag_value
            continue
        env_value = environ.get(ENV_PREFIX + name.upper())
        if env_value is None or env_value == "":
            continue
        try:
            values[name] = parse(env_value)
        except ValueError as exc:
            raise SettingsError(f"{ENV_PREFIX}{name.upper()}: {exc}") from exc
    if not values.get("model"):
        raise SettingsError("--model (or SCALESERVE_ENGINE_MODEL) is required")
    values.setdefault("served_name", Path(str(values["model"]).rstrip("/")).name)
    if values.get("enable_expert_parallel") is None:
        values.pop("enable_expert_parallel", None)
    return EngineSettings(**values)


def settings_from_environment(args: argparse.Namespace) -> EngineSettings:
    return settings_from(args, os.environ)
