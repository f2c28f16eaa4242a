"""Fixtures of the whole-system scenarios on the local stack.

``local_stack`` (session): `scaleserve.dev.stack.Stack` started once for every test that asks
for it (control plane, CRD, operator, local runner with two local nodes of two GPUs each), and
stopped at the end. It is a stack of its own rather than the kwok cluster of
tests/fixtures/cluster.py: gateway pods have no node selector, and on a cluster with kwok nodes
they could land on a simulated node instead of a local one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from e2e.local.host import LocalStack, needs_root
from tests.fixtures.engines import engine_launcher, engine_replica, tiny_model_dir

# engine processes for the scenarios that need one without a stack (test_images.py)
__all__ = ["engine_launcher", "engine_replica", "tiny_model_dir"]

log = logging.getLogger("e2e")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise


@pytest.fixture(scope="session")
def local_stack() -> Iterator[LocalStack]:
    """A stack for the session; ``SCALESERVE_E2E_STACK=<name>`` reuses a running one (started
    with `scaleserve dev up --no-sample --name <name>`) and leaves it running."""
    needs_root()
    from scaleserve.dev.stack import Stack
    from scaleserve.engine.tiny_model import default_model_dir, make_tiny_model

    model = make_tiny_model(default_model_dir())
    existing = os.environ.get("SCALESERVE_E2E_STACK")
    stack = Stack(existing or f"e2e-{os.getpid()}")
    state = stack.load() if existing else stack.up(sample=False, progress=log.info)
    if state is None:
        pytest.fail(f"SCALESERVE_E2E_STACK={existing}: no such stack is running")
    client = stack.kube_client()
    try:
        yield LocalStack(stack, state, client, model)
    finally:
        client.close()
        if not existing:
            stack.down()
