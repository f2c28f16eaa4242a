"""Requests held while no replica serves their model (an endpoint scaled to zero, or all of its
replicas still starting): a FIFO bounded in count and in time.

A held request waits for its own condition (a replica of its model takes requests); `wake`,
called whenever the replicas that take work change, releases every waiter whose condition now
holds, in arrival order. Beyond `limit` waiters, or after `timeout` seconds held, the request
gets 503 with Retry-After. The number held is the operator's signal to bring engines up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from scaleserve.gateway.errors import NoReplicaAvailableError

Ready = Callable[[], bool]


class Holding:
    """At most `limit` requests held at once (0: none, refused at once), each at most `timeout`
    seconds."""

    __slots__ = ("_waiters", "limit", "retry_after", "timeout")

    def __init__(self, limit: int, timeout: float, retry_after: int = 1) -> None:
        self.limit = limit
        self.timeout = timeout
        self.retry_after = retry_after
        self._waiters: deque[tuple[asyncio.Future[None], Ready]] = deque()

    @property
    def held(self) -> int:
        return len(self._waiters)

    def _refusal(self, message: str) -> NoReplicaAvailableError:
        return NoReplicaAvailableError(message, headers={"retry-after": str(self.retry_after)})

    async def wait(self, ready: Ready, what: str) -> None:
        """Hold until `ready()` (checked by `wake`), at most `timeout` seconds; `what` names
        the model in the refusals. Cancelling the wait leaves the queue."""
        if ready():
            return
        if self.limit == 0:
            raise self._refusal(f"no replica of {what} takes requests now")
        if len(self._waiters) >= self.limit:
            raise self._refusal(
                f"no replica of {what} is ready and {self.limit} requests already wait for "
                "one; retry later"
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (waiter, ready)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # released as the deadline passed: go on
            self._waiters.remove(entry)
            raise self._refusal(
                f"no replica of {what} became ready within {self.timeout:g}s; retry later"
            ) from None
        except asyncio.CancelledError:
            if waiter.cancelled():  # still queued (a released one was taken out by wake)
                self._waiters.remove(entry)
            raise

    def wake(self) -> int:
        """Release, in arrival order, every held request whose replica is ready now; returns
        how many. Their tasks resume in that order (futures run their callbacks in order)."""
        if not self._waiters:
            return 0
        kept: deque[tuple[asyncio.Future[None], Ready]] = deque()
        released = 0
        for waiter, ready in self._waiters:
            # a waiter cancelled but not yet resumed stays queued: its task removes it
            if not waiter.done() and ready():
                waiter.set_result(None)
                released += 1
            else:
                kept.append((waiter, ready))
        self._waiters = kept
        return released
