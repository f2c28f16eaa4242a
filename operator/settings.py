"""The operator's settings: one frozen object, from SCALESERVE_OPERATOR_* env and flags."""

from __future__ import annotations

import os
import string
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from scaleserve.operator.errors import SettingsError

ENV_PREFIX = "SCALESERVE_OPERATOR_"
STATS_FIELDS = {"pod_ip", "pod_name", "namespace", "endpoint"}


@dataclass(frozen=True)
class OperatorSettings:
    """How the operator runs.

    namespaces: namespaces to watch (empty: the whole cluster).
    reconcile_interval_s: period of the reshaping/status timer per endpoint.
    stats_url: template of each gateway pod's /stats URL; fields {pod_ip}, {pod_name},
        {namespace}, {endpoint}. Pointing it elsewhere (a test server) overrides the source.
    stats_timeout_s: timeout of one /stats read.
    pending_grace_s: how long engine pods may stay Pending before the endpoint is Degraded.
    field_manager: server-side apply field manager.
    liveness_port: port of kopf's /healthz (0: off).
    metrics_port: port of the Prometheus /metrics endpoint (0: off).
    """

    namespaces: tuple[str, ...] = ()
    reconcile_interval_s: float = 10.0
    stats_url: str = "http://{pod_ip}:8000/stats"
    stats_timeout_s: float = 2.0
    pending_grace_s: float = 120.0
    field_manager: str = "scaleserve-operator"
    liveness_port: int = 0
    metrics_port: int = 0

    def __post_init__(self) -> None:
        if self.reconcile_interval_s <= 0:
            raise SettingsError("reconcile_interval_s must be > 0")
        if self.stats_timeout_s <= 0:
            raise SettingsError("stats_timeout_s must be > 0")
        if self.pending_grace_s < 0:
            raise SettingsError("pending_grace_s must be >= 0")
        if not self.field_manager:
            raise SettingsError("field_manager must not be empty")
        for port in ("liveness_port", "metrics_port"):
            if not 0 <= getattr(self, port) < 65536:
                raise SettingsError(f"{port} must be a port number (0: off)")
        try:
            names = {f[1] for f in string.Formatter().parse(self.stats_url) if f[1] is not None}
        except ValueError as exc:
            raise SettingsError(f"stats_url is not a valid template: {exc}") from None
        if not names <= STATS_FIELDS:
            unknown = ", ".join(sorted(names - STATS_FIELDS))
            raise SettingsError(f"stats_url uses unknown fields: {unknown}")
        if not self.stats_url.startswith(("http://", "https://")):
            raise SettingsError("stats_url must be an http(s) URL template")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> OperatorSettings:
        """Defaults, then SCALESERVE_OPERATOR_<FIELD> variables, then explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            values[f.name] = _convert(f.name, raw, cls.__dataclass_fields__[f.name].type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("namespaces"), list | str):
            values["namespaces"] = _namespaces(values["namespaces"])
        return replace(cls(), **values) if values else cls()


def _namespaces(raw: str | list[str]) -> tuple[str, ...]:
    items = raw.split(",") if isinstance(raw, str) else raw
    return tuple(n.strip() for n in items if n.strip())


def _convert(name: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if "tuple" in kind:
            return _namespaces(raw)
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
    except ValueError:
        raise SettingsError(f"{ENV_PREFIX}{name.upper()}={raw!r} is not a {kind}") from None
    return raw
