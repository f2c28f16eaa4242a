"""The simulated cluster's GPU nodes: what the pods on each node hold, read as the operator reads
it (free GPUs per node now, and once terminating pods have shut down)."""

from __future__ import annotations

from scaleserve.operator.placement import NodeGPUs, choose_node
from scaleserve.operator.snapshot import NodeFree


class Nodes:
    def __init__(self, gpus: int, per_node: int) -> None:
        count = -(-gpus // per_node)
        self.capacity = {f"node-{i}": min(per_node, gpus - i * per_node) for i in range(count)}
        self.used = dict.fromkeys(self.capacity, 0)  # by pods, terminating ones included
        self.releasing = dict.fromkeys(self.capacity, 0)  # by terminating pods

    @property
    def held(self) -> int:
        return sum(self.used.values())

    def bind(self, size: int, node: str | None) -> str | None:
        """The node a group's pods run on (the scheduler's best fit when it is not pinned), or
        None while no node has room (its pods stay Pending)."""
        if node is None:
            node = choose_node(size, self._free(0))
        if node is None or self.capacity[node] - self.used[node] < size:
            return None
        self.used[node] += size
        return node

    def terminate(self, node: str, size: int) -> None:
        self.releasing[node] += size

    def release(self, node: str, size: int, *, terminating: bool) -> None:
        self.used[node] -= size
        if terminating:
            self.releasing[node] -= size

    def free(self) -> NodeFree:
        return NodeFree(self._free(0), self._free(1))

    def _free(self, after_release: int) -> list[NodeGPUs]:
        free = [
            NodeGPUs(n, cap - self.used[n] + after_release * self.releasing[n])
            for n, cap in self.capacity.items()
        ]
        return sorted((n for n in free if n.free > 0), key=lambda n: (-n.free, n.name))
