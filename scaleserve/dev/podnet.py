"""The local pod network: one /24 per local node, made local to this machine with one route.

Pods need addresses that are their own (every engine listens on 50051 and 9090, every gateway
on 8000) and that Kubernetes accepts in EndpointSlices, which reject loopback (127.0.0.0/8).
So each local node gets a /24 out of 198.18.0.0/15 (reserved for network benchmarking, never
routed on the internet) and the stack adds ``ip route add local 198.18.N.0/24 dev lo``: every
address in it is then local to this machine (like 127.0.0.0/8), each pod binds its own.
Adding and removing the route needs CAP_NET_ADMIN (root).
"""

from __future__ import annotations

import ipaddress
import subprocess
from dataclasses import dataclass, field

POD_SUPERNET = ipaddress.ip_network("198.18.0.0/16")
FIRST_POD_HOST = 2  # .1 is the node's own address


class PodNetworkError(RuntimeError):
    pass


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PodNetworkError("the `ip` command (iproute2) is not installed") from None


def local_routes() -> set[str]:
    """Subnets of the local routing table under POD_SUPERNET."""
    out = _ip("route", "show", "table", "local").stdout
    found = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "local":
            try:
                net = ipaddress.ip_network(parts[1], strict=False)
            except ValueError:
                continue
            if net.version == 4 and net.subnet_of(POD_SUPERNET):  # type: ignore[arg-type]
                found.add(str(net))
    return found


def add_subnets(count: int) -> list[str]:
    """Claim `count` free /24s (no route for them yet) and make them local; returns them."""
    taken = local_routes()
    claimed: list[str] = []
    try:
        for net in POD_SUPERNET.subnets(new_prefix=24):
            if len(claimed) == count:
                break
            if str(net) in taken:
                continue
            done = _ip("route", "add", "local", str(net), "dev", "lo")
            if done.returncode == 0:
                claimed.append(str(net))
            elif "File exists" not in done.stderr:
                raise PodNetworkError(
                    f"cannot add the local route {net} for pod addresses "
                    f"(`ip route add local {net} dev lo`: {done.stderr.strip()}); "
                    "the local stack needs root (CAP_NET_ADMIN) for its pod network"
                )
    except BaseException:
        remove_subnets(claimed)
        raise
    if len(claimed) < count:
        remove_subnets(claimed)
        raise PodNetworkError(f"no free /24 left in {POD_SUPERNET} for pod addresses")
    return claimed


def remove_subnets(subnets: list[str]) -> None:
    for net in subnets:
        _ip("route", "del", "local", net, "dev", "lo")


def node_address(subnet: str) -> str:
    return str(ipaddress.ip_network(subnet)[1])


@dataclass
class AddressPool:
    """Pod addresses of one node's /24; a released address is reused last (stale connections
    to a deleted pod never reach its successor soon after)."""

    subnet: str
    _next: int = FIRST_POD_HOST
    _used: set[str] = field(default_factory=set)

    def allocate(self) -> str:
        net = ipaddress.ip_network(self.subnet)
        hosts = net.num_addresses - 1  # without the broadcast address
        for _ in range(hosts):
            candidate = str(net[self._next])
            self._next = self._next + 1 if self._next + 1 < hosts else FIRST_POD_HOST
            if candidate not in self._used:
                self._used.add(candidate)
                return candidate
        raise PodNetworkError(f"no free pod address in {self.subnet}")

    def release(self, address: str) -> None:
        self._used.discard(address)


@dataclass
class GpuPool:
    """The GPUs of one local node, handed to pods like a device plugin would (lowest first).

    On the CPU each "GPU" stands for one core: GPU i of a node runs on core i mod cpus.
    """

    count: int
    cpus: int
    _used: set[int] = field(default_factory=set)

    def allocate(self, n: int) -> list[int] | None:
        free = [i for i in range(self.count) if i not in self._used]
        if len(free) < n:
            return None
        chosen = free[:n]
        self._used.update(chosen)
        return chosen

    def release(self, indexes: list[int]) -> None:
        self._used.difference_update(indexes)

    def cores(self, indexes: list[int]) -> str:
        """VLLM_CPU_OMP_THREADS_BIND for these GPUs: one core per tensor-parallel worker."""
        return "|".join(str(i % max(1, self.cpus)) for i in indexes)
