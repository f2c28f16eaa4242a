"""The LLMEndpoint spec as a typed model, parsed once at the handler edge.

Field names and defaults mirror crds/llmendpoints.yaml (the API server validates and defaults
first; this model re-checks the cross-field rules so that the pure core never sees a spec the
CRD would have rejected, e.g. when a CRD without CEL support is installed).
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

POWERS_OF_TWO = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_IMAGE = "ghcr.io/scaleserve/scaleserve:0.1.0"
# Engine arguments set from other fields (builders/engine.py, engine/engine_args.py), which
# spec.engine.extraArgs must not override. The CRD refuses these keys; their flag spellings
# (--tensor-parallel-size) only the operator can see (CEL cannot list an object's unknown keys).
MANAGED_ENGINE_ARGS = (
    "model",
    "served_model_name",
    "tensor_parallel_size",
    "pipeline_parallel_size",
    "data_parallel_size",
    "host",
    "port",
    "metrics_port",
    "dtype",
    "quantization",
    "gpu_memory_utilization",
    "max_model_len",
    "max_num_seqs",
    "enable_prefix_caching",
    "enable_expert_parallel",
    "disable_log_stats",
)


class SpecError(ValueError):
    """The spec breaks a rule the CRD also states; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="ignore")


class ModelSource(_Model):
    uri: str
    served_name: str | None = Field(default=None, alias="servedName")

    @property
    def kind(self) -> Literal["hf", "pvc", "local"]:
        if self.uri.startswith("hf://"):
            return "hf"
        if self.uri.startswith("pvc://"):
            return "pvc"
        return "local"

    @property
    def pvc_claim(self) -> str | None:
        if self.kind != "pvc":
            return None
        return self.uri.removeprefix("pvc://").split("/", 1)[0]

    @property
    def engine_model(self) -> str:
        """The value of the engine's --model flag."""
        if self.kind == "hf":
            return self.uri.removeprefix("hf://")
        if self.kind == "pvc":
            rest = self.uri.removeprefix("pvc://").split("/", 1)
            return "/models/" + rest[1] if len(rest) == 2 and rest[1] else "/models"
        return self.uri

    @property
    def name(self) -> str:
        if self.served_name:
            return self.served_name
        return self.uri.rstrip("/").rsplit("/", 1)[-1] or self.uri

    @model_validator(mode="after")
    def _check_uri(self) -> ModelSource:
        if not self.uri.startswith(("hf://", "pvc://", "/")):
            raise SpecError(
                "spec.model.uri must start with hf://, pvc:// or / (an absolute local path)"
            )
        return self


class EngineSettings(_Model):
    image: str = DEFAULT_IMAGE
    dtype: Literal["auto", "half", "float16", "bfloat16", "float32"] = "auto"
    quantization: Literal["", "fp8", "awq", "gptq", "bitsandbytes", "compressed-tensors"] = ""
    expert_parallel: bool = Field(default=False, alias="expertParallel")
    max_model_len: int | None = Field(default=None, alias="maxModelLen", ge=1)
    gpu_memory_utilization: float = Field(default=0.9, alias="gpuMemoryUtilization", gt=0, le=1)
    prefix_caching: bool = Field(default=True, alias="prefixCaching")
    max_num_seqs: int | None = Field(default=None, alias="maxNumSeqs", ge=1)
    drain_timeout_seconds: int = Field(default=30, alias="drainTimeoutSeconds", ge=0)
    shm_size: str = Field(default="8Gi", alias="shmSize")
    # vLLM's tool parser for the model's tool-call format; "" leaves tool calling off
    tool_call_parser: Literal["", "hermes", "llama3_json", "mistral"] = Field(
        default="", alias="toolCallParser"
    )
    extra_args: dict[str, Any] = Field(default_factory=dict, alias="extraArgs")

    @model_validator(mode="after")
    def _check_extra_args(self) -> EngineSettings:
        # The CRD refuses the EngineArgs spellings on create and update; flag spellings, and
        # endpoints stored before that rule existed, reach the operator, which must not let
        # them override a managed argument.
        managed = sorted(
            k for k in self.extra_args if k.replace("-", "_").lstrip("_") in MANAGED_ENGINE_ARGS
        )
        if managed:
            raise SpecError(
                f"spec.engine.extraArgs must not set {', '.join(managed)}: the operator sets it "
                "from spec.model, spec.layout/spec.autoscaling or spec.engine (use those fields)"
            )
        return self


class GPUSettings(_Model):
    resource_name: str = Field(default="nvidia.com/gpu", alias="resourceName")
    per_node: int = Field(default=8, alias="perNode", ge=1, le=64)


