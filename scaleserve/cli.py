"""The `scaleserve` command line: one subcommand per deployable or developer tool.

Each subcommand lives in its component's own `cli` module, which exposes
``register(subparsers)`` and keeps heavy imports (vLLM, kopf) inside the function it runs,
so `scaleserve --help` and unrelated subcommands stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from scaleserve.version import __version__

# subcommand name -> module that registers it
SUBCOMMANDS: dict[str, str] = {
    "engine": "scaleserve.engine.cli",
    "gateway": "scaleserve.gateway.cli",
    "operator": "scaleserve.operator.cli",
    "dev": "scaleserve.dev.cli",
    "demo": "scaleserve.demo",
    "tiny-model": "scaleserve.engine.tiny_model",
    "profile": "scaleserve.profiling.cli",
    "simulate": "scaleserve.simulate.cli",
}


# Environment defaults per subcommand, for native libraries that read them once when first
# imported: set before any subcommand module loads (and an operator's own values win).
EARLY_ENVIRONMENT: dict[str, dict[str, str]] = {
    # gRPC's EventEngine client hands every message across threads; its epoll poller cut the
    # gateway's CPU per relayed token by up to a third (grpcio 1.85; docs/gateway.md)
    "gateway": {"GRPC_EXPERIMENTS": "-event_engine_client"},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaleserve",
        description="LLM endpoints on Kubernetes: operator, gateway and engine.",
    )
    parser.add_argument("--version", action="version", version=f"scaleserve {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            # A slim image ships one component and its dependencies only (the operator image
            # has no grpc or vLLM): subcommands whose modules cannot load are left out.
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else list(argv)
    for name, value in EARLY_ENVIRONMENT.get(args_in[0] if args_in else "", {}).items():
        os.environ.setdefault(name, value)
    parser = build_parser()
    args = parser.parse_args(args_in)
    result: int | None = args.run(args)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
