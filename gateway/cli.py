"""`scaleserve gateway`: the OpenAI-compatible gateway in front of engine replicas."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from scaleserve.gateway.app import create_app
    from scaleserve.gateway.settings import SettingsError, from_args

    try:
        settings = from_args(args)
        app = create_app(settings)
    except (SettingsError, ValueError, OSError) as exc:
        print(f"scaleserve gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=30,
        timeout_keep_alive=int(settings.keep_alive),
        lifespan="on",
    )
    return 0


def register(subparsers: Any) -> None:
    from scaleserve.gateway.settings import add_arguments

    parser = subparsers.add_parser(
        "gateway",
        help="run the OpenAI-compatible gateway",
        description="OpenAI-compatible HTTP gateway in front of scaleserve engine replicas.",
    )
    add_arguments(parser)
    parser.set_defaults(run=_run)
