"""The CPU build's thread binding when a pod sets none.

vLLM's default binding on the CPU ("auto") gives each tensor-parallel worker a NUMA node of its
own and refuses to start a TP2 engine on a one-node machine ("Not enough allowed NUMA nodes").
A pod on a kubelet carries no ``VLLM_CPU_OMP_THREADS_BIND`` (the operator does not know the
node's cores), so the engine splits the cores it may run on between its workers itself.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence

BIND_VARIABLE = "VLLM_CPU_OMP_THREADS_BIND"


def threads_bind(cores: Sequence[int], workers: int) -> str | None:
    """`cores` in `workers` contiguous shares, in vLLM's syntax ("0,1|2,3"); None when there are
    fewer cores than workers (vLLM's own check then says why it cannot start)."""
    ordered = sorted(cores)
    if workers < 2 or len(ordered) < workers:
        return None
    share, extra = divmod(len(ordered), workers)
    shares, start = [], 0
    for worker in range(workers):
        end = start + share + (1 if worker < extra else 0)
        shares.append(",".join(str(c) for c in ordered[start:end]))
        start = end
    return "|".join(shares)


def bind_cpu_workers(workers: int, environ: MutableMapping[str, str] = os.environ) -> None:
    """Set the binding for `workers` tensor-parallel workers on the CPU build, unless set."""
    if BIND_VARIABLE in environ:
        return
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    bind = threads_bind(sorted(os.sched_getaffinity(0)), workers)
    if bind is not None:
        environ[BIND_VARIABLE] = bind
