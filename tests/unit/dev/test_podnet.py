"""The local pod network's address plan and pools (scaleserve/dev/podnet.py); nothing is created."""

from __future__ import annotations

import ipaddress

import pytest

from scaleserve.dev.podnet import (
    MAX_NODES,
    POD_SUPERNET,
    AddressPool,
    GpuPool,
    PodNetwork,
    PodNetworkError,
    block_layout,
    free_block,
    host_ifname,
    netns_name,
    node_address,
)

pytestmark = pytest.mark.unit


def test_pod_addresses_are_private_and_not_loopback() -> None:
    assert POD_SUPERNET.is_private
    assert not POD_SUPERNET.is_loopback
    assert POD_SUPERNET.subnet_of(ipaddress.IPv4Network("10.0.0.0/8"))  # RFC 1918


def test_block_layout_link_then_one_24_per_node() -> None:
    host, ns, subnets = block_layout("10.251.16.0/20", 2)
    assert (host, ns) == ("10.251.16.1", "10.251.16.2")
    assert subnets == ["10.251.17.0/24", "10.251.18.0/24"]
    assert len(block_layout("10.251.0.0/20", MAX_NODES)[2]) == MAX_NODES
    with pytest.raises(PodNetworkError):
        block_layout("10.251.0.0/20", MAX_NODES + 1)
    with pytest.raises(PodNetworkError):
        block_layout("10.251.0.0/20", 0)
    with pytest.raises(PodNetworkError):
        block_layout("10.250.0.0/20", 1)  # outside the pod range
    with pytest.raises(PodNetworkError):
        block_layout("10.251.0.0/24", 1)  # not a block


def test_free_block_skips_anything_the_host_uses() -> None:
    net = ipaddress.IPv4Network
    assert free_block([]) == "10.251.0.0/20"
    assert free_block([net("10.251.0.0/20"), net("10.251.17.5/32")]) == "10.251.32.0/20"
    with pytest.raises(PodNetworkError, match="no free"):
        free_block([net("10.0.0.0/8")])


def test_names_fit_the_kernel_limits() -> None:
    name = "e2e-updown-1234567"
    assert netns_name(name) == f"scaleserve-{name}"
    assert len(host_ifname(name)) <= 15
    assert host_ifname(name) == host_ifname(name) != host_ifname("other")


def test_pod_network_round_trips_through_the_state_file() -> None:
    net = PodNetwork("scaleserve-x", "ssv-0", "10.251.0.0/20", "10.251.0.1", "10.251.0.2",
                     ["10.251.1.0/24"])  # fmt: skip
    assert PodNetwork.from_dict(net.to_dict()) == net
    assert net.exec_prefix() == ["ip", "netns", "exec", "scaleserve-x"]


def test_address_pool_hands_out_each_address_once_and_reuses_released_ones_last() -> None:
    subnet = "10.251.1.0/24"
    assert node_address(subnet) == "10.251.1.1"
    pool = AddressPool(subnet)
    first = [pool.allocate() for _ in range(3)]
    assert first == ["10.251.1.2", "10.251.1.3", "10.251.1.4"]
    pool.release("10.251.1.2")
    assert pool.allocate() == "10.251.1.5"  # not the one just released
    rest = [pool.allocate() for _ in range(249)]
    assert rest[0] == "10.251.1.6"
    assert rest[-1] == "10.251.1.254"
    assert pool.allocate() == "10.251.1.2"  # it comes back once the range wrapped
    addresses = {*first, "10.251.1.5", *rest}
    assert len(addresses) == 253  # .2 to .254: neither the node's .1 nor the broadcast
    assert "10.251.1.1" not in addresses
    assert "10.251.1.255" not in addresses
    with pytest.raises(PodNetworkError, match="no free pod address"):
        pool.allocate()


def test_gpu_pool_lowest_first_and_cores_wrap() -> None:
    gpus = GpuPool(count=4, cpus=2)
    assert gpus.allocate(2) == [0, 1]
    assert gpus.allocate(3) is None
    assert gpus.allocate(2) == [2, 3]
    assert gpus.cores([2, 3]) == "0|1"
    gpus.release([0, 1])
    assert gpus.allocate(1) == [0]
