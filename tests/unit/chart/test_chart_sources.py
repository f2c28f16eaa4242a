"""The chart's sources without helm: the CRD copy, values against the schema, settings names."""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from scaleserve.operator.settings import ENV_PREFIX, OperatorSettings

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[3]
CHART = ROOT / "charts" / "scaleserve"
CRD = ROOT / "crds" / "llmendpoints.yaml"
VALUES_DIR = Path(__file__).parent / "values"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def test_the_chart_crd_is_the_repository_crd_byte_for_byte() -> None:
    copy = CHART / "crds" / CRD.name
    if os.environ.get("SCALESERVE_UPDATE_GOLDEN") == "1":
        shutil.copyfile(CRD, copy)
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [CRD.name]
    assert copy.read_bytes() == CRD.read_bytes(), (
        f"{copy} differs from {CRD}: copy it (`cp {CRD.relative_to(ROOT)} "
        f"{copy.relative_to(ROOT)}`, or run this test with SCALESERVE_UPDATE_GOLDEN=1)"
    )


def test_chart_version_and_image_tags_follow_the_project_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = _load(CHART / "Chart.yaml")
    assert chart["appVersion"] == version
    values = _load(CHART / "values.yaml")
    for image in values["endpointDefaults"].values():
        assert image.endswith(f":{version}"), image
    crd_images = re.findall(r"default: (ghcr\.io/\S+)", CRD.read_text())
    assert crd_images, "the CRD no longer defaults the images"
    assert all(i == values["endpointDefaults"]["engineImage"] for i in crd_images), crd_images


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


def test_default_values_satisfy_the_schema() -> None:
    jsonschema.validate(_load(CHART / "values.yaml"), _schema())


@pytest.mark.parametrize("name", sorted(p.name for p in VALUES_DIR.glob("*.yaml")))
def test_example_values_satisfy_the_schema(name: str) -> None:
    merged = _merge(_load(CHART / "values.yaml"), _load(VALUES_DIR / name))
    jsonschema.validate(merged, _schema())


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ({"operator": {"scope": "everywhere"}}, "scope"),
        ({"operator": {"reconcileIntervalSeconds": 0}}, "reconcileIntervalSeconds"),
        ({"operator": {"statsUrl": "ftp://x/{pod_ip}"}}, "statsUrl"),
        ({"operator": {"healthPort": 70000}}, "healthPort"),
        ({"operator": {"metricsPort": -1}}, "metricsPort"),
        ({"operator": {"watchNamespaces": ["Not_A_Namespace"]}}, "watchNamespaces"),
        ({"operatr": {}}, "operatr"),
        ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ],
)
def test_the_schema_rejects_wrong_values(override: dict[str, Any], path: str) -> None:
    merged = _merge(_load(CHART / "values.yaml"), override)
    with pytest.raises(jsonschema.ValidationError) as info:
        jsonschema.validate(merged, _schema())
    assert path in str(info.value)


def test_every_value_in_values_yaml_is_described_by_the_schema() -> None:
    def walk(values: dict[str, Any], schema: dict[str, Any], where: str) -> None:
        props = schema.get("properties", {})
        for key, value in values.items():
            assert key in props, f"{where}{key} is not in values.schema.json"
            if isinstance(value, dict) and "properties" in props[key]:
                walk(value, props[key], f"{where}{key}.")

    walk(_load(CHART / "values.yaml"), _schema(), "")


def test_the_deployment_sets_every_operator_setting_by_its_env_name() -> None:
    template = (CHART / "templates" / "deployment.yaml").read_text()
    used = set(re.findall(rf"{ENV_PREFIX}[A-Z_]+", template))
    expected = {ENV_PREFIX + name.upper() for name in OperatorSettings.model_fields}
    assert used == expected
