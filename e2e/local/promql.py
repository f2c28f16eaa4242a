"""The PromQL of the chart's Grafana dashboards and alerting rules, ready for a real Prometheus.

Every query a dashboard or a rule would send is listed with where it comes from: panel targets,
annotation queries, the metric behind each template variable (`label_values(X, label)` is a
Grafana function; its series selector X is PromQL), and each alert's expression. Grafana's
variables are filled in as a user's selection would fill them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).parents[2] / "charts" / "scaleserve"
DASHBOARDS = CHART / "dashboards"
ALERTS = CHART / "monitoring" / "alerts.yaml"
LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?\w+\)$")


@dataclass(frozen=True)
class Query:
    where: str  # "endpoint.json: Time to first token [p50]", "alert ScaleserveEngineStalled"
    expr: str


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels") or [])  # collapsed rows hold their panels


def dashboard_queries(path: Path) -> list[Query]:
    board = json.loads(path.read_text())
    out = []
    for panel in _panels(board["panels"]):
        for target in panel.get("targets") or []:
            where = f"{path.name}: {panel['title']} [{target['legendFormat']}]"
            out.append(Query(where, target["expr"]))
    for note in board["annotations"]["list"]:
        if "expr" in note:
            out.append(Query(f"{path.name}: annotation {note['name']}", note["expr"]))
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            match = LABEL_VALUES.match(var["definition"])
            assert match, f"{path.name}: variable {var['name']} is not label_values(...)"
            assert match.group(1), f"{path.name}: variable {var['name']} names no series"
            out.append(Query(f"{path.name}: variable {var['name']}", match.group(1)))
    return out


def all_dashboard_queries() -> list[Query]:
    return [q for path in sorted(DASHBOARDS.glob("*.json")) for q in dashboard_queries(path)]


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_queries(path: Path = ALERTS) -> list[Query]:
    return [Query(f"alert {r['alert']}", r["expr"]) for r in alert_rules(path)]


def fill_variables(expr: str, values: Mapping[str, str], rate_interval: str) -> str:
    """The expression as Grafana sends it for this selection of its variables."""
    expr = expr.replace("$__rate_interval", rate_interval)
    for name, value in values.items():
        expr = expr.replace(f"${{{name}}}", value).replace(f"${name}", value)
    assert "$" not in expr, f"unfilled variable in {expr}"
    return expr
