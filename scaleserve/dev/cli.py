"""`scaleserve dev ...`: developer tools.

Each tool registers its own sub-subcommand through a function in `DEV_COMMANDS`, so new ones
(`dev demo`, `dev up`, ...) are one function and one entry. Heavy imports stay inside the
functions that run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

DEFAULT_CLUSTER = "scaleserve"


def _cluster_up(args: argparse.Namespace) -> int:
    from scaleserve.dev.cluster import Cluster, ClusterError

    cluster = Cluster(args.name)
    try:
        state = cluster.up(nodes=args.nodes, gpus_per_node=args.gpus, timeout_s=args.timeout)
    except ClusterError as exc:
        print(f"cluster {args.name!r} failed to start: {exc}", file=sys.stderr)
        return 1
    print(f"cluster {state.name!r} is up in {state.ready_s:.1f}s at {state.server}")
    print(f"export KUBECONFIG={state.kubeconfig}")
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    from scaleserve.dev.cluster import Cluster

    existed = Cluster(args.name).down()
    print(f"cluster {args.name!r} {'removed' if existed else 'was not running'}")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    from scaleserve.dev.cluster import Cluster

    report = Cluster(args.name).status()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"cluster {report['name']!r}: {'running' if report['running'] else 'not running'}")
        for key in ("server", "kubeconfig", "apiserver_ready", "ready_nodes"):
            if key in report:
                print(f"  {key}: {report[key]}")
        for name, proc in report.get("processes", {}).items():
            print(f"  {name}: pid {proc['pid']} {'alive' if proc['alive'] else 'DEAD'}")
    return 0 if report["running"] else 3


def _register_cluster(dev_sub: Any) -> None:
    cluster = dev_sub.add_parser(
        "cluster",
        help="a local control plane (etcd, apiserver, controllers, scheduler) with kwok GPU nodes",
    )
    actions = cluster.add_subparsers(dest="cluster_action", metavar="ACTION", required=True)

    up = actions.add_parser("up", help="start the cluster (no-op if it is running)")
    up.add_argument("--nodes", type=int, default=2, help="fake GPU nodes (default 2)")
    up.add_argument("--gpus", type=int, default=8, help="nvidia.com/gpu per node (default 8)")
    up.add_argument("--timeout", type=float, default=120.0, help="start-up deadline, seconds")
    up.set_defaults(run=_cluster_up)

    down = actions.add_parser("down", help="stop the cluster and remove its files")
    down.set_defaults(run=_cluster_down)

    status = actions.add_parser("status", help="report the cluster's processes and readiness")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(run=_cluster_status)

    for parser in (up, down, status):
        parser.add_argument("--name", default=DEFAULT_CLUSTER, help="cluster name")


def _stack_up(args: argparse.Namespace) -> int:
    from scaleserve.dev.stack import Stack

    try:
        state = Stack(args.name).up(
            nodes=args.nodes, gpus_per_node=args.gpus, sample=not args.no_sample,
            prometheus=args.prometheus, timeout_s=args.timeout,
        )  # fmt: skip
    except Exception as exc:
        print(f"scaleserve dev up: {exc}", file=sys.stderr)
        return 1
    print(f"==> stack {state.name!r} is up; it keeps running until `scaleserve dev down`")
    print(f"    export KUBECONFIG={state.kubeconfig}")
    if state.gateway_url:
        print(f"    OpenAI base URL: {state.gateway_url}")
    print(f"    operator metrics: {state.operator_metrics_url}")
    if state.prometheus_url:
        print(f"    Prometheus: {state.prometheus_url}")
    print(f"    logs: {state.dir}/logs, {state.dir}/pods/*/container.log")
    return 0


def _stack_down(args: argparse.Namespace) -> int:
    from scaleserve.dev.stack import Stack

    existed = Stack(args.name).down(progress=lambda line: print(line, flush=True))
    print(f"stack {args.name!r} {'removed' if existed else 'was not running'}")
    return 0


def _register_stack(dev_sub: Any) -> None:
    up = dev_sub.add_parser(
        "up",
        help="the whole system locally: control plane, operator, and a local runner that runs "
        "engine and gateway pods as real processes (vLLM on the CPU); applies a sample endpoint",
    )
    up.add_argument("--nodes", type=int, default=2, help="local nodes (default 2)")
    up.add_argument("--gpus", type=int, default=2, help="GPUs per local node, one core each")
    up.add_argument("--no-sample", action="store_true", help="do not apply the sample endpoint")
    up.add_argument(
        "--prometheus",
        action="store_true",
        help="also start a Prometheus server scraping the operator and every pod "
        "(Debian's prometheus package, fetched into the cache on first use)",
    )
    up.add_argument("--timeout", type=float, default=600.0, help="start-up deadline, seconds")
    up.set_defaults(run=_stack_up)
    down = dev_sub.add_parser("down", help="stop everything `dev up` started, remove its files")
    down.set_defaults(run=_stack_down)
    for parser in (up, down):
        parser.add_argument("--name", default=DEFAULT_CLUSTER, help="stack (and cluster) name")


# `dev` sub-subcommands: each function adds its parser(s) to the `dev` subparsers.
DEV_COMMANDS: list[Callable[[Any], None]] = [_register_cluster, _register_stack]


def register(subparsers: Any) -> None:
    dev = subparsers.add_parser("dev", help="developer tools: local cluster and local stack")
    dev_sub = dev.add_subparsers(dest="dev_command", metavar="DEV_COMMAND", required=True)
    for add in DEV_COMMANDS:
        add(dev_sub)
