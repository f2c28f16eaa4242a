"""`scaleserve simulate` end to end, short: the files it writes and the invariants it checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scaleserve.cli import build_parser, main
from scaleserve.profiles import dump_profile
from tests.fixtures.profiles import tp1_tp8_profile

pytestmark = pytest.mark.unit

PROFILE = dump_profile(tp1_tp8_profile({1: 30, 8: 60}))


def test_help_documents_the_strategies_and_traffic() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices["simulate"]  # type: ignore[union-attr]
    text = sub.format_help()
    for words in ["--profile", "static:RxT", "replicas:T", "thresholds", "objectives[:MIN]"]:
        assert words in text


def test_a_short_comparison_writes_json_markdown_and_a_plot(tmp_path: Path) -> None:
    profile = tmp_path / "profile.yaml"
    profile.write_text(PROFILE)
    out = tmp_path / "out"
    args = ["simulate", "--profile", str(profile), "--duration", "600", "--peak-rps", "30"]
    args += ["--thresholds", "6", "--window", "30", "--cooldown", "60", "--tbt-ms", "10"]
    args += ["--out", str(out)]
    assert main(args) == 0
    data = json.loads((out / "simulation.json").read_text())
    names = [s["strategy"] for s in data["strategies"]]
    assert names == [
        "static 1x8",
        "static 8x1",
        "replica autoscaler TP1",
        "scaleserve thresholds",
        "scaleserve objectives 1-8 GPUs",
    ]
    for summary in data["strategies"]:
        assert summary["conserved"]
        assert summary["violations"] == []
        assert summary["requests"]["arrived"] > 1000
    assert data["strategies"][3]["reshapes"] >= 1
    assert data["strategies"][4]["reshapes"] >= 1
    assert "| scaleserve thresholds |" in (out / "simulation.md").read_text()
    assert (out / "simulation.png").stat().st_size > 10_000
