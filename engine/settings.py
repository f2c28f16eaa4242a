"""The engine's settings: one frozen object, built once from flags and environment, validated.

Every flag `--some-flag` can also be given as `SCALESERVE_ENGINE_SOME_FLAG`; an explicit flag
wins over the environment, which wins over the default (`EngineSettings.load`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, NonNegativeFloat, PositiveInt, model_validator
from pydantic_settings import SettingsConfigDict

from scaleserve.engine.errors import SettingsError
from scaleserve.settings import JsonObject, NonEmptyStr, OptionalStr, Port, PortOrOff, Settings

Dtype = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]
DTYPES = get_args(Dtype)
Task = Literal["generate", "embed"]
TASKS = get_args(Task)


class EngineSettings(Settings):
    model_config = SettingsConfigDict(env_prefix="SCALESERVE_ENGINE_")
    settings_error = SettingsError

    model: NonEmptyStr
    served_name: str = ""  # "": the model's directory name
    host: str = "0.0.0.0"
    port: Port = 50051
    metrics_port: PortOrOff = 9090  # 0 disables the HTTP endpoint
    tensor_parallel_size: PositiveInt = 1
    dtype: Dtype = "auto"
    quantization: OptionalStr = None
    max_model_len: PositiveInt | None = None
    gpu_memory_utilization: Annotated[float, Field(gt=0.0, le=1.0)] = 0.9
    enable_prefix_caching: bool | None = None  # None: vLLM's default for the model
    max_num_seqs: PositiveInt | None = None
    enable_expert_parallel: bool = False
    drain_timeout: NonNegativeFloat = 30.0
    stall_timeout: NonNegativeFloat = 120.0  # NOT_SERVING after this long stalled (0: never)
    extra_engine_args: JsonObject = {}
    tool_call_parser: OptionalStr = None  # a vLLM tool parser name: tool_choice auto/required
    reasoning_parser: OptionalStr = None  # a vLLM reasoning parser name: reasoning_content
    task: Task = "generate"  # embed: vLLM's pooling runner, the Embed call instead of Generate
    log_level: str = "info"

    @model_validator(mode="before")
    @classmethod
    def _served_name_from_model(cls, values: Any) -> Any:
        if isinstance(values, dict) and not values.get("served_name") and values.get("model"):
            values = {**values, "served_name": Path(str(values["model"]).rstrip("/")).name}
        return values

    @model_validator(mode="after")
    def _consistent(self) -> EngineSettings:
        if self.task == "embed" and self.tool_call_parser:
            raise ValueError("--tool-call-parser has no use with --task embed")
        return self

    @property
    def model_path(self) -> Path | None:
        """The model directory when the model is a local path (else a hub id)."""
        path = Path(self.model)
        return path if path.exists() else None


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
    add("--extra-engine-args", help="JSON object merged into vLLM's args")
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
    )
    add(
        "--task",
        choices=TASKS,
        help="generate (default) or embed: serve embeddings with vLLM's pooling runner (a "
        "causal LM is converted to an embedding model)",
    )
    add("--log-level", help="debug, info, warning or error (default info)")
