"""`scaleserve operator`: run the LLMEndpoint operator (kopf under the hood)."""

from __future__ import annotations

import argparse
from typing import Any

from scaleserve.operator.settings import OperatorSettings


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the LLMEndpoint operator",
        description="Reconcile LLMEndpoints into engines and gateways and reshape their layout. "
        "Every flag can also be set as SCALESERVE_OPERATOR_<FLAG> (dashes as underscores).",
    )
    parser.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        help="namespace to watch (repeatable; default: the whole cluster)",
    )
    parser.add_argument(
        "--reconcile-interval",
        dest="reconcile_interval_s",
        type=float,
        help="seconds, per endpoint",
    )
    parser.add_argument(
        "--stats-url",
        help="gateway /stats URL template with {pod_ip}, {pod_name}, {namespace}, {endpoint}",
    )
    parser.add_argument("--stats-timeout", dest="stats_timeout_s", type=float)
    parser.add_argument(
        "--pending-grace",
        dest="pending_grace_s",
        type=float,
        help="seconds engine pods may stay Pending before the endpoint is Degraded",
    )
    parser.add_argument("--field-manager")
    parser.add_argument("--liveness-port", type=int, help="serve kopf's /healthz on this port")
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument(
        "--leader-lease",
        help="NAMESPACE/NAME of the Lease electing the one replica that acts (default: none)",
    )
    parser.add_argument("--verbose", action="store_true")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import logging

    from scaleserve.operator.errors import SettingsError
    from scaleserve.operator.handlers import run
    from scaleserve.operator.leader import run_elected

    try:
        settings = OperatorSettings.load(args)
    except SettingsError as exc:
        print(f"scaleserve operator: {exc}")
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # kopf reports every successful handler run at INFO: one line per endpoint per tick
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_elected(settings, lambda stop: run(settings, stop_flag=stop)))
    return 0
