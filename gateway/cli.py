"""`scaleserve gateway`: the OpenAI-compatible gateway in front of engine replicas."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from scaleserve.gateway.app import create_app
    from scaleserve.gateway.server import serve
    from scaleserve.gateway.settings import GatewaySettings, SettingsError
    from scaleserve.tracing import tracer_from_env

    try:
        settings = GatewaySettings.load(args)
        # with several workers this app only runs the same checks before any starts; each
        # worker makes its own app and tracer
        app = create_app(
            settings, tracer_from_env("scaleserve-gateway") if settings.workers == 1 else None
        )
    except (SettingsError, ValueError, OSError) as exc:
        print(f"scaleserve gateway: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if settings.workers > 1:
        from scaleserve.gateway.workers import serve_workers

        return serve_workers(settings)
    serve(app, settings)
    return 0


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s",
        handlers=[handler],
    )


class RequestIdFilter(logging.Filter):
    """Adds the id of the request the logging task serves ("-" outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from scaleserve.gateway.deadlines import CURRENT_FLOW

        flow = CURRENT_FLOW.get()
        record.request_id = flow.request_id if flow is not None else "-"
        return True


def register(subparsers: Any) -> None:
    from scaleserve.gateway.settings import add_arguments

    parser = subparsers.add_parser(
        "gateway",
        help="run the OpenAI-compatible gateway",
        description="OpenAI-compatible HTTP gateway in front of scaleserve engine replicas.",
    )
    add_arguments(parser)
    parser.set_defaults(run=_run)
