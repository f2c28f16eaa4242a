"""`scaleserve engine`: the process in every engine pod (vLLM is imported only when it runs)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from scaleserve.engine.errors import SettingsError
from scaleserve.engine.settings import EngineSettings, add_arguments


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "engine",
        help="serve a model over gRPC with vLLM's async engine in-process",
        description=(
            "Serve a model over the scaleserve.engine.v1 gRPC protocol. Every flag can also be "
            "set as SCALESERVE_ENGINE_<FLAG> (dashes as underscores)."
        ),
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        settings = EngineSettings.load(args)
    except SettingsError as exc:
        print(f"scaleserve engine: {exc}", file=sys.stderr)
        return 2
    from scaleserve.engine.server import main

    return main(settings)
