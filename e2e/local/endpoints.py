"""LLMEndpoints on the local stack: apply, observe, delete (the `kubernetes` client, blocking)."""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scaleserve.dev.stack import GROUP, PLURAL, VERSION, sample_endpoint
from scaleserve.dev.watch import endpoint, endpoint_gateway_url, endpoint_pods, is_ready
from scaleserve.operator.builders.naming import GATEWAY_INTERNAL_PORT


@dataclass
class LocalEndpoint:
    client: Any
    namespace: str
    name: str

    def get(self) -> dict[str, Any]:
        return endpoint(self.client, self.namespace, self.name)

    def status(self) -> dict[str, Any]:
        return dict(self.get().get("status") or {})

    def ready(self) -> bool:
        return is_ready(self.get())

    def gateway_url(self) -> str:
        return endpoint_gateway_url(self.client, self.namespace, self.name)

    def pods(self, component: str = "") -> list[Any]:
        return endpoint_pods(self.client, self.namespace, self.name, component)

    def gateway_stats(self) -> dict[str, Any]:
        # /stats is on the gateway's internal port, next to the API port of the same pod
        api = self.gateway_url().removesuffix("/v1")
        url = api.rpartition(":")[0] + f":{GATEWAY_INTERNAL_PORT}/stats"
        with urllib.request.urlopen(url, timeout=5) as resp:
            data: dict[str, Any] = json.loads(resp.read())
        return data

    def delete(self, timeout_s: float = 120.0) -> None:
        from kubernetes import client as k8s
        from kubernetes.client.rest import ApiException

        try:
            k8s.CustomObjectsApi(self.client).delete_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        deadline = time.monotonic() + timeout_s
        while self.pods():
            if time.monotonic() > deadline:
                raise TimeoutError(f"pods of {self.name} still there after {timeout_s:.0f}s")
            time.sleep(1.0)


def apply_endpoint(
    client: Any, model_dir: Path, name: str, spec_patch: dict[str, Any], namespace: str = "default"
) -> LocalEndpoint:
    """The sample endpoint renamed, its spec updated key by key (a key set to None is removed,
    at the top level and one level down)."""
    from kubernetes import client as k8s

    body = copy.deepcopy(sample_endpoint(model_dir))
    body["metadata"]["name"] = name
    for key, value in spec_patch.items():
        if value is None:
            body["spec"].pop(key, None)
        elif isinstance(value, dict) and isinstance(body["spec"].get(key), dict):
            merged = {**body["spec"][key], **value}
            body["spec"][key] = {k: v for k, v in merged.items() if v is not None}
        else:
            body["spec"][key] = value
    k8s.CustomObjectsApi(client).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body
    )
    return LocalEndpoint(client, namespace, name)


def pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def container_pid(pod: Any) -> int:
    """The pid of the pod's process (the runner writes it into the containerID)."""
    cid = pod.status.container_statuses[0].container_id
    return int(cid.rsplit("-", 1)[1])


def engine_requests_total(pod_ip: str, port: int = 9090) -> float:
    """Completed Generate calls of one engine process, from its /metrics."""
    with urllib.request.urlopen(f"http://{pod_ip}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("scaleserve_engine_requests_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def engine_metric(pod_ip: str, name: str, port: int = 9090) -> float:
    """The sum of one metric's samples in an engine process's /metrics (0 if absent)."""
    with urllib.request.urlopen(f"http://{pod_ip}:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith((f"{name}{{", f"{name} ")):
            total += float(line.rsplit(" ", 1)[1])
    return total
