"""Operator settings from the environment, and status conditions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scaleserve.operator import status
from scaleserve.operator.concurrency import Windows, slope, stats_urls
from scaleserve.operator.errors import SettingsError
from scaleserve.operator.settings import OperatorSettings

pytestmark = pytest.mark.unit


def test_settings_come_from_prefixed_env_then_flags() -> None:
    env = {
        "SCALESERVE_OPERATOR_NAMESPACES": "a, b",
        "SCALESERVE_OPERATOR_RECONCILE_INTERVAL_S": "2.5",
        "SCALESERVE_OPERATOR_STATS_URL": "http://127.0.0.1:9/stats/{namespace}/{endpoint}",
    }
    settings = OperatorSettings.load({"pending_grace_s": 5.0}, env)
    assert settings.namespaces == ("a", "b")
    assert settings.reconcile_interval_s == 2.5
    assert settings.pending_grace_s == 5.0
    assert OperatorSettings.load({"namespaces": ["x"]}, env).namespaces == ("x",)
    assert OperatorSettings.load({}, env).leader_lease == ""  # no election unless asked
    lease = {"SCALESERVE_OPERATOR_LEADER_LEASE": "ops/scaleserve-operator"}
    assert OperatorSettings.load({}, lease).leader_lease == "ops/scaleserve-operator"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCALESERVE_OPERATOR_RECONCILE_INTERVAL_S": "soon"}, "RECONCILE_INTERVAL_S"),
        ({"SCALESERVE_OPERATOR_RECONCILE_INTERVAL_S": "0"}, "reconcile_interval_s"),
        ({"SCALESERVE_OPERATOR_STATS_URL": "http://{host}/stats"}, "unknown fields: host"),
        ({"SCALESERVE_OPERATOR_STATS_URL": "ftp://x/{pod_ip}"}, "http"),
        ({"SCALESERVE_OPERATOR_LIVENESS_PORT": "65536"}, "LIVENESS_PORT='65536'"),
        ({"SCALESERVE_OPERATOR_METRICS_PORT": "-1"}, "METRICS_PORT='-1'"),
        ({"SCALESERVE_OPERATOR_LEADER_LEASE": "just-a-name"}, "leader_lease .*: must be"),
        ({"SCALESERVE_OPERATOR_LEADER_LEASE": "ns/Not_A_Name"}, "leader_lease .*: must be"),
    ],
)
def test_invalid_settings_fail_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        OperatorSettings.load({}, env)


def test_settings_are_frozen() -> None:
    settings = OperatorSettings()
    with pytest.raises(ValidationError, match="frozen"):
        settings.namespaces = ("x",)  # type: ignore[misc]


def test_condition_transition_time_moves_only_on_flips() -> None:
    first = status.conditions([], [status.Condition("Ready", False, "NotServing", "")], "t1", 1)
    same = status.conditions(first, [status.Condition("Ready", False, "NotServing", "x")], "t2", 1)
    flipped = status.conditions(same, [status.Condition("Ready", True, "Serving", "")], "t3", 2)
    assert [c["lastTransitionTime"] for c in (first[0], same[0], flipped[0])] == ["t1", "t1", "t3"]
    assert not status.changed({"conditions": first}, {"conditions": first})
    assert status.changed({"conditions": first}, {"conditions": flipped})


def test_phase_names_what_is_happening() -> None:
    for (groups, ready, reshaping, degraded, initial), expected in [
        ((0, False, True, False, True), "Pending"),
        ((1, False, False, False, True), "Deploying"),
        ((2, True, True, False, False), "Reshaping"),
        ((1, True, False, True, False), "Degraded"),
        ((1, True, False, False, False), "Ready"),
    ]:
        phase = status.phase(
            groups=groups, ready=ready, reshaping=reshaping, degraded=degraded, initial=initial
        )
        assert phase == expected, (groups, ready, reshaping, degraded, initial)


def test_the_window_averages_recent_samples_and_tracks_its_span() -> None:
    windows = Windows()
    key = ("ns", "chat", "uid-1")
    for t, v in [(0, 10), (1, 20), (2, 30), (12, 40)]:
        windows.add(key, t, v, keep_s=10)
    window = windows.get(key, 12, window_s=10)
    assert window.samples == 2  # the samples before t=2 fell out
    assert window.mean == 35
    assert window.span_s == 12
    windows.reset(key)
    assert windows.get(key, 13, 10).mean is None


def test_the_trend_is_the_slope_over_its_own_span_and_the_mean_over_the_window() -> None:
    windows = Windows()
    key = ("ns", "chat", "uid-1")
    for t in range(0, 101, 10):  # rising by 0.5 per second, then one noisy sample
        windows.add(key, float(t), 10 + 0.5 * t, keep_s=100)
    window = windows.get(key, 100.0, window_s=20, trend_s=100)
    assert window.samples == 3  # t = 80, 90, 100
    assert window.mean == pytest.approx(55.0)
    assert window.trend == pytest.approx(0.5)
    assert windows.get(key, 100.0, window_s=20).trend == pytest.approx(0.5)  # the window's
    assert slope([(0.0, 5.0)]) == 0.0
    assert slope([(0.0, 5.0), (0.0, 7.0)]) == 0.0
    assert slope([(0.0, 9.0), (10.0, 4.0), (20.0, -1.0)]) == pytest.approx(-0.5)


def test_stats_urls_skip_pods_that_are_not_running() -> None:
    pods = [
        {"metadata": {"name": "gw-1"}, "status": {"phase": "Running", "podIP": "10.0.0.1"}},
        {"metadata": {"name": "gw-2"}, "status": {"phase": "Pending"}},
        {"metadata": {"name": "gw-3"}, "status": {"phase": "Running"}},
    ]
    assert stats_urls("http://{pod_ip}:8000/stats", "ns", "chat", pods) == [
        "http://10.0.0.1:8000/stats"
    ]
    assert stats_urls("http://h/{namespace}/{endpoint}/{pod_name}", "ns", "chat", pods) == [
        "http://h/ns/chat/gw-1",
        "http://h/ns/chat/gw-3",
    ]


def test_the_completion_of_a_reshape_is_recorded_once_it_is_done() -> None:
    start, later = "2025-01-01T00:00:00Z", "2025-01-01T00:05:00Z"
    # under way: nothing recorded yet, or an earlier reshape's completion kept
    assert status.reshape_completed(None, start, False, later) is None
    assert status.reshape_completed("2024-12-31T00:00:00Z", start, False, later) == (
        "2024-12-31T00:00:00Z"
    )
    # done: now, and from then on that first completion stays
    assert status.reshape_completed(None, start, True, later) == later
    assert status.reshape_completed("2024-12-31T00:00:00Z", start, True, later) == later
    assert status.reshape_completed(later, start, True, "2025-01-01T01:00:00Z") == later
    # a static layout has no reshape start
    assert status.reshape_completed(None, None, True, later) is None
