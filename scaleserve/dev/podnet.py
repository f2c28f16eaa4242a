"""The local pod network: a network namespace per stack, reached from the host over a veth pair.

Pods need addresses that are their own (every engine listens on 50051 and 9090, every gateway
on 8000) and that Kubernetes accepts in EndpointSlices, which reject loopback (127.0.0.0/8).
So each stack creates a network namespace, ``scaleserve-<stack>``, and a veth pair joining it
to the host, and takes one free /20 out of 10.251.0.0/16 (private, RFC 1918) for it:

- the first /24 is the link: ``<block>.1`` is the host end of the veth, ``<block>.2`` the
  namespace's end (``eth0`` there);
- local node *i* gets the (i+1)-th /24; inside the namespace the stack adds
  ``ip route add local <node /24> dev lo``, so every address of it is local to the namespace and
  each pod binds its own (``.1`` is the node's address, pods get ``.2`` on);
- the host routes the whole /20 via the namespace's end of the veth.

Pod processes run inside the namespace (``ip netns exec``); the operator, the runner's probes
and test clients on the host reach them over the veth. The namespace has no other way out: its
only routes are the link and its own local /24s, so what pods can reach is the host end of the
veth, where the stack's kube-apiserver listens. The addresses exist only inside the namespace
and at the two ends of its veth. Creating and removing all of this needs root (CAP_NET_ADMIN);
`remove` deletes the namespace, the veth and the route.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import ipaddress
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

POD_SUPERNET = ipaddress.IPv4Network("10.251.0.0/16")
BLOCK_PREFIX = 20  # one per stack: the link /24 and up to 15 node /24s
MAX_NODES = 2 ** (24 - BLOCK_PREFIX) - 1
FIRST_POD_HOST = 2  # .1 is the node's own address
NS_IFNAME = "eth0"


class PodNetworkError(RuntimeError):
    pass


def _ip(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise PodNetworkError("the `ip` command (iproute2) is not installed") from None
    if check and done.returncode != 0:
        raise PodNetworkError(
            f"`ip {' '.join(args)}` failed: {done.stderr.strip()}; "
            "the local stack needs root (CAP_NET_ADMIN) for its pod network"
        )
    return done


def netns_name(stack: str) -> str:
    return f"scaleserve-{stack}"


def host_ifname(stack: str) -> str:
    """The host end of the stack's veth (interface names are at most 15 characters)."""
    return "ssv-" + hashlib.sha256(stack.encode()).hexdigest()[:10]


def block_layout(block: str, nodes: int) -> tuple[str, str, list[str]]:
    """(host address, namespace address, node /24s) of a stack's block."""
    net = ipaddress.IPv4Network(block)
    if net.prefixlen != BLOCK_PREFIX or not net.subnet_of(POD_SUPERNET):
        raise PodNetworkError(f"{block} is not a /{BLOCK_PREFIX} of {POD_SUPERNET}")
    if not 1 <= nodes <= MAX_NODES:
        raise PodNetworkError(f"a local stack has 1 to {MAX_NODES} nodes, not {nodes}")
    subnets = list(net.subnets(new_prefix=24))
    return str(subnets[0][1]), str(subnets[0][2]), [str(s) for s in subnets[1 : nodes + 1]]


def free_block(taken: list[ipaddress.IPv4Network]) -> str:
    """The first /20 of POD_SUPERNET that overlaps none of `taken` (routes, addresses)."""
    for block in POD_SUPERNET.subnets(new_prefix=BLOCK_PREFIX):
        if not any(block.overlaps(t) for t in taken):
            return str(block)
    raise PodNetworkError(f"no free /{BLOCK_PREFIX} left in {POD_SUPERNET} for a pod network")


def host_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks the host already uses: every route of every table and every address
    (default routes left out)."""
    found: list[ipaddress.IPv4Network] = []
    routes = _ip("-4", "-o", "route", "show", "table", "all").stdout.splitlines()
    addrs = _ip("-4", "-o", "addr", "show").stdout.splitlines()
    words = [line.split() for line in routes]
    words += [line.split()[3:4] for line in addrs if len(line.split()) > 3]
    for parts in words:
        for word in parts[:2]:
            if word in ("default", "local", "broadcast", "unreachable", "blackhole", "prohibit"):
                continue
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_network(word, strict=False)
                if isinstance(net, ipaddress.IPv4Network) and net.prefixlen > 0:
                    found.append(net)
            break
    return found


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    """Serialises choosing and claiming a block between stacks starting at the same time."""
    path = Path(tempfile.gettempdir()) / "scaleserve-podnet.lock"
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class PodNetwork:
    """One stack's namespace, veth and addresses."""

    netns: str
    host_if: str
    block: str
    host_address: str
    ns_address: str
    subnets: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PodNetwork:
        return cls(**raw)

    def exec_prefix(self) -> list[str]:
        """What runs a command inside the namespace (it execs: the pid stays the command's)."""
        return ["ip", "netns", "exec", self.netns]


def create(stack: str, nodes: int) -> PodNetwork:
    """Create the stack's namespace and veth, claim a free block and route it; returns it."""
    netns, host_if = netns_name(stack), host_ifname(stack)
    remove(stack)  # whatever a stack of the same name left behind
    with _lock():
        block = free_block(host_networks())
        host_address, ns_address, subnets = block_layout(block, nodes)
        net = PodNetwork(netns, host_if, block, host_address, ns_address, subnets)
        try:
            _ip("netns", "add", netns, check=True)
            _ip("link", "add", host_if, "type", "veth", "peer", "name", NS_IFNAME,
                "netns", netns, check=True)  # fmt: skip
            _ip("addr", "add", f"{host_address}/24", "dev", host_if, check=True)
            _ip("link", "set", host_if, "up", check=True)
            _ip("-n", netns, "link", "set", "lo", "up", check=True)
            _ip("-n", netns, "addr", "add", f"{ns_address}/24", "dev", NS_IFNAME, check=True)
            _ip("-n", netns, "link", "set", NS_IFNAME, "up", check=True)
            for subnet in subnets:
                _ip("-n", netns, "route", "add", "local", subnet, "dev", "lo", check=True)
            _ip("route", "add", block, "via", ns_address, "dev", host_if, check=True)
        except BaseException:
            remove(stack)
            raise
    return net


def remove(stack: str) -> None:
    """Delete the stack's namespace and veth (its route goes with the veth). Idempotent; the
    namespace's processes must be stopped first."""
    if exists(stack):
        _ip("netns", "del", netns_name(stack))
    if _ip("link", "show", host_ifname(stack)).returncode == 0:
        _ip("link", "del", host_ifname(stack))


def exists(stack: str) -> bool:
    return netns_name(stack) in namespaces()


def namespaces() -> set[str]:
    return {line.split()[0] for line in _ip("netns", "list").stdout.splitlines() if line.strip()}


def routes_to(block: str) -> list[str]:
    """Host routes that overlap `block` (none once its stack is down)."""
    target = ipaddress.ip_network(block)
    return [str(n) for n in host_networks() if n.overlaps(target)]


def listening(netns: str) -> set[tuple[str, int]]:
    """IPv4 (address, port) pairs with a listening TCP socket inside `netns`."""
    from scaleserve.dev.processes import parse_proc_net_tcp

    done = _ip("netns", "exec", netns, "cat", "/proc/net/tcp")
    return parse_proc_net_tcp(done.stdout) if done.returncode == 0 else set()


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
