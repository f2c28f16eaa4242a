"""A Prometheus server for the local stack (`scaleserve dev up --prometheus`, the e2e tests).

It scrapes what a cluster's Prometheus would: the engine and gateway pods, turned into targets by
the chart's PodMonitor relabelings (charts/scaleserve/monitoring/pod-relabelings.yaml, which
follow the pods' prometheus.io annotations); and the operator, a host process here rather than a
pod, as a static target labelled the way the chart's ServiceMonitor labels it. The pods come from
a file_sd file that prometheus_sd.py keeps up to date with the labels kubernetes_sd would give
(Debian's build has no Kubernetes discovery). It loads the chart's alerting rules
(monitoring/alerts.yaml), so those are evaluated as in a cluster. The binaries come from Debian's
`prometheus` package, unpacked into the cache by scripts/prometheus.sh.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from scaleserve.dev.cluster import REPO_ROOT

CHART_MONITORING = REPO_ROOT / "charts" / "scaleserve" / "monitoring"
RELABELINGS = CHART_MONITORING / "pod-relabelings.yaml"
ALERTS = CHART_MONITORING / "alerts.yaml"
INSTALL_SCRIPT = REPO_ROOT / "scripts" / "prometheus.sh"
# short, so that rates over a minute have samples soon after a stack starts, and long enough
# that an engine's /metrics answers within it (the timeout) on a busy 2-core machine
SCRAPE_INTERVAL = "5s"


def binaries_dir() -> Path:
    """The folder of `prometheus` and `promtool` (fetched and unpacked on first use)."""
    out = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, check=False, timeout=600
    )
    if out.returncode != 0:
        raise RuntimeError(f"{INSTALL_SCRIPT.name} failed:\n{out.stderr[-2000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def relabel_configs(path: Path = RELABELINGS) -> list[dict[str, Any]]:
    """The PodMonitor relabelings (camelCase, the Prometheus Operator's spelling) as Prometheus
    relabel_configs (snake_case)."""
    rules = yaml.safe_load(path.read_text())
    return [{_snake(k): v for k, v in rule.items()} for rule in rules]


def config(
    targets_file: Path, operator_target: str, interval: str = SCRAPE_INTERVAL
) -> dict[str, Any]:
    """prometheus.yml for the local stack [pure]."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "scaleserve-operator",
                "honor_labels": True,  # the operator's namespace/endpoint labels are its own
                "static_configs": [
                    {"targets": [operator_target], "labels": {"component": "operator"}}
                ],
            },
            {
                "job_name": "scaleserve-endpoints",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": interval}],
                "relabel_configs": relabel_configs(),
            },
        ],
    }


def argv(bin_dir: Path, config_file: Path, data_dir: Path, port: int) -> list[str]:
    return [
        str(bin_dir / "prometheus"),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]


def write_config(path: Path, cfg: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(cfg), sort_keys=False))


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _get(url: str, path: str, params: Mapping[str, str] | None = None) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}{path}{query}", timeout=30) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """The series of an instant query (an invalid expression raises with Prometheus' error)."""
    try:
        data = _get(url, "/api/v1/query", {"query": expr})
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{expr}: {exc.read().decode(errors='replace')}") from exc
    result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
    return result


def active_targets(url: str) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = _get(url, "/api/v1/targets", {"state": "active"})[
        "activeTargets"
    ]
    return targets
