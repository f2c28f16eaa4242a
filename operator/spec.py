"""The LLMEndpoint spec as a typed model, parsed once at the handler edge.

Field names and defaults mirror crds/llmendpoints.yaml (the API server validates and defaults
first; this model re-checks the cross-field rules so that the pure core never sees a spec the
CRD would have rejected, e.g. when a CRD without CEL support is installed).
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scaleserve.profiles import ProfileError, parse_profile

POWERS_OF_TWO = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_IMAGE = "ghcr.io/scaleserve/scaleserve:0.1.0"
# Engine arguments set from other fields (builders/engine.py, engine/engine_args.py), which
# spec.engine.extraArgs must not override. The CRD refuses these keys; their flag spellings
# (--tensor-parallel-size) only the operator can see (CEL cannot list an object's unknown keys).
MANAGED_ENGINE_ARGS = (
    "model", "served_model_name", "tensor_parallel_size", "pipeline_parallel_size",
    "data_parallel_size", "host", "port", "metrics_port", "dtype", "quantization",
    "gpu_memory_utilization", "max_model_len", "max_num_seqs", "enable_prefix_caching",
    "enable_expert_parallel", "disable_log_stats", "runner",
)  # fmt: skip


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
    # vLLM's reasoning parser for the model's thinking format; "" leaves reasoning in content
    reasoning_parser: Literal["", "deepseek_r1", "qwen3"] = Field(
        default="", alias="reasoningParser"
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


class ProfileKeyRef(_Model):
    name: str = Field(min_length=1)
    key: str = Field(default="profile.yaml", min_length=1)


class ProfileSource(_Model):
    """A performance profile (docs/profiles.md): a ConfigMap key, or the profile inline."""

    config_map: ProfileKeyRef | None = Field(default=None, alias="configMapKeyRef")
    inline: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> ProfileSource:
        if (self.config_map is None) == (self.inline is None):
            raise SpecError(
                "exactly one of spec.autoscaling.profile.configMapKeyRef and "
                "spec.autoscaling.profile.inline must be set"
            )
        if self.inline is not None:
            try:
                parse_profile(self.inline)
            except ProfileError as exc:
                raise SpecError(f"spec.autoscaling.profile.inline.{exc}") from None
        return self


class LatencyObjectives(_Model):
    """Latency objectives per replica; p50s read the profile's typical latencies, p99s its
    measured p99s."""

    ttft_p50_ms: float | None = Field(default=None, alias="ttftP50Ms", gt=0)
    ttft_p99_ms: float | None = Field(default=None, alias="ttftP99Ms", gt=0)
    tbt_p50_ms: float | None = Field(default=None, alias="tbtP50Ms", gt=0)
    tbt_p99_ms: float | None = Field(default=None, alias="tbtP99Ms", gt=0)

    @model_validator(mode="after")
    def _any(self) -> LatencyObjectives:
        if all(v is None for v in self.model_dump().values()):
            raise SpecError(
                "spec.autoscaling.objectives must set at least one of ttftP50Ms, ttftP99Ms, "
                "tbtP50Ms, tbtP99Ms"
            )
        return self


# fields that belong to one mode only (CRD defaults of the other mode's fields are allowed)
THRESHOLDS_ONLY = {"gpu_budget": "gpuBudget"}
OBJECTIVES_ONLY = {
    "objectives": "objectives",
    "max_gpus": "maxGPUs",
    "min_gpus": "minGPUs",
    "profile": "profile",
    "scale_to_zero_after_seconds": "scaleToZeroAfterSeconds",
    "scale_up_lookahead_seconds": "scaleUpLookaheadSeconds",
}


class Autoscaling(_Model):
    mode: Literal["thresholds", "objectives"] = "thresholds"
    gpu_budget: int | None = Field(default=None, alias="gpuBudget", ge=1)
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
    # objectives mode
    objectives: LatencyObjectives | None = None
    min_gpus: int | None = Field(default=None, alias="minGPUs", ge=0)
    max_gpus: int | None = Field(default=None, alias="maxGPUs", ge=1)
    profile: ProfileSource | None = None
    scale_to_zero_after_seconds: int | None = Field(
        default=None, alias="scaleToZeroAfterSeconds", ge=0
    )
    # seconds of a rising load to size a step up ahead for (None: two of the profile's start-ups)
    scale_up_lookahead_seconds: int | None = Field(
        default=None, alias="scaleUpLookaheadSeconds", ge=0, le=3600
    )

    @property
    def budget(self) -> int:
        """The most GPUs the endpoint's layouts use (gpuBudget, or maxGPUs)."""
        most = self.gpu_budget if self.mode == "thresholds" else self.max_gpus
        assert most is not None
        return most

    @property
    def least(self) -> int:
        """The fewest GPUs the endpoint's layouts use (objectives mode: minGPUs, default 1)."""
        if self.mode == "thresholds":
            return self.budget
        return 1 if self.min_gpus is None else self.min_gpus

    @property
    def idle_seconds(self) -> int:
        """Seconds of zero load before an endpoint with minGPUs 0 removes its engines."""
        after = self.scale_to_zero_after_seconds
        return 600 if after is None else after

    @model_validator(mode="after")
    def _check_bands(self) -> Autoscaling:
        cands = self.tensor_parallel_candidates
        if any(t not in POWERS_OF_TWO for t in cands):
            raise SpecError(
                "spec.autoscaling.tensorParallelCandidates entries must be powers of two"
            )
        if any(a <= b for a, b in itertools.pairwise(cands)):
            raise SpecError("spec.autoscaling.tensorParallelCandidates must be strictly descending")
        if self.mode == "objectives":
            return self._check_objectives()
        _only(self, OBJECTIVES_ONLY, "objectives")
        th = self.concurrency_thresholds
        if any(t <= 0 for t in th) or any(a >= b for a, b in itertools.pairwise(th)):
            raise SpecError("spec.autoscaling.concurrencyThresholds must be strictly ascending")
        if len(th) != len(cands) - 1:
            raise SpecError(
                "spec.autoscaling.concurrencyThresholds must have one entry fewer than "
                "spec.autoscaling.tensorParallelCandidates"
            )
        if self.gpu_budget is None:
            raise SpecError("spec.autoscaling.gpuBudget is required in mode thresholds")
        if any(self.gpu_budget % t for t in cands):
            raise SpecError(
                "spec.autoscaling.gpuBudget must be a multiple of every "
                "tensorParallelCandidates entry"
            )
        return self

    def _check_objectives(self) -> Autoscaling:
        _only(self, THRESHOLDS_ONLY, "thresholds")
        for name, alias in (("objectives", "objectives"), ("max_gpus", "maxGPUs")):
            if getattr(self, name) is None:
                raise SpecError(f"spec.autoscaling.{alias} is required in mode objectives")
        if self.profile is None:
            raise SpecError("spec.autoscaling.profile is required in mode objectives")
        if self.least > self.budget:
            raise SpecError("spec.autoscaling.minGPUs must not exceed spec.autoscaling.maxGPUs")
        if self.budget < min(self.tensor_parallel_candidates):
            raise SpecError(
                "spec.autoscaling.maxGPUs must be at least the smallest "
                "tensorParallelCandidates entry"
            )
        if self.scale_to_zero_after_seconds is not None and self.least != 0:
            raise SpecError("spec.autoscaling.scaleToZeroAfterSeconds needs minGPUs 0")
        return self


