"""The local cluster's process harness: a process it has just started counts as running (for a
moment after exec its command line reads empty, which once failed a start-up and orphaned an
API server), and `down` stops every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from scaleserve.dev.cluster import STOP_ORDER, Cluster, ClusterState

pytestmark = pytest.mark.control_plane


def test_processes_count_as_running_from_their_start_and_down_stops_them(tmp_path: Path) -> None:
    cluster = Cluster("harness", root=tmp_path)
    for _ in range(5):  # the window after exec is short: several starts to land in it
        state = ClusterState(name="harness", dir=str(cluster.dir), server="", kubeconfig="")
        for name in STOP_ORDER:  # stand-ins under the cluster's process names
            cluster._spawn(state, name, ["sleep", "600"])
            cluster._check_alive(state, [name])  # at once: raises unless it counts as running
        assert cluster.running() == dict.fromkeys(STOP_ORDER, True)
        assert cluster.down()
        assert not [pid for pid in state.pids.values() if Path(f"/proc/{pid}").exists()]
