"""e2e/kind/run.sh (not run here: no Docker engine) parses, passes shellcheck, and agrees with
the chart, the images and the CPU example it uses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[3]
SCRIPT = ROOT / "e2e" / "kind" / "run.sh"


def test_the_script_parses() -> None:
    result = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_shellcheck_is_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    result = subprocess.run(
        [shellcheck, "--severity=style", str(SCRIPT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_the_script_builds_every_image_the_cpu_example_and_the_chart_use() -> None:
    text = SCRIPT.read_text()
    version = yaml.safe_load((ROOT / "charts/scaleserve/Chart.yaml").read_text())["appVersion"]
    built = {
        tag.replace("$registry", "ghcr.io/scaleserve").replace("$version", version): dockerfile
        for tag, dockerfile in re.findall(r'"(\$registry/[^=]+)=(images/[^"]+)"', text)
    }
    example = yaml.safe_load((ROOT / "examples/cpu-tiny-model.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts/scaleserve/values.yaml").read_text())
    wanted = {
        example["spec"]["engine"]["image"],
        example["spec"]["gateway"]["image"],
        f"{values['image']['repository']}:{version}",
    }
    assert wanted <= set(built), (wanted, built)
    for dockerfile in built.values():
        assert (ROOT / dockerfile).is_file()
    assert 'ENDPOINT="' + example["metadata"]["name"] + '"' in text
    assert 'MODEL="' + example["spec"]["model"]["servedName"] + '"' in text