class ResourceRequirements(_Model):
    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)


class StaticLayout(_Model):
    replicas: int = Field(ge=1)
    tensor_parallel: int = Field(alias="tensorParallel", ge=1)


class Autoscaling(_Model):
    gpu_budget: int = Field(alias="gpuBudget", ge=1)
    surge_gpus: int = Field(default=0, alias="surgeGPUs", ge=0)
    tensor_parallel_candidates: tuple[int, ...] = Field(
        default=(8, 1), alias="tensorParallelCandidates", min_length=1
    )
    concurrency_thresholds: tuple[float, ...] = Field(
        default=(64.0,), alias="concurrencyThresholds"
    )
    window_seconds: int = Field(default=60, alias="windowSeconds", ge=1)
    cooldown_seconds: int = Field(default=300, alias="cooldownSeconds", ge=0)
    hysteresis: float = Field(default=0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _check_bands(self) -> Autoscaling:
        cands = self.tensor_parallel_candidates
        if any(t not in POWERS_OF_TWO for t in cands):
            raise SpecError(
                "spec.autoscaling.tensorParallelCandidates entries must be powers of two"
            )
        if any(a <= b for a, b in itertools.pairwise(cands)):
            raise SpecError("spec.autoscaling.tensorParallelCandidates must be strictly descending")
        th = self.concurrency_thresholds
        if any(t <= 0 for t in th) or any(a >= b for a, b in itertools.pairwise(th)):
            raise SpecError("spec.autoscaling.concurrencyThresholds must be strictly ascending")
        if len(th) != len(cands) - 1:
            raise SpecError(
                "spec.autoscaling.concurrencyThresholds must have one entry fewer than "
                "spec.autoscaling.tensorParallelCandidates"
            )
        if any(self.gpu_budget % t for t in cands):
            raise SpecError(
                "spec.autoscaling.gpuBudget must be a multiple of every "
                "tensorParallelCandidates entry"
            )
        return self


class SecretKeyRef(_Model):
    name: str
    key: str = "api-key"


class GatewaySettings(_Model):
    replicas: int = Field(default=1, ge=1)
    routing: Literal["round-robin", "least-in-flight", "prefix-affinity"] = "least-in-flight"
    image: str = DEFAULT_IMAGE
    api_key_secret: SecretKeyRef | None = Field(default=None, alias="apiKeySecret")
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: tuple[dict[str, Any], ...] = ()


class RolloutSettings(_Model):
    """How engine groups are replaced (spec edits and reshapes alike)."""

    # without spare GPUs a single-group endpoint holds its pods; True lets the operator
    # delete the only serving group first (serving stops until its replacement is ready)
    allow_disruption: bool = Field(default=False, alias="allowDisruption")
    # a retired group gets no new requests and is deleted once the gateways report none in
    # flight on its pods, or after this many seconds (its engines then drain what is left)
    drain_seconds: int = Field(default=600, alias="drainSeconds", ge=0)


class EndpointSpec(_Model):
    model: ModelSource
    engine: EngineSettings = Field(default_factory=EngineSettings)
    gpu: GPUSettings = Field(default_factory=GPUSettings)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: tuple[dict[str, Any], ...] = ()
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    layout: StaticLayout | None = None
    autoscaling: Autoscaling | None = None
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)

    @model_validator(mode="after")
    def _check_layout(self) -> EndpointSpec:
        if (self.layout is None) == (self.autoscaling is None):
            raise SpecError("exactly one of spec.layout and spec.autoscaling must be set")
        per_node = self.gpu.per_node
        if self.layout is not None:
            tp = self.layout.tensor_parallel
            if tp not in POWERS_OF_TWO:
                raise SpecError("spec.layout.tensorParallel must be a power of two")
            if per_node % tp:
                raise SpecError("spec.layout.tensorParallel must divide spec.gpu.perNode")
        if self.autoscaling is not None and any(
            per_node % t for t in self.autoscaling.tensor_parallel_candidates
        ):
            raise SpecError(
                "every spec.autoscaling.tensorParallelCandidates entry must divide spec.gpu.perNode"
            )
        return self


def parse_spec(raw: Any) -> EndpointSpec:
    """Parse a CR's spec (a mapping as read from the API server) into the typed model.

    Raises SpecError (a ValueError) with a message naming the offending field.
    """
    from pydantic import ValidationError

    try:
        return EndpointSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        if isinstance(first.get("ctx", {}).get("error"), SpecError):
            raise SpecError(str(first["ctx"]["error"])) from None
        where = "spec." + ".".join(str(p) for p in first["loc"])
        raise SpecError(f"{where}: {first['msg']}") from None
