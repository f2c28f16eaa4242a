"""Project-wide test policy: asyncio tests must not leak tasks.

Each test layer has its own conftest with its fixtures; this one only wraps coroutine tests
so that a task created during the test body and still pending when it returns fails the test.
Tasks created by fixtures are theirs to clean up and are not counted here.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

LEAK_GRACE_S = 0.5


def _pending_others(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and t not in before and not t.done()]


def fail_on_leaked_tasks(
    fn: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """Wrap a coroutine test: after it returns, no task it started may still be pending."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        before = set(asyncio.all_tasks())
        result = await fn(*args, **kwargs)
        deadline = asyncio.get_running_loop().time() + LEAK_GRACE_S
        leaked = _pending_others(before)
        while leaked and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)  # let tasks that were cancelled finish unwinding
            leaked = _pending_others(before)
        if leaked:
            for task in leaked:
                task.cancel()
            names = ", ".join(sorted(t.get_name() + f"<{t.get_coro()!r}>" for t in leaked))
            pytest.fail(f"test leaked {len(leaked)} pending asyncio task(s): {names}")
        return result

    return wrapper


@pytest.hookimpl(tryfirst=True, wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if isinstance(item, pytest.Function) and inspect.iscoroutinefunction(item.obj):
        item.obj = fail_on_leaked_tasks(item.obj)
    return (yield)
