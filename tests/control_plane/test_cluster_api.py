"""The API server's behaviour the operator depends on: kubectl access, server-side apply,
CRD validation with CEL, and ServiceAccount tokens."""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import ApiException

from tests.fixtures.cluster import KubeCluster, wait_for

pytestmark = pytest.mark.control_plane


def _kubectl(cluster: KubeCluster, *args: str, stdin: str | None = None) -> str:
    exe = shutil.which("kubectl")
    if exe is None:
        pytest.fail("kubectl is not installed")
    proc = subprocess.run(
        [exe, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cluster.kubectl_env(),
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout


def test_kubectl_sees_gpu_nodes_and_applies_objects(
    kube_cluster: KubeCluster, namespace: str
) -> None:
    version = json.loads(_kubectl(kube_cluster, "version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    if kube_cluster.started_here:
        from scaleserve.dev.cluster import CLUSTER_DIR

        pinned = (CLUSTER_DIR / "versions.env").read_text()
        assert f"K8S_VERSION={version['serverVersion']['gitVersion']}" in pinned

    nodes = json.loads(_kubectl(kube_cluster, "get", "nodes", "-o", "json"))["items"]
    gpu_nodes = [n for n in nodes if n["status"]["allocatable"].get("nvidia.com/gpu") == "8"]
    assert gpu_nodes, "no node with 8 allocatable GPUs"
    assert gpu_nodes[0]["metadata"]["labels"]["nvidia.com/gpu.product"]

    manifest = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "from-kubectl", "namespace": namespace},
            "data": {"k": "v"},
        }
    )
    _kubectl(kube_cluster, "apply", "-f", "-", stdin=manifest)
    got = json.loads(
        _kubectl(kube_cluster, "-n", namespace, "get", "configmap", "from-kubectl", "-o", "json")
    )
    assert got["data"] == {"k": "v"}


def _apply(api: Any, namespace: str, body: dict[str, Any], manager: str, force: bool) -> Any:
    core = client.CoreV1Api(api)
    return core.patch_namespaced_config_map(
        body["metadata"]["name"],
        namespace,
        body,
        field_manager=manager,
        force=force,
        _content_type="application/apply-patch+yaml",
    )


def test_server_side_apply_tracks_owners_and_reports_conflicts(
    kube_api: Any, namespace: str
) -> None:
    def cm(value: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ssa", "namespace": namespace},
            "data": {"replicas": value},
        }

    created = _apply(kube_api, namespace, cm("1"), "operator", force=False)
    assert created.data == {"replicas": "1"}
    assert [m.manager for m in created.metadata.managed_fields] == ["operator"]

    with pytest.raises(ApiException) as conflict:
        _apply(kube_api, namespace, cm("2"), "someone-else", force=False)
    assert conflict.value.status == 409
    assert "conflict" in str(conflict.value.body).lower()

    forced = _apply(kube_api, namespace, cm("3"), "operator-2", force=True)
    assert forced.data == {"replicas": "3"}
    assert {m.manager for m in forced.metadata.managed_fields} == {"operator-2"}


def _crd(group: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 1},
                },
                "x-kubernetes-validations": [
                    {
                        "rule": "self.minReplicas <= self.maxReplicas",
                        "message": "minReplicas must not exceed maxReplicas",
                    }
                ],
            }
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"widgets.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def test_crd_cel_rule_rejects_a_bad_object_with_its_message(kube_api: Any, namespace: str) -> None:
    group = f"{namespace}.test.scaleserve.dev"
    ext: Any = client.ApiextensionsV1Api(kube_api)
    ext.create_custom_resource_definition(_crd(group))
    try:

        def established() -> bool:
            crd = ext.read_custom_resource_definition(f"widgets.{group}")
            return any(
                c.type == "Established" and c.status == "True"
                for c in (crd.status.conditions or [])
            )

        wait_for(established, "the CRD to be Established", timeout_s=30)
        custom: Any = client.CustomObjectsApi(kube_api)

        def widget(name: str, lo: int, hi: int) -> dict[str, Any]:
            return {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name},
                "spec": {"minReplicas": lo, "maxReplicas": hi},
            }

        def create(body: dict[str, Any]) -> Any:
            return custom.create_namespaced_custom_object(group, "v1", namespace, "widgets", body)

        # the CRD's REST endpoint can take a moment to appear after Established
        wait_for(lambda: _created(create, widget("good", 1, 4)), "a valid Widget", timeout_s=30)
        with pytest.raises(ApiException) as rejected:
            create(widget("bad", 5, 2))
        assert rejected.value.status == 422
        assert "minReplicas must not exceed maxReplicas" in str(rejected.value.body)
    finally:
        ext.delete_custom_resource_definition(f"widgets.{group}")


def _created(create: Any, body: dict[str, Any]) -> bool:
    try:
        create(body)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_service_account_tokens_are_issued_and_authenticate(kube_api: Any, namespace: str) -> None:
    core: Any = client.CoreV1Api(kube_api)
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600)
    )
    token = core.create_namespaced_service_account_token("default", namespace, request).status.token
    assert token.count(".") == 2  # a signed JWT

    review: Any = client.AuthenticationV1Api(kube_api).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status.authenticated is True
    assert review.status.user.username == f"system:serviceaccount:{namespace}:default"

    # the root CA publisher gives every namespace the cluster's CA bundle
    ca = wait_for(
        lambda: _read_config_map(core, "kube-root-ca.crt", namespace),
        "kube-root-ca.crt",
        timeout_s=30,
    )
    assert "BEGIN CERTIFICATE" in ca.data["ca.crt"]


def _read_config_map(core: Any, name: str, namespace: str) -> Any:
    try:
        return core.read_namespaced_config_map(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
