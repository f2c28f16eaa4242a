"""The CPU build's thread binding when none is set: one share of the allowed cores per worker."""

from __future__ import annotations

import os

import pytest

from scaleserve.engine.cpu_bind import BIND_VARIABLE, bind_cpu_workers, threads_bind

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("cores", "workers", "bind"),
    [
        ([0, 1], 2, "0|1"),
        ([3, 2, 1, 0], 2, "0,1|2,3"),
        ([0, 1, 2, 3, 4], 2, "0,1,2|3,4"),
        ([4, 5, 6], 3, "4|5|6"),
    ],
)
def test_the_cores_are_split_in_contiguous_shares(
    cores: list[int], workers: int, bind: str
) -> None:
    assert threads_bind(cores, workers) == bind


@pytest.mark.parametrize(("cores", "workers"), [([0, 1], 1), ([0], 2), ([], 2)])
def test_one_worker_or_too_few_cores_leave_vllms_default(cores: list[int], workers: int) -> None:
    assert threads_bind(cores, workers) is None


def test_a_binding_the_pod_sets_is_kept() -> None:
    environ = {BIND_VARIABLE: "1|0"}
    bind_cpu_workers(2, environ)
    assert environ == {BIND_VARIABLE: "1|0"}


def test_on_the_cpu_build_the_workers_share_the_allowed_cores() -> None:
    environ: dict[str, str] = {}
    bind_cpu_workers(2, environ)
    assert environ.get(BIND_VARIABLE) == threads_bind(sorted(os.sched_getaffinity(0)), 2)
