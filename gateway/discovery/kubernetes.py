"""Replicas from the engine Service's EndpointSlices, watched with kubernetes_asyncio.

Each change rebuilds the full endpoint set from all slices and swaps it into the pool at once.
Endpoint conditions follow Kubernetes' semantics: `serving` (falling back to `ready`) decides
whether a replica may take new work; a `terminating` one gets no new requests but keeps its
channel until its requests finish; a pod gone from every slice does the same.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from scaleserve.gateway.pool import Endpoint, ReplicaPool
from scaleserve.gateway.settings import GatewaySettings

log = logging.getLogger("scaleserve.gateway.discovery")
SERVICE_LABEL = "kubernetes.io/service-name"


def label_selector(service: str, selector: str) -> str:
    parts = [f"{SERVICE_LABEL}={service}"] if service else []
    if selector:
        parts.append(selector)
    return ",".join(parts)


def _get(obj: Any, name: str) -> Any:
    if isinstance(obj, dict):
        camel = name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
        return obj.get(name, obj.get(camel))
    return getattr(obj, name, None)


def _host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def endpoints_from_slices(slices: Iterable[Any], port_name: str = "grpc") -> list[Endpoint]:
    """The replicas named by EndpointSlices (API objects or plain dicts), deduplicated."""
    found: dict[str, Endpoint] = {}
    for s in slices:
        ports = _get(s, "ports") or []
        port = next((p for p in ports if _get(p, "name") == port_name), ports[0] if ports else None)
        number = _get(port, "port") if port is not None else None
        if not number:
            continue
        for ep in _get(s, "endpoints") or []:
            cond = _get(ep, "conditions") or {}
            ready = _get(cond, "ready")
            serving = _get(cond, "serving")
            terminating = bool(_get(cond, "terminating"))
            ready = True if ready is None else bool(ready)
            serving = ready if serving is None else bool(serving)
            for address in _get(ep, "addresses") or []:
                key = _host_port(address, int(number))
                seen = found.get(key)
                if seen is None or (serving and not terminating and not seen.serving):
                    found[key] = Endpoint(key, serving=serving, terminating=terminating)
    return sorted(found.values(), key=lambda e: e.address)


class EndpointSliceDiscovery:
    def __init__(
        self,
        pool: ReplicaPool,
        settings: GatewaySettings,
        backoff_s: float = 2.0,
        kubeconfig: str | None = None,
    ) -> None:
        self._pool = pool
        self._kubeconfig = kubeconfig
        self._namespace = settings.namespace
        self._selector = label_selector(settings.service, settings.selector)
        self._port_name = settings.port_name
        self._backoff_s = backoff_s

    def _apply(self, slices: dict[str, Any]) -> None:
        endpoints = endpoints_from_slices(slices.values(), self._port_name)
        self._pool.set_endpoints(endpoints)
        log.debug("endpoints: %s", endpoints)

    async def run(self) -> None:
        from kubernetes_asyncio import client, config, watch
        from kubernetes_asyncio.config import ConfigException

        if self._kubeconfig:
            await config.load_kube_config(config_file=self._kubeconfig)
        else:
            try:
                config.load_incluster_config()  # type: ignore[no-untyped-call]
            except ConfigException:
                await config.load_kube_config()
        async with client.ApiClient() as api:
            discovery = client.DiscoveryV1Api(api)
            while True:
                try:
                    listed = await discovery.list_namespaced_endpoint_slice(
                        self._namespace, label_selector=self._selector
                    )
                    slices = {s.metadata.name: s for s in listed.items}
                    self._apply(slices)
                    async with watch.Watch().stream(
                        discovery.list_namespaced_endpoint_slice,
                        self._namespace,
                        label_selector=self._selector,
                        resource_version=listed.metadata.resource_version,
                        timeout_seconds=300,
                    ) as stream:
                        async for event in stream:
                            kind, obj = event["type"], event["object"]
                            if kind == "ERROR":
                                break  # e.g. 410 Gone: relist
                            name = _get(_get(obj, "metadata"), "name")
                            if kind == "DELETED":
                                slices.pop(name, None)
                            else:
                                slices[name] = obj
                            self._apply(slices)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("EndpointSlice watch failed (%s); retrying", exc)
                    await asyncio.sleep(self._backoff_s)
