"""Performance profiles: how fast one engine replica of a model answers on one GPU type, per
tensor-parallel degree, as a function of how many requests it is running.

One format, shared by the operator's objectives policy, `scaleserve profile` (which writes
profiles) and the simulator (which models engines from them); docs/profiles.md documents it.
A profile is YAML or JSON:

    apiVersion: scaleserve.io/v1alpha1
    kind: PerformanceProfile
    model: meta-llama/Llama-3.1-8B-Instruct
    gpu: h200_sxm
    engine: vllm 0.24.0
    workload: {inputTokens: 1024, outputTokens: 256}
    provenance: {source: estimate, tool: aiconfigurator 0.12.0, date: "2026-12-06"}
    tensorParallel:
      - tensorParallel: 8
        startupSeconds: 210
        points:                       # concurrency = requests in flight on ONE replica
          - {concurrency: 1, ttftMs: 18.2, tbtMs: 3.1, outputTokensPerS: 320}
          - {concurrency: 64, ttftMs: 95.0, tbtMs: 9.8, outputTokensPerS: 6500}

Between points latency is interpolated linearly; beyond the last point it is extrapolated
from the last two (so an overloaded replica keeps getting slower), and below the first it is
the first point's. Pure: no I/O beyond parsing text handed in.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

API_VERSION = "scaleserve.io/v1alpha1"
KIND = "PerformanceProfile"


class ProfileError(ValueError):
    """A profile breaks the format; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True, extra="forbid")


class Provenance(_Model):
    """Where the numbers came from, in order of trust: online > sweep > estimate > published."""

    source: Literal["online", "sweep", "estimate", "published"]
    tool: str = Field(min_length=1)
    date: str = Field(min_length=1)
    notes: str = ""


class Workload(_Model):
    """The request shape the points were measured or estimated for."""

    input_tokens: int = Field(gt=0, alias="inputTokens")
    output_tokens: int = Field(gt=0, alias="outputTokens")


class Point(_Model):
    """One replica running `concurrency` requests at once: typical (mean or p50) latencies,
    and the p99s where the source measured them."""

    concurrency: int = Field(ge=1)
    ttft_ms: float = Field(gt=0, alias="ttftMs")
    tbt_ms: float = Field(gt=0, alias="tbtMs")
    ttft_p99_ms: float | None = Field(default=None, gt=0, alias="ttftP99Ms")
    tbt_p99_ms: float | None = Field(default=None, gt=0, alias="tbtP99Ms")
    output_tokens_per_s: float | None = Field(default=None, gt=0, alias="outputTokensPerS")


class DegreeProfile(_Model):
    """One tensor-parallel degree: start-to-ready time, KV-cache room and the load curve."""

    tensor_parallel: int = Field(ge=1, alias="tensorParallel")
    startup_seconds: float = Field(ge=0, alias="startupSeconds")
    kv_cache_tokens: int | None = Field(default=None, gt=0, alias="kvCacheTokens")
    points: tuple[Point, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _ascending(self) -> DegreeProfile:
        if any(a.concurrency >= b.concurrency for a, b in itertools.pairwise(self.points)):
            raise ValueError("points must have strictly ascending concurrency")
        return self

    def ttft_ms(self, concurrency: float) -> float:
        return _interpolate(self.points, concurrency, _ttft)

    def tbt_ms(self, concurrency: float) -> float:
        return _interpolate(self.points, concurrency, _tbt)

    def capacity(
        self,
        ttft_ms: float | None,
        tbt_ms: float | None,
        ttft_p99_ms: float | None = None,
        tbt_p99_ms: float | None = None,
    ) -> float:
        """The most requests one replica runs with typical TTFT and TBT (and their p99s) within
        the objectives (None: no objective), up to twice the last measured load; 0 when even
        one request misses them. A p99 objective needs the p99 on every point (`missing_p99`)."""
        limits = [
            _first_crossing(self.points, value, bound)
            for value, bound in (
                (_ttft, ttft_ms),
                (_tbt, tbt_ms),
                (_ttft_p99, ttft_p99_ms),
                (_tbt_p99, tbt_p99_ms),
            )
            if bound is not None
        ]
        return min([2.0 * self.points[-1].concurrency, *limits])

    def missing_p99(self, field: str) -> int | None:
        """The index of the first point without `field` (ttftP99Ms or tbtP99Ms), or None."""
        attr = {"ttftP99Ms": "ttft_p99_ms", "tbtP99Ms": "tbt_p99_ms"}[field]
        return next((i for i, p in enumerate(self.points) if getattr(p, attr) is None), None)


class Profile(_Model):
    api_version: Literal["scaleserve.io/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["PerformanceProfile"]
    model: str = Field(min_length=1)
    gpu: str = Field(min_length=1)
    engine: str = Field(min_length=1)
    workload: Workload
    provenance: Provenance
    degrees: tuple[DegreeProfile, ...] = Field(min_length=1, alias="tensorParallel")

    @model_validator(mode="after")
    def _unique_degrees(self) -> Profile:
        tps = [d.tensor_parallel for d in self.degrees]
        if len(set(tps)) != len(tps):
            raise ValueError("tensorParallel entries must have distinct tensorParallel degrees")
        return self

    def degree(self, tensor_parallel: int) -> DegreeProfile | None:
        return next((d for d in self.degrees if d.tensor_parallel == tensor_parallel), None)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _ttft(p: Point) -> float:
    return p.ttft_ms


def _tbt(p: Point) -> float:
    return p.tbt_ms


def _ttft_p99(p: Point) -> float:
    assert p.ttft_p99_ms is not None
    return p.ttft_p99_ms


def _tbt_p99(p: Point) -> float:
    assert p.tbt_p99_ms is not None
    return p.tbt_p99_ms


def _first_crossing(
    points: tuple[Point, ...], value: Callable[[Point], float], bound: float
) -> float:
    """The load at which the interpolated curve first rises above `bound` (the end of the
    extrapolated range if it never does); 0 if it starts above."""
    top = 2.0 * points[-1].concurrency
    if value(points[0]) > bound:
        return 0.0
    ends = [*points[1:], None] if len(points) > 1 else [None]
    for a, b in zip(points, ends, strict=True):
        x1 = b.concurrency if b is not None else top
        y1 = value(b) if b is not None else _interpolate(points, top, value)
        if y1 > bound:
            y0 = value(a)
            return a.concurrency + (bound - y0) * (x1 - a.concurrency) / (y1 - y0)
    return top


def _interpolate(points: tuple[Point, ...], x: float, value: Callable[[Point], float]) -> float:
    if x <= points[0].concurrency or len(points) == 1:
        return float(value(points[0]))
    a, b = points[-2], points[-1]
    for lo, hi in itertools.pairwise(points):
        if x <= hi.concurrency:
            a, b = lo, hi
            break
    slope = (value(b) - value(a)) / (b.concurrency - a.concurrency)
    return float(value(a) + slope * (x - a.concurrency))


def parse_profile(raw: Any) -> Profile:
    """A profile from a mapping, or from YAML/JSON text; ProfileError names the bad field."""
    if isinstance(raw, str | bytes):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ProfileError(f"profile is not YAML or JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ProfileError("profile must be a mapping")
    try:
        return Profile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "profile"
        raise ProfileError(f"{where}: {first['msg']}") from None


def dump_profile(profile: Profile, *, as_json: bool = False) -> str:
    data = profile.to_dict()
    if as_json:
        return json.dumps(data, indent=2) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False))
