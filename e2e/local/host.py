"""What the local stack needs from the machine."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class LocalStack:
    """A running local stack (the `local_stack` fixture)."""

    stack: Any  # scaleserve.dev.stack.Stack
    state: Any  # scaleserve.dev.stack.StackState
    client: Any  # kubernetes ApiClient
    model_dir: Path


def needs_root() -> None:
    """Skip unless root: the local stack creates a network namespace and a veth pair for its
    pod network."""
    if os.geteuid() != 0:
        pytest.skip("the local stack creates a network namespace for its pods (root only)")
