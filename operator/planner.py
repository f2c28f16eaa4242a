"""Plan a transition between sets of GPU groups: make-before-break, one group at a time.

`plan_transition(current, target, free_gpus, gpu_limit=...)` returns the ordered steps that turn
the current groups into the target shapes. Each new group is created (and, when executed, must
become ready) before an old group is deleted, as long as there is room for it within both the
GPUs free in the cluster and the endpoint's limit (budget + surge). Without room the plan
deletes an old group first; when that takes the last serving group away the plan is marked
`disruptive` and its summary says so, unless GPUs still held by terminating pods
(`releasing_gpus`) would make room: then the plan stays make-before-break and `waits_for_release`
says its creates wait for those GPUs instead of removing the only serving group.

A group whose shape differs from a target shape only in its size (same TP degree, current pod
spec) is resized in place instead: `resize` steps change its replica count (a StatefulSet
adds or removes its highest ordinals), so only the replicas added need GPUs. Shrinks come first
(they free GPUs), then grows that fit in the room next to the group (`room`, GPUs free on its
node), then make-before-break for the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scaleserve.operator.layout import Group, GroupShape, describe, group_name

Action = Literal["create", "delete", "resize"]


@dataclass(frozen=True)
class Step:
    """group: the group to create or delete, or (resize) the group at its new size."""

    action: Action
    group: Group
    old_size: int = 0  # resize: the group's size now

    def __str__(self) -> str:
        if self.action == "resize":
            return f"resize {self.group.name} to {self.group.replicas} replica(s)"
        return f"{self.action} {self.group.name}"

    @property
    def grows(self) -> bool:
        return self.action == "resize" and self.group.size > self.old_size


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    disruptive: bool
    summary: str
    waits_for_release: bool = False

    @property
    def done(self) -> bool:
        return not self.steps


def _split(
    current: Sequence[Group], target: Sequence[GroupShape], stale: Collection[str]
) -> tuple[list[Group], list[GroupShape]]:
    """Old groups to remove and shapes to add; groups already matching a target shape stay,
    unless they are `stale` (their pods run an older spec)."""
    wanted = Counter(target)
    to_remove: list[Group] = []
    for group in sorted(current, key=lambda g: (g.index is None, g.index or 0, g.name)):
        if wanted[group.shape] > 0 and group.name not in stale:
            wanted[group.shape] -= 1
        else:
            to_remove.append(group)
    to_add = sorted(wanted.elements(), key=lambda s: (-s.size, -s.tensor_parallel))
    return to_remove, to_add


def _pair(
    to_remove: list[Group], to_add: list[GroupShape], stale: Collection[str]
) -> list[tuple[Group, GroupShape]]:
    """Groups that reach a target shape by a change of size alone (same TP degree, current pod
    spec), taken out of `to_remove` and `to_add`; closest sizes first."""
    pairs: list[tuple[Group, GroupShape]] = []
    for shape in list(to_add):
        fits = [g for g in to_remove if g.tensor_parallel == shape.tensor_parallel]
        fits = [g for g in fits if g.name not in stale]
        if not fits:
            continue
        group = min(fits, key=lambda g: (abs(g.size - shape.size), g.index or 0, g.name))
        to_remove.remove(group)
        to_add.remove(shape)
        pairs.append((group, shape))
    return pairs


def _resizes(
    pairs: list[tuple[Group, GroupShape]],
    room: Mapping[str, int] | None,
    free: int,
    headroom: int,
) -> tuple[list[Step], list[tuple[Group, GroupShape]]]:
    """Resize steps, shrinks first, and the pairs whose growth does not fit in place (left to
    make-before-break)."""
    steps: list[Step] = []
    rest: list[tuple[Group, GroupShape]] = []
    for group, shape in sorted(pairs, key=lambda p: p[1].size - p[0].size):
        added = shape.size - group.size
        near = free if room is None else min(free, room.get(group.name, 0))
        if added > 0 and added > min(near, headroom):
            rest.append((group, shape))
            continue
        steps.append(Step("resize", Group(group.name, *_sized(shape)), group.size))
        headroom -= added
        free -= added
    return steps, rest


def _pick_removal(to_remove: list[Group], size: int | None) -> Group:
    """The old group to remove next: one of `size` GPUs if any (frees the same room on a node)."""
    if size is not None:
        for group in to_remove:
            if group.size == size:
                return group
    return max(to_remove, key=lambda g: g.size)


class _Names:
    def __init__(self, taken: Sequence[Group], avoid: Collection[str]) -> None:
        self._used = {g.index for g in taken if g.index is not None}
        self._names = {g.name for g in taken} | set(avoid)

    def new(self, tensor_parallel: int) -> str:
        index = 0
        while index in self._used or group_name(index, tensor_parallel) in self._names:
            index += 1
        self._used.add(index)
        name = group_name(index, tensor_parallel)
        self._names.add(name)
        return name


def plan_transition(
    current: Sequence[Group],
    target: Sequence[GroupShape],
    free_gpus: int,
    *,
    gpu_limit: int | None = None,
    avoid_names: Collection[str] = (),
    releasing_gpus: int = 0,
    stale: Collection[str] = (),
    room: Mapping[str, int] | None = None,
) -> Plan:
    """Steps from `current` groups to the `target` shapes.

    free_gpus: GPUs the cluster can give this endpoint on top of what it holds now.
    gpu_limit: most GPUs the endpoint may hold at any moment (budget + surge); default, the
    larger of what it holds now and what the target needs.
    avoid_names: group names new groups must not take (e.g. of pods still terminating).
    releasing_gpus: GPUs (counted like free_gpus) held by pods that are terminating and about
    to be free. A plan that would stop serving is replaced by a make-before-break one that
    waits for them, when they make room for it.
    stale: names of current groups whose pods run an older spec: replaced like any group
    that no longer fits the target.
    room: GPUs free next to each group (on its node) for it to grow in place; None: any.
    """
    plan = _plan(current, target, free_gpus, gpu_limit, avoid_names, stale, room)
    if not plan.disruptive or releasing_gpus <= 0:
        return plan
    patient = _plan(
        current, target, free_gpus + releasing_gpus, gpu_limit, avoid_names, stale, room
    )
    if patient.disruptive:
        return plan
    return Plan(
        patient.steps,
        False,
        patient.summary
        + f"; make-before-break once {releasing_gpus} GPUs held by terminating pods are free",
        waits_for_release=True,
    )


def _plan(
    current: Sequence[Group],
    target: Sequence[GroupShape],
    free_gpus: int,
    gpu_limit: int | None,
    avoid_names: Collection[str],
    stale: Collection[str],
    room: Mapping[str, int] | None,
) -> Plan:
    held = sum(g.size for g in current)
    limit = gpu_limit if gpu_limit is not None else max(held, sum(s.size for s in target))
    to_remove, to_add = _split(current, target, stale)
    steps, rest = _resizes(_pair(to_remove, to_add, stale), room, free_gpus, limit - held)
    for group, shape in rest:
        to_remove.append(group)
        to_add.append(shape)
    to_add.sort(key=lambda s: (-s.size, -s.tensor_parallel))
    names = _Names(current, avoid_names)
    used = held + sum(s.group.size - s.old_size for s in steps)
    free = free_gpus - sum(s.group.size - s.old_size for s in steps)
    serving = len(current)
    disruptive = False
    while to_add or to_remove:
        if to_add and (to_add[0].size <= min(free, limit - used) or not to_remove):
            shape = to_add.pop(0)
            steps.append(Step("create", Group(names.new(shape.tensor_parallel), *_sized(shape))))
            used += shape.size
            free -= shape.size
            serving += 1
            if not to_remove:
                continue
            old = _pick_removal(to_remove, shape.size)
        else:
            old = _pick_removal(to_remove, to_add[0].size if to_add else None)
            # removing the last group is a disruption only when something is to replace it
            # (a target of no groups, scale to zero, removes them all by intent)
            if serving == 1 and current and to_add:
                disruptive = True
        to_remove.remove(old)
        steps.append(Step("delete", old))
        used -= old.size
        free += old.size
        serving -= 1
    return Plan(tuple(steps), disruptive, _summary(current, target, steps, disruptive))


def _sized(shape: GroupShape) -> tuple[int, int]:
    return shape.size, shape.tensor_parallel


def _summary(
    current: Sequence[Group], target: Sequence[GroupShape], steps: Sequence[Step], disruptive: bool
) -> str:
    if not steps:
        return f"at {describe(target)}"
    order = ", ".join(str(s) for s in steps)
    text = f"{describe(current)} -> {describe(target)}: {order}"
    if disruptive:
        text += (
            "; no spare GPUs for make-before-break: the only serving group is removed first "
            "and serving stops until its replacement is ready"
        )
    return text
