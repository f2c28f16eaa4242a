"""The `scaleserve` console script and its subcommand registry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scaleserve.cli import build_parser, main
from scaleserve.version import __version__

pytestmark = pytest.mark.unit


def test_console_script_is_installed_and_reports_its_version() -> None:
    exe = shutil.which("scaleserve") or str(Path(sys.executable).with_name("scaleserve"))
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"scaleserve {__version__}"


def test_help_lists_the_subcommands_of_every_component() -> None:
    help_text = build_parser().format_help()
    commands = ["engine", "gateway", "operator", "dev", "demo", "tiny-model", "profile", "simulate"]
    for command in commands:
        assert command in help_text


def test_a_subcommand_is_required() -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([])
    assert exc.value.code == 2


def test_the_gateway_defaults_to_grpcs_epoll_poller_unless_the_environment_chooses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def help_of(command: str) -> None:
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0

    monkeypatch.delenv("GRPC_EXPERIMENTS", raising=False)
    help_of("engine")
    assert "GRPC_EXPERIMENTS" not in os.environ
    help_of("gateway")
    assert os.environ["GRPC_EXPERIMENTS"] == "-event_engine_client"
    monkeypatch.setenv("GRPC_EXPERIMENTS", "")  # gRPC's own defaults, chosen explicitly
    help_of("gateway")
    assert os.environ["GRPC_EXPERIMENTS"] == ""
