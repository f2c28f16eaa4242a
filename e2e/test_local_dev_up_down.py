"""`scaleserve dev up` serves the sample endpoint; `dev down` leaves no process, port, network
namespace, interface, route or file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from ipaddress import ip_address, ip_network
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.local.host import needs_root

pytestmark = pytest.mark.e2e


def _cli(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scaleserve", "dev", *args],
        capture_output=True, text=True, timeout=timeout_s, check=False,
    )  # fmt: skip


@pytest.mark.timeout(1200)
def test_dev_up_streams_an_answer_and_dev_down_leaves_nothing_behind() -> None:
    needs_root()
    from scaleserve.dev import podnet, processes
    from scaleserve.dev.cluster import Cluster
    from scaleserve.dev.stack import Stack

    name = f"e2e-updown-{os.getpid()}"
    stack = Stack(name)
    try:
        up = _cli("up", "--name", name, timeout_s=900)
        assert up.returncode == 0, f"dev up failed:\n{up.stdout}\n{up.stderr}"
        assert "==> streamed" in up.stdout, up.stdout
        print(up.stdout)

        state = json.loads((stack.dir / "state.json").read_text())
        net = podnet.PodNetwork.from_dict(state["podnet"])
        cluster_state = json.loads((Cluster(name).dir / "state.json").read_text())
        marked = processes.marked_pids(state["marker"])
        assert len(marked) >= 4, "runner, operator, engine(s) and gateway should be running"
        gateway_host = state["gateway_url"].split("//")[1].split(":")[0]
        # the pods' addresses are the namespace's own; the API server is on the veth's host end
        assert ip_address(gateway_host) in ip_network(net.block), state["gateway_url"]
        assert ip_address(gateway_host) in ip_network(podnet.POD_SUPERNET)
        assert cluster_state["server"].startswith(f"https://{net.host_address}:")
        assert (gateway_host, 8000) in podnet.listening(net.netns)
        assert (gateway_host, 8000) not in processes.listening()
        assert podnet.routes_to(net.block), "the host routes the pod block via the veth"
        ports = list(cluster_state["ports"].values())
        # the operator's /metrics shows the sample endpoint Ready
        metrics_url = state["operator_metrics_url"]
        with urllib.request.urlopen(metrics_url, timeout=10) as response:
            families = text_string_to_metric_families(response.read().decode())
        ready = [
            sample.value
            for family in families
            for sample in family.samples
            if sample.name == "scaleserve_operator_endpoint_phase"
            and sample.labels["phase"] == "Ready"
        ]
        assert ready == [1.0], ready
        ports.append(urlsplit(metrics_url).port)
    except BaseException:
        stack.down()
        raise

    down = _cli("down", "--name", name, timeout_s=300)
    assert down.returncode == 0, f"dev down failed:\n{down.stdout}\n{down.stderr}"
    assert processes.marked_pids(state["marker"]) == []
    assert not any(processes.alive(p) for p in [*cluster_state["pids"].values(), *marked])
    busy = [f"{h}:{p}" for h, p in processes.listening() if p in ports]
    assert busy == [], f"ports still taken: {busy}"
    assert net.netns not in podnet.namespaces()
    assert subprocess.run(["ip", "link", "show", net.host_if], capture_output=True).returncode
    assert podnet.routes_to(net.block) == []
    assert not stack.dir.exists()
    assert not Path(cluster_state["dir"]).exists()
