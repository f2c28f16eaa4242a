"""Files the local cluster and stack keep their state in, read by other processes at any time
(`dev down`, Prometheus, a second `dev up`): written atomically, so that no reader sees half."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def save(path: Path, state: Any) -> None:
    """`state`, a dataclass, as JSON."""
    write_atomically(path, json.dumps(asdict(state), indent=2))


def load(path: Path, cls: type[T]) -> T | None:
    """The `cls` saved at `path`, or None where there is none."""
    try:
        return cls(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
