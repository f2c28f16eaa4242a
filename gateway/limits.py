"""Admission control: a concurrency limit with a bounded FIFO queue; beyond it, or after the
longest allowed wait in it, 429 with Retry-After."""

from __future__ import annotations

import asyncio
from collections import deque

from scaleserve.gateway.errors import OverloadedError


class Admission:
    """At most `limit` requests run at once (0: unlimited); at most `queue_limit` wait."""

    __slots__ = ("_waiters", "limit", "queue_limit", "queue_timeout", "retry_after", "running")

    def __init__(
        self, limit: int, queue_limit: int, retry_after: int = 1, queue_timeout: float = 30.0
    ) -> None:
        self.limit = limit
        self.queue_limit = queue_limit
        self.retry_after = retry_after
        self.queue_timeout = queue_timeout
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free now (no waiting, no task)."""
        if self.limit == 0 or (self.running < self.limit and not self._waiters):
            self.running += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        if len(self._waiters) >= self.queue_limit:
            raise OverloadedError(
                "the gateway is at its concurrency limit and its queue is full; retry later",
                headers={"retry-after": str(self.retry_after)},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await waiter  # release() hands its slot over: running is not decremented
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # the slot arrived as the deadline passed: keep it
            self._waiters.remove(waiter)
            raise OverloadedError(
                f"no capacity within the {self.queue_timeout:g}s queue limit; retry later",
                headers={"retry-after": str(self.retry_after)},
            ) from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot arrived as we were cancelled: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.running -= 1
