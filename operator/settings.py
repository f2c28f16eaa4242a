"""The operator's settings: one frozen object, from SCALESERVE_OPERATOR_* env and flags (`load`)."""

from __future__ import annotations

import re
import string

from pydantic import NonNegativeFloat, PositiveFloat, field_validator
from pydantic_settings import SettingsConfigDict

from scaleserve.operator.errors import SettingsError
from scaleserve.settings import CommaList, NonEmptyStr, PortOrOff, Settings

ENV_PREFIX = "SCALESERVE_OPERATOR_"
STATS_FIELDS = {"pod_ip", "pod_name", "namespace", "endpoint"}
LEASE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")


class OperatorSettings(Settings):
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
    leader_lease: "namespace/name" of the coordination.k8s.io Lease that elects the one
        operator that acts among replicas (empty: no election, this one acts).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)
    settings_error = SettingsError
    flag_names = {
        "namespaces": "--namespace",
        "reconcile_interval_s": "--reconcile-interval",
        "stats_timeout_s": "--stats-timeout",
        "pending_grace_s": "--pending-grace",
    }

    namespaces: CommaList = ()
    reconcile_interval_s: PositiveFloat = 10.0
    stats_url: str = "http://{pod_ip}:8001/stats"  # the gateway's internal port
    stats_timeout_s: PositiveFloat = 2.0
    pending_grace_s: NonNegativeFloat = 120.0
    field_manager: NonEmptyStr = "scaleserve-operator"
    liveness_port: PortOrOff = 0
    metrics_port: PortOrOff = 0
    leader_lease: str = ""

    @field_validator("leader_lease")
    @classmethod
    def _lease(cls, lease: str) -> str:
        if lease and not LEASE.match(lease):
            raise ValueError("must be <namespace>/<name> (DNS names)")
        return lease

    @field_validator("stats_url")
    @classmethod
    def _stats_url(cls, url: str) -> str:
        try:
            names = {f[1] for f in string.Formatter().parse(url) if f[1] is not None}
        except ValueError as exc:
            raise ValueError(f"not a valid template: {exc}") from None
        if not names <= STATS_FIELDS:
            raise ValueError(f"unknown fields: {', '.join(sorted(names - STATS_FIELDS))}")
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL template")
        return url