def _only(policy: Autoscaling, fields: dict[str, str], mode: str) -> None:
    for name, alias in fields.items():
        if getattr(policy, name) is not None:
            raise SpecError(f"spec.autoscaling.{alias} applies to mode {mode} only")


class SecretKeyRef(_Model):
    name: str
    key: str = "api-key"


class GatewayDeadlines(_Model):
    """Seconds per wait of a request (the gateway's --first-token-timeout and the others);
    None leaves the gateway's default."""

    first_token_seconds: float | None = Field(
        default=None, alias="firstTokenSeconds", ge=1, le=3600
    )
    idle_seconds: float | None = Field(default=None, alias="idleSeconds", ge=1, le=3600)
    queue_seconds: float | None = Field(default=None, alias="queueSeconds", ge=0.1, le=600)
    receive_seconds: float | None = Field(default=None, alias="receiveSeconds", ge=1, le=600)
    write_stall_seconds: float | None = Field(
        default=None, alias="writeStallSeconds", ge=1, le=3600
    )


class GatewaySettings(_Model):
    replicas: int = Field(default=1, ge=1)
    # processes per pod; None: from the container's CPU limit (builders/gateway.py)
    workers: int | None = Field(default=None, ge=1, le=64)
    deadlines: GatewayDeadlines = Field(default_factory=GatewayDeadlines)
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


class TracingSettings(_Model):
    """OpenTelemetry export of request traces; the builders turn it into OTEL_* env."""

    endpoint: str = Field(min_length=1)
    protocol: Literal["http/protobuf", "grpc"] = "http/protobuf"
    sampling_ratio: float = Field(default=1.0, alias="samplingRatio", ge=0.0, le=1.0)


class EndpointSpec(_Model):
    model: ModelSource
    # generate: completions and chat; embed: /v1/embeddings (vLLM's pooling runner)
    task: Literal["generate", "embed"] = "generate"
    engine: EngineSettings = Field(default_factory=EngineSettings)
    gpu: GPUSettings = Field(default_factory=GPUSettings)
    node_selector: dict[str, str] = Field(default_factory=dict, alias="nodeSelector")
    tolerations: tuple[dict[str, Any], ...] = ()
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    layout: StaticLayout | None = None
    autoscaling: Autoscaling | None = None
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    rollout: RolloutSettings = Field(default_factory=RolloutSettings)
    tracing: TracingSettings | None = None

    @model_validator(mode="after")
    def _check_task(self) -> EndpointSpec:
        if self.task == "embed" and self.engine.tool_call_parser:
            raise SpecError("spec.engine.toolCallParser has no use with spec.task embed")
        return self

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
    try:
        return EndpointSpec.model_validate(dict(raw or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        if isinstance(first.get("ctx", {}).get("error"), SpecError):
            raise SpecError(str(first["ctx"]["error"])) from None
        where = "spec." + ".".join(str(p) for p in first["loc"])
        raise SpecError(f"{where}: {first['msg']}") from None
