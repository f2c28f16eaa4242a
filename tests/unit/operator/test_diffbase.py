"""The operator's diff base for kopf: the same essence as kopf's own build, from less copying."""

from __future__ import annotations

import copy
from typing import Any

import kopf
import pytest

from scaleserve.operator.handlers import LeanDiffBase, kopf_settings

pytestmark = pytest.mark.unit


def body() -> dict[str, Any]:
    return {
        "apiVersion": "scaleserve.io/v1alpha1",
        "kind": "LLMEndpoint",
        "metadata": {
            "name": "chat",
            "namespace": "ns",
            "uid": "u-1",
            "resourceVersion": "42",
            "generation": 3,
            "labels": {"team": "a"},
            "annotations": {
                "note": "kept",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "scaleserve.io/last-handled-configuration": '{"spec": {}}',
                "scaleserve.io/apply": "{}",
            },
            "finalizers": ["scaleserve.io/finalizer"],
            "managedFields": [{"manager": "scaleserve-operator", "fieldsV1": {"f:status": {}}}],
        },
        "spec": {"model": {"uri": "hf://org/m"}, "layout": {"replicas": 1, "tensorParallel": 1}},
        "status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]},
    }


@pytest.mark.parametrize(
    "extra",
    [
        None,
        set(),
        {("spec",)},
        {("status", "phase")},
        {("metadata", "finalizers")},
        {"status.phase"},
    ],
)
def test_the_lean_build_is_kopfs_build(extra: Any) -> None:
    ours = LeanDiffBase(prefix="scaleserve.io", key="last-handled-configuration")
    kopfs = kopf.AnnotationsDiffBaseStorage(
        prefix="scaleserve.io", key="last-handled-configuration"
    )
    raw = body()
    assert ours.build(body=kopf.Body(raw), extra_fields=extra) == kopfs.build(
        body=kopf.Body(copy.deepcopy(raw)), extra_fields=extra
    )
    assert raw == body()  # the body is left as it was


def test_the_operator_uses_it() -> None:
    assert isinstance(kopf_settings().persistence.diffbase_storage, LeanDiffBase)
