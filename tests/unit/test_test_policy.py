"""The leaked-task guard in tests/conftest.py catches a leak and passes clean tests."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import fail_on_leaked_tasks

pytestmark = pytest.mark.unit


async def _leaks() -> None:
    asyncio.get_running_loop().create_task(asyncio.sleep(30), name="forgotten")


async def _cleans_up() -> None:
    task = asyncio.get_running_loop().create_task(asyncio.sleep(30))
    task.cancel()


def test_a_coroutine_that_leaks_a_task_fails() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"leaked 1 pending asyncio task.*forgotten"):
        asyncio.run(fail_on_leaked_tasks(_leaks)())


def test_a_coroutine_that_cancels_its_tasks_passes() -> None:
    asyncio.run(fail_on_leaked_tasks(_cleans_up)())


@pytest.mark.asyncio
async def test_async_tests_run_under_the_guard() -> None:
    await asyncio.sleep(0)
