"""Transition planner: make-before-break, one group at a time, and its properties."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaleserve.operator.layout import Group, GroupShape, Layout, group_name, group_shapes
from scaleserve.operator.planner import Plan, plan_transition

pytestmark = pytest.mark.unit


def groups(layout: Layout, per_node: int = 8, first: int = 0) -> list[Group]:
    return [
        Group(group_name(first + i, s.tensor_parallel), s.size, s.tensor_parallel)
        for i, s in enumerate(group_shapes(layout, per_node))
    ]


def test_with_a_spare_node_the_new_group_comes_first() -> None:
    plan = plan_transition(groups(Layout(1, 8)), group_shapes(Layout(8, 1), 8), 8, gpu_limit=16)
    assert [str(s) for s in plan.steps] == ["create g1-tp1", "delete g0-tp8"]
    assert not plan.disruptive


def test_without_spare_gpus_a_single_group_is_replaced_and_the_plan_says_so() -> None:
    plan = plan_transition(groups(Layout(1, 8)), group_shapes(Layout(8, 1), 8), 0, gpu_limit=8)
    assert [str(s) for s in plan.steps] == ["delete g0-tp8", "create g1-tp1"]
    assert plan.disruptive
    assert "serving stops" in plan.summary


def test_surge_allowed_but_no_free_gpus_in_the_cluster_is_also_disruptive() -> None:
    plan = plan_transition(groups(Layout(1, 8)), group_shapes(Layout(8, 1), 8), 0, gpu_limit=16)
    assert plan.disruptive


def test_two_groups_without_spare_gpus_keep_one_serving() -> None:
    plan = plan_transition(groups(Layout(2, 8)), group_shapes(Layout(16, 1), 8), 0, gpu_limit=16)
    assert [str(s) for s in plan.steps] == [
        "delete g0-tp8",
        "create g2-tp1",
        "delete g1-tp8",
        "create g3-tp1",
    ]
    assert not plan.disruptive


def test_groups_already_at_the_target_are_kept() -> None:
    current = groups(Layout(8, 1))
    plan = plan_transition(current, group_shapes(Layout(8, 1), 8), 0, gpu_limit=8)
    assert plan.done
    assert plan.summary == "at 8x1"


def test_scale_out_and_in_of_a_static_layout() -> None:
    out = plan_transition(groups(Layout(1, 8)), group_shapes(Layout(3, 8), 8), 16)
    assert [s.action for s in out.steps] == ["create", "create"]
    back = plan_transition(groups(Layout(3, 8)), group_shapes(Layout(1, 8), 8), 0)
    assert [s.action for s in back.steps] == ["delete", "delete"]


def test_one_more_replica_at_the_same_tp_is_a_resize_in_place() -> None:
    plan = plan_transition(groups(Layout(2, 1)), group_shapes(Layout(3, 1), 8), 6, gpu_limit=16)
    assert [str(s) for s in plan.steps] == ["resize g0-tp1 to 3 replica(s)"]
    assert plan.steps[0].old_size == 2
    assert plan.steps[0].grows
    assert not plan.disruptive


def test_a_grow_needs_only_the_added_gpus_within_the_limit() -> None:
    # 3 GPUs held, limit 4: a new 4-GPU group would not fit beside the old one, one more does
    plan = plan_transition(groups(Layout(3, 1)), group_shapes(Layout(4, 1), 8), 5, gpu_limit=4)
    assert [s.action for s in plan.steps] == ["resize"]
    assert plan.steps[0].group == Group("g0-tp1", 4, 1)


def test_one_fewer_replica_at_the_same_tp_is_a_resize_in_place() -> None:
    plan = plan_transition(groups(Layout(2, 1)), group_shapes(Layout(1, 1), 8), 0, gpu_limit=2)
    assert [str(s) for s in plan.steps] == ["resize g0-tp1 to 1 replica(s)"]
    assert not plan.steps[0].grows
    assert not plan.disruptive


def test_a_grow_without_room_on_its_node_is_make_before_break() -> None:
    current = groups(Layout(2, 1))
    plan = plan_transition(
        current, group_shapes(Layout(3, 1), 8), 8, gpu_limit=16, room={"g0-tp1": 0}
    )
    assert [str(s) for s in plan.steps] == ["create g1-tp1", "delete g0-tp1"]


def test_a_tp_change_is_still_make_before_break() -> None:
    plan = plan_transition(groups(Layout(2, 1)), group_shapes(Layout(1, 2), 8), 8, gpu_limit=16)
    assert [str(s) for s in plan.steps] == ["create g1-tp2", "delete g0-tp1"]


def test_a_stale_group_is_replaced_not_resized() -> None:
    plan = plan_transition(
        groups(Layout(2, 1)), group_shapes(Layout(3, 1), 8), 8, gpu_limit=16, stale={"g0-tp1"}
    )
    assert [str(s) for s in plan.steps] == ["create g1-tp1", "delete g0-tp1"]


# --- properties ---------------------------------------------------------------------------

PER_NODE = st.sampled_from([1, 2, 4, 8])


@st.composite
def transitions(draw: st.DrawFn) -> tuple[list[Group], list[GroupShape], int, int, int]:
    per_node = draw(PER_NODE)
    tps = [t for t in (1, 2, 4, 8) if per_node % t == 0]
    budget = per_node * draw(st.integers(1, 4))
    old_tp, new_tp = draw(st.sampled_from(tps)), draw(st.sampled_from(tps))
    current = groups(Layout(budget // old_tp, old_tp), per_node, first=draw(st.integers(0, 3)))
    target = list(group_shapes(Layout(budget // new_tp, new_tp), per_node))
    surge = draw(st.sampled_from([0, per_node, 2 * per_node]))
    free = draw(st.integers(0, 3 * per_node))
    return current, target, budget, surge, free


def _replay(current: Sequence[Group], plan: Plan) -> tuple[list[Group], list[int], list[int]]:
    """Apply the steps; GPUs held and groups serving after each step (created groups are
    assumed ready before the next step, as the executor waits for readiness)."""
    live = list(current)
    held, serving = [], []
    for step in plan.steps:
        if step.action == "create":
            live.append(step.group)
        elif step.action == "resize":
            live = [step.group if g.name == step.group.name else g for g in live]
        else:
            live.remove(step.group)
        held.append(sum(g.size for g in live))
        serving.append(len(live))
    return live, held, serving


@settings(max_examples=300, deadline=None)
@given(transitions())
def test_every_plan_ends_at_the_target(
    case: tuple[list[Group], list[GroupShape], int, int, int],
) -> None:
    current, target, budget, surge, free = case
    plan = plan_transition(current, target, free, gpu_limit=budget + surge)
    live, _, _ = _replay(current, plan)
    assert Counter(g.shape for g in live) == Counter(target)


@settings(max_examples=300, deadline=None)
@given(transitions())
def test_budget_plus_surge_is_never_exceeded(
    case: tuple[list[Group], list[GroupShape], int, int, int],
) -> None:
    current, target, budget, surge, free = case
    plan = plan_transition(current, target, free, gpu_limit=budget + surge)
    _, held, _ = _replay(current, plan)
    assert all(h <= budget + surge for h in held)
    # and the cluster's free GPUs are never over-promised when the plan creates first
    used_extra = [h - budget for h in held]
    assert all(x <= max(free, 0) for x in used_extra)


@settings(max_examples=300, deadline=None)
@given(transitions())
def test_serving_never_drops_to_zero_when_there_is_room_for_a_group(
    case: tuple[list[Group], list[GroupShape], int, int, int],
) -> None:
    current, target, budget, surge, free = case
    plan = plan_transition(current, target, free, gpu_limit=budget + surge)
    room = min(free, surge)
    if current and target and room >= max(s.size for s in target):
        _, _, serving = _replay(current, plan)
        assert all(n > 0 for n in serving)
        assert not plan.disruptive


@settings(max_examples=300, deadline=None)
@given(transitions())
def test_no_step_repeats_and_new_names_are_fresh(
    case: tuple[list[Group], list[GroupShape], int, int, int],
) -> None:
    current, target, budget, surge, free = case
    plan = plan_transition(current, target, free, gpu_limit=budget + surge)
    assert len(set(plan.steps)) == len(plan.steps)
    created = [s.group.name for s in plan.steps if s.action == "create"]
    assert len(set(created)) == len(created)
    assert not set(created) & {g.name for g in current}


@settings(max_examples=200, deadline=None)
@given(transitions())
def test_a_plan_is_disruptive_only_when_the_last_group_goes_first(
    case: tuple[list[Group], list[GroupShape], int, int, int],
) -> None:
    current, target, budget, surge, free = case
    plan = plan_transition(current, target, free, gpu_limit=budget + surge)
    _, _, serving = _replay(current, plan)
    assert plan.disruptive == (bool(current) and 0 in serving)


def test_new_groups_avoid_names_still_held_by_terminating_pods() -> None:
    plan = plan_transition(
        groups(Layout(8, 1), first=1),
        group_shapes(Layout(1, 8), 8),
        8,
        gpu_limit=16,
        avoid_names={"g0-tp8"},
    )
    assert [str(s) for s in plan.steps] == ["create g2-tp8", "delete g1-tp1"]


def test_gpus_of_terminating_pods_are_waited_for_instead_of_stopping_serving() -> None:
    # 8x1 -> 1x8 right after 1x8 -> 8x1: the old TP8 pod still shuts down and holds its node
    plan = plan_transition(
        groups(Layout(8, 1), first=1),
        group_shapes(Layout(1, 8), 8),
        0,
        gpu_limit=16,
        avoid_names={"g0-tp8"},
        releasing_gpus=8,
    )
    assert [str(s) for s in plan.steps] == ["create g2-tp8", "delete g1-tp1"]
    assert not plan.disruptive
    assert plan.waits_for_release
    assert "terminating pods" in plan.summary
    assert "serving stops" not in plan.summary


def test_releasing_gpus_that_still_leave_no_room_keep_the_disruptive_plan() -> None:
    # the surge limit, not the cluster, forbids make-before-break: waiting would not help
    plan = plan_transition(
        groups(Layout(8, 1)), group_shapes(Layout(1, 8), 8), 0, gpu_limit=8, releasing_gpus=8
    )
    assert plan.disruptive
    assert not plan.waits_for_release
    assert [str(s) for s in plan.steps] == ["delete g0-tp1", "create g1-tp8"]


def test_a_plan_that_is_not_disruptive_does_not_wait_for_releases() -> None:
    plan = plan_transition(
        groups(Layout(1, 8)), group_shapes(Layout(8, 1), 8), 8, gpu_limit=16, releasing_gpus=8
    )
    assert not plan.waits_for_release
    assert [str(s) for s in plan.steps] == ["create g1-tp1", "delete g0-tp8"]
