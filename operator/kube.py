"""The operator's one Kubernetes client, for its writes: server-side apply, merge patch,
delete, status patch. (Reads come from kopf's watches and indexes: cluster.py.)

Built on kubernetes_asyncio's ApiClient (auth, TLS, kubeconfig) with the paths of the few kinds
the operator writes spelled out, so no discovery round-trips are needed.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from scaleserve.operator.errors import ClusterError

# kind -> (API path prefix, plural)
KINDS: dict[str, tuple[str, str]] = {
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Service": ("/api/v1", "services"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Pod": ("/api/v1", "pods"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "Deployment": ("/apis/apps/v1", "deployments"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets"),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies"),
    "LLMEndpoint": ("/apis/scaleserve.io/v1alpha1", "llmendpoints"),
}
MAX_IN_FLIGHT = 32  # concurrent requests


def path(kind: str, namespace: str | None = None, name: str | None = None) -> str:
    prefix, plural = KINDS[kind]
    parts = [prefix]
    if namespace is not None:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name is not None:
        parts.append(name)
    return "/".join(parts)


class Kube:
    """One ApiClient for the operator's lifetime; use `async with Kube.connect() as kube`."""

    def __init__(
        self, api: client.ApiClient, field_manager: str, max_in_flight: int = MAX_IN_FLIGHT
    ) -> None:
        self._api = api
        self.field_manager = field_manager
        # requests beyond this wait here, not in the connection pool, where the wait would
        # count against their timeout: a burst of reconciles queues instead of timing out
        self._slots = asyncio.Semaphore(max_in_flight)

    @classmethod
    async def connect(cls, field_manager: str) -> Kube:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config()
        api = client.ApiClient()
        _distrust_env(api)
        return cls(api, field_manager)

    async def close(self) -> None:
        await self._api.close()

    async def __aenter__(self) -> Kube:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def request(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        try:
            async with self._slots:
                resp = await self._api.call_api(
                    url,
                    method,
                    {},
                    query or [],
                    {"Accept": "application/json", "Content-Type": content_type},
                    body=body,
                    auth_settings=["BearerToken"],
                    _preload_content=False,
                    _return_http_data_only=True,
                    _request_timeout=30,
                )
                data = await resp.read()
        except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise ClusterError(f"{method} {url}: {exc}") from None
        if not 200 <= resp.status <= 299:
            raise ClusterError(f"{method} {url}: {resp.status} {_reason(data)}", status=resp.status)
        return dict(json.loads(data)) if data else {}

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply with the operator's field manager (conflicts forced)."""
        meta = manifest["metadata"]
        url = path(manifest["kind"], meta.get("namespace"), meta["name"])
        query = [("fieldManager", self.field_manager), ("force", "true")]
        return await self.request(
            "PATCH",
            url,
            body=manifest,
            query=query,
            content_type="application/apply-patch+yaml",
        )

    async def patch(
        self, kind: str, namespace: str | None, name: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """JSON merge patch (a None value removes a key); None if the object is gone."""
        try:
            return await self.request(
                "PATCH",
                path(kind, namespace, name),
                body=body,
                content_type="application/merge-patch+json",
            )
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """One object, or None if there is none (objectives mode reads its profile's
        ConfigMap, which nothing else watches)."""
        try:
            return await self.request("GET", path(kind, namespace, name))
        except ClusterError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Delete with foreground propagation off (background GC); False if already gone."""
        body = {"propagationPolicy": "Background"}
        try:
            await self.request("DELETE", path(kind, namespace, name), body=body)
        except ClusterError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        *,
        uid: str | None = None,
        has_status: bool = True,
    ) -> None:
        """Set the given status fields (others are kept).

        With `uid`, only of that object: a JSON patch whose first operation tests the UID, so a
        late write for a deleted endpoint fails (422) instead of landing on a new endpoint of
        the same name (a UID in a merge patch of /status would be silently reset).
        """
        url = path("LLMEndpoint", namespace, name) + "/status"
        if not uid:
            await self.request(
                "PATCH", url, body={"status": status}, content_type="application/merge-patch+json"
            )
            return
        ops: list[dict[str, Any]] = [{"op": "test", "path": "/metadata/uid", "value": uid}]
        if has_status:
            ops += [{"op": "add", "path": f"/status/{k}", "value": v} for k, v in status.items()]
        else:
            ops.append({"op": "add", "path": "/status", "value": status})
        await self.request("PATCH", url, body=ops, content_type="application/json-patch+json")


def _distrust_env(api: client.ApiClient) -> None:
    """Swap kubernetes_asyncio's session (trust_env=True) for one that ignores the proxy
    variables and ~/.netrc, as kopf's own client does (its networking.trust_env is False), so
    the operator's writes reach the API server the same way its watches do. With trust_env,
    aiohttp looks up both on every request, each in a thread-pool round trip: about a fifth of
    the operator's CPU under a burst of applies."""
    rest = api.rest_client
    old: aiohttp.ClientSession = rest.pool_manager
    # read_bufsize as kubernetes_asyncio's: an object may be up to etcd's 1.5 MiB
    rest.pool_manager = aiohttp.ClientSession(
        connector=old.connector, trust_env=False, read_bufsize=2**21
    )
    old.detach()  # the connector (TLS set-up, connection limit) now belongs to the new session


def _reason(data: bytes) -> str:
    try:
        return str(json.loads(data).get("message") or data[:200].decode(errors="replace"))
    except (TypeError, ValueError, AttributeError):
        return data[:200].decode(errors="replace")
