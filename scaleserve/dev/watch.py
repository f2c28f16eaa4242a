"""Waiting for an LLMEndpoint with visible progress, and finding its gateway on the local nodes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

GROUP, VERSION, PLURAL = "scaleserve.io", "v1alpha1", "llmendpoints"
LABEL_ENDPOINT = "scaleserve.io/endpoint"
LABEL_COMPONENT = "app.kubernetes.io/component"
GATEWAY_PORT = 8000
HEARTBEAT_S = 15.0


class EndpointNotReadyError(RuntimeError):
    pass


def endpoint(client: Any, namespace: str, name: str) -> dict[str, Any]:
    from kubernetes import client as k8s

    obj: Any = k8s.CustomObjectsApi(client).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return dict(obj)


def endpoint_pods(client: Any, namespace: str, name: str, component: str = "") -> list[Any]:
    from kubernetes import client as k8s

    selector = f"{LABEL_ENDPOINT}={name}"
    if component:
        selector += f",{LABEL_COMPONENT}={component}"
    pods: list[Any] = (
        k8s.CoreV1Api(client).list_namespaced_pod(namespace, label_selector=selector).items
    )
    return pods


def pod_line(pod: Any) -> str:
    """e.g. ``tiny-g0-tp2-0 Running ready 10.251.1.2 restarts 0``."""
    st = pod.status
    ready = any(c.type == "Ready" and c.status == "True" for c in st.conditions or [])
    restarts = sum(c.restart_count for c in st.container_statuses or [])
    waiting = [
        c.state.waiting.reason
        for c in st.container_statuses or []
        if c.state is not None and c.state.waiting is not None
    ]
    phase = "Terminating" if pod.metadata.deletion_timestamp else st.phase
    parts = [pod.metadata.name, phase, "ready" if ready else "not-ready", st.pod_ip or "-"]
    if waiting:
        parts.append(",".join(w for w in waiting if w))
    if restarts:
        parts.append(f"restarts {restarts}")
    return " ".join(parts)


def is_ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )
    return ready and status.get("phase") == "Ready"


def wait_endpoint_ready(
    client: Any,
    namespace: str,
    name: str,
    timeout_s: float,
    progress: Callable[[str], None],
    done: Callable[[dict[str, Any]], bool] = is_ready,
) -> dict[str, Any]:
    """Poll the endpoint until `done(obj)`; print its phase, message and pods as they change."""
    start = time.monotonic()
    last_lines: list[str] = []
    last_print = start
    while True:
        obj = endpoint(client, namespace, name)
        elapsed = time.monotonic() - start
        if done(obj):
            progress(f"    [{elapsed:5.0f}s] {name} is ready: {obj['status'].get('message', '')}")
            return obj
        status = obj.get("status") or {}
        lines = [f"{name}: {status.get('phase', 'Pending')} - {status.get('message', '')}"]
        lines += [f"  pod {pod_line(p)}" for p in endpoint_pods(client, namespace, name)]
        if lines != last_lines or time.monotonic() - last_print > HEARTBEAT_S:
            for line in lines if lines != last_lines else lines[:1]:
                progress(f"    [{elapsed:5.0f}s] {line}")
            last_lines, last_print = lines, time.monotonic()
        if elapsed > timeout_s:
            raise EndpointNotReadyError(f"{namespace}/{name} not ready after {timeout_s:.0f}s")
        time.sleep(1.0)


def endpoint_gateway_url(client: Any, namespace: str, name: str) -> str:
    """The OpenAI base URL of the endpoint's first ready gateway pod (its own address)."""
    for pod in endpoint_pods(client, namespace, name, "gateway"):
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        if ready and pod.status.pod_ip and not pod.metadata.deletion_timestamp:
            return f"http://{pod.status.pod_ip}:{GATEWAY_PORT}/v1"
    raise EndpointNotReadyError(f"{namespace}/{name} has no ready gateway pod")
