"""Every examples/ manifest passes the API server's validation (server-side dry run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from scaleserve.operator.spec import parse_spec
from tests.fixtures.cluster import KubeCluster
from tests.fixtures.operator_harness import kubectl

pytestmark = pytest.mark.control_plane

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples_to_check() -> None:
    assert {p.name for p in EXAMPLES} >= {
        "llama-3.1-70b-fp8-tp8.yaml",
        "dynamic-8gpu.yaml",
        "cpu-tiny-model.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_each_example_passes_a_server_side_dry_run(
    kube_cluster: KubeCluster, llmep_crd: str, namespace: str, path: Path
) -> None:
    result = kubectl(
        kube_cluster, "apply", "--dry-run=server", "-n", namespace, "-f", str(path), "-o", "json"
    )
    obj = json.loads(result.stdout)
    assert obj["kind"] == "LLMEndpoint"
    # the server filled in the CRD's defaults, and the operator's typed spec takes the result
    assert "drainTimeoutSeconds" in obj["spec"]["engine"]
    spec = parse_spec(obj["spec"])
    assert spec.model.uri == yaml.safe_load(path.read_text())["spec"]["model"]["uri"]
    # a dry run leaves nothing behind
    left = kubectl(kube_cluster, "get", "llmep", "-n", namespace, "-o", "name").stdout
    assert left.strip() == ""


def test_the_dry_run_does_validate(
    kube_cluster: KubeCluster, llmep_crd: str, namespace: str, tmp_path: Path
) -> None:
    body = yaml.safe_load((EXAMPLES[0].parent / "llama-3.1-70b-fp8-tp8.yaml").read_text())
    body["spec"]["layout"]["tensorParallel"] = 3
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump(body))
    result = kubectl(
        kube_cluster, "apply", "--dry-run=server", "-n", namespace, "-f", str(broken), check=False
    )
    assert result.returncode != 0
    assert "power of two" in result.stderr or "must divide" in result.stderr
