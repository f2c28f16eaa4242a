"""Mapping of the engine's settings onto vLLM's AsyncEngineArgs (same on GPU and CPU builds)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from scaleserve.engine.errors import SettingsError
from scaleserve.engine.settings import EngineSettings

if TYPE_CHECKING:
    from vllm.engine.arg_utils import AsyncEngineArgs


def engine_args_kwargs(settings: EngineSettings) -> dict[str, Any]:
    """The keyword arguments for AsyncEngineArgs; `extra_engine_args` override the rest."""
    kwargs: dict[str, Any] = {
        "model": settings.model,
        "served_model_name": settings.served_name,
        "tensor_parallel_size": settings.tensor_parallel_size,
        "dtype": settings.dtype,
        "gpu_memory_utilization": settings.gpu_memory_utilization,
        "enable_expert_parallel": settings.enable_expert_parallel,
        # Requests are logged by the engine's own metrics; vLLM's per-request log lines cost
        # time on the hot path.
        "enable_log_requests": False,
        "disable_log_stats": False,
    }
    optional = {
        "quantization": settings.quantization,
        "max_model_len": settings.max_model_len,
        "enable_prefix_caching": settings.enable_prefix_caching,
        "max_num_seqs": settings.max_num_seqs,
        # As vLLM's server: structured outputs then constrain only what follows the reasoning.
        "reasoning_parser": settings.reasoning_parser,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    if settings.task == "embed":
        # vLLM's pooling runner; its convert "auto" turns a causal LM into an embedding model
        # (last-token pooling) and leaves a native embedding model as it is.
        kwargs["runner"] = "pooling"
    kwargs.update(settings.extra_engine_args)
    return kwargs


def build_engine_args(settings: EngineSettings) -> AsyncEngineArgs:
    """AsyncEngineArgs for the settings; unknown `extra_engine_args` keys are refused."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(set(settings.extra_engine_args) - known)
    if unknown:
        raise SettingsError(
            f"--extra-engine-args: unknown vLLM engine argument(s): {', '.join(unknown)}"
        )
    return AsyncEngineArgs(**engine_args_kwargs(settings))
