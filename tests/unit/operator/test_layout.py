"""Layout policy: bands, hysteresis, cooldown, and the node-sized group split."""

from __future__ import annotations

import pytest

from scaleserve.operator.layout import (
    Current,
    Group,
    GroupShape,
    Layout,
    Window,
    choose_layout,
    describe,
    group_shapes,
    seconds_since_reshape,
)
from scaleserve.operator.spec import Autoscaling

pytestmark = pytest.mark.unit

POLICY = Autoscaling.model_validate(
    {
        "gpuBudget": 8,
        "tensorParallelCandidates": [8, 2, 1],
        "concurrencyThresholds": [16, 64],
        "windowSeconds": 30,
        "cooldownSeconds": 120,
        "hysteresis": 0.25,
    }
)
TP8, TP2, TP1 = Layout(1, 8), Layout(4, 2), Layout(8, 1)
FULL = 60.0


def window(mean: float, span: float = FULL) -> Window:
    return Window(mean, span, 10)


def settled(layout: Layout) -> Current:
    return Current(layout, seconds_since_change=10_000)


def test_a_layout_prints_as_replicas_x_tp_and_parses_back() -> None:
    assert str(Layout(8, 1)) == "8x1"
    assert Layout.parse("1x8") == TP8
    assert Layout.parse("nonsense") is None


def test_groups_are_node_sized_with_a_smaller_last_group() -> None:
    assert group_shapes(Layout(1, 8), 8) == (GroupShape(8, 8),)
    assert group_shapes(Layout(16, 1), 8) == (GroupShape(8, 1), GroupShape(8, 1))
    assert group_shapes(Layout(3, 2), 4) == (GroupShape(4, 2), GroupShape(2, 2))
    assert group_shapes(Layout(2, 1), 8) == (GroupShape(2, 1),)


def test_describe_joins_degrees_highest_first() -> None:
    assert describe([Group("g0-tp8", 8, 8), Group("g1-tp1", 8, 1)]) == "1x8+8x1"
    assert describe([]) == "0"


def test_a_new_endpoint_starts_at_the_highest_tp() -> None:
    decision = choose_layout(POLICY, Window(None, 0, 0), Current(None, None))
    assert decision.layout == TP8
    assert decision.changed


@pytest.mark.parametrize(
    ("concurrency", "expected"),
    [(0, TP8), (15.9, TP8), (16, TP2), (63, TP2), (64, TP1), (900, TP1)],
)
def test_concurrency_picks_the_band(concurrency: float, expected: Layout) -> None:
    assert choose_layout(POLICY, window(concurrency), settled(TP8)).layout == expected


def test_nothing_changes_until_the_window_is_full() -> None:
    decision = choose_layout(POLICY, window(500, span=10), settled(TP8))
    assert decision.layout == TP8
    assert not decision.changed
    assert "collecting" in decision.reason


def test_moving_back_down_needs_the_hysteresis_margin() -> None:
    # threshold 64 with hysteresis 0.25: TP1 is kept down to 48
    assert choose_layout(POLICY, window(50), settled(TP1)).layout == TP1
    assert choose_layout(POLICY, window(47.9), settled(TP1)).layout == TP2
    # and from TP1 straight to TP8 when concurrency collapses
    assert choose_layout(POLICY, window(1), settled(TP1)).layout == TP8


def test_cooldown_holds_the_layout() -> None:
    decision = choose_layout(POLICY, window(100), Current(TP8, seconds_since_change=30))
    assert decision.layout == TP8
    assert "cooldown" in decision.reason
    assert choose_layout(POLICY, window(100), Current(TP8, seconds_since_change=121)).layout == TP1


def test_the_cooldown_counts_from_the_completion_of_the_last_reshape() -> None:
    # started 500 s ago, completed 10 s ago: the reverse reshape waits out the cooldown
    elapsed = seconds_since_reshape(started=500, completed=10)
    assert elapsed == 10
    decision = choose_layout(POLICY, window(100), Current(TP8, elapsed))
    assert decision.layout == TP8
    assert "cooldown" in decision.reason
    assert choose_layout(POLICY, window(100), Current(TP8, seconds_since_reshape(500, 121))).changed


def test_without_a_completion_after_the_last_start_the_start_counts() -> None:
    assert seconds_since_reshape(started=30, completed=None) == 30
    # a completion recorded before the last start belongs to an earlier reshape
    assert seconds_since_reshape(started=30, completed=900) == 30
    assert seconds_since_reshape(started=None, completed=None) is None


def test_a_reshape_in_progress_is_not_reversed() -> None:
    current = Current(TP1, seconds_since_change=10_000, reshaping=True)
    decision = choose_layout(POLICY, window(1), current)
    assert decision.layout == TP1
    assert not decision.changed
    assert "in progress" in decision.reason


def test_a_layout_outside_the_policy_moves_at_once() -> None:
    decision = choose_layout(POLICY, window(0, span=0), Current(Layout(2, 4), 1))
    assert decision.layout == TP8
    assert decision.changed
