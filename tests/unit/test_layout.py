"""The package layout: one `scaleserve` namespace over the top-level component folders."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import scaleserve.engine
import scaleserve.gateway
import scaleserve.operator

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = {
    "scaleserve.operator": "operator",
    "scaleserve.gateway": "gateway",
    "scaleserve.engine": "engine",
}


@pytest.mark.parametrize("flag", ["-c", "-I", "-S"])
def test_import_operator_from_the_repo_root_is_the_standard_library(flag: str) -> None:
    code = "import operator, sys; print(operator.__file__); print(operator.eq(1, 1))"
    args = [sys.executable, "-c", code] if flag == "-c" else [sys.executable, flag, "-c", code]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    path, eq = out.split()
    assert Path(path).parent != ROOT / "operator"
    assert Path(path).name == "operator.py"
    assert eq == "True"


def test_python_dash_m_from_the_repo_root_keeps_the_standard_library() -> None:
    # `python -m` puts the current directory first on sys.path before site runs.
    proc = subprocess.run(
        [sys.executable, "-m", "json.tool", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_component_packages_are_ours() -> None:
    for module, folder in [
        (scaleserve.operator, "operator"),
        (scaleserve.gateway, "gateway"),
        (scaleserve.engine, "engine"),
    ]:
        paths = [Path(p).resolve() for p in module.__path__]
        assert ROOT / folder in paths, (module.__name__, paths)


def _python_packages(folder: Path) -> set[str]:
    """Dotted names of every folder holding Python modules under a component folder."""
    found = set()
    for py in folder.rglob("*.py"):
        if "__pycache__" in py.parts:
            continue
        found.add(py.parent.relative_to(folder).as_posix())
    return found


def test_every_package_is_listed_in_pyproject() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    expected = {"scaleserve"}
    for name, folder in COMPONENTS.items():
        for rel in _python_packages(ROOT / folder):
            expected.add(name if rel == "." else f"{name}.{rel.replace('/', '.')}")
    for rel in _python_packages(ROOT / "scaleserve"):
        if rel != ".":
            expected.add(f"scaleserve.{rel.replace('/', '.')}")
    missing = expected - listed
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
