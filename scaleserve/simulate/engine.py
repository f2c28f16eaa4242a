"""One engine replica under continuous batching, modelled from its degree's profile.

Every request admitted to the batch (prefilling or decoding) counts towards the batch size b.
A request admitted when the batch reaches b gets its first token ttft(b) x input/profile input
later (prefill cost grows with the prompt); after that every decode step gives one token to
each decoding request and takes tbt(b) at the batch running then. Admission is first come,
first served, bounded by max_seqs and, when the profile gives kvCacheTokens, by the KV cache
(a request reserves its prompt plus its output). Decode progress is kept as one step counter
per replica, so a batch change costs O(log n) however many requests it holds.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable

from scaleserve.profiles import DegreeProfile
from scaleserve.simulate.events import EventQueue


class Request:
    __slots__ = (
        "arrival",
        "finish",
        "first_token",
        "input_tokens",
        "output_tokens",
        "reason",
        "replica",
        "rid",
        "stream",
    )

    def __init__(self, rid: int, arrival: float, input_tokens: int, output_tokens: int) -> None:
        self.rid = rid
        self.arrival = arrival
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.first_token: float | None = None
        self.finish: float | None = None
        self.reason: str | None = None  # why it was rejected or aborted
        self.replica: Replica | None = None
        self.stream = -1  # closed-loop stream index, -1 for open-loop arrivals

    @property
    def ttft(self) -> float:
        assert self.first_token is not None
        return self.first_token - self.arrival

    @property
    def tbt(self) -> float:
        """Mean time between tokens over the request's decode (0 for one output token)."""
        assert self.finish is not None
        assert self.first_token is not None
        steps = self.output_tokens - 1
        return (self.finish - self.first_token) / steps if steps else 0.0


Done = Callable[[float, Request], None]


class Replica:
    """A replica's batch; `submit` hands it a request, `on_done` hears of each one finished."""

    def __init__(
        self,
        key: str,
        degree: DegreeProfile,
        profile_input_tokens: int,
        events: EventQueue,
        on_done: Done,
        *,
        max_seqs: int = 1024,
    ) -> None:
        self.key = key
        self.tensor_parallel = degree.tensor_parallel
        self.events = events
        self.on_done = on_done
        self.max_seqs = max_seqs
        self.kv_tokens = degree.kv_cache_tokens
        top = max_seqs + 1
        self._ttft = [degree.ttft_ms(max(b, 1)) / 1000 for b in range(top)]
        self._tbt = [degree.tbt_ms(max(b, 1)) / 1000 for b in range(top)]
        self._input = profile_input_tokens
        self.batch = 0  # admitted: prefilling or decoding
        self.kv_used = 0
        self.in_flight = 0  # submitted and not yet finished (batch + waiting)
        self.waiting: deque[Request] = deque()
        self._decoding: list[tuple[float, int, Request]] = []  # (finishing step, seq, request)
        self._prefilling: dict[Request, None] = {}  # insertion-ordered
        self._seq = itertools.count()
        self._steps = 0.0  # decode steps taken so far
        self._since = 0.0  # when _steps was last brought up to date
        self._version = 0  # invalidates the scheduled completion when the batch changes
        self.output_tokens = 0  # generated so far by finished requests

    def ttft_s(self, batch: int, input_tokens: int) -> float:
        return self._ttft[min(batch, self.max_seqs)] * input_tokens / self._input

    def tbt_s(self, batch: int) -> float:
        return self._tbt[min(batch, self.max_seqs)]

    def submit(self, now: float, request: Request) -> None:
        request.replica = self
        self.in_flight += 1
        self.waiting.append(request)
        self._admit(now)

    def _fits(self, request: Request) -> bool:
        if self.batch >= self.max_seqs:
            return False
        need = request.input_tokens + request.output_tokens
        return self.kv_tokens is None or self.kv_used + need <= self.kv_tokens or self.batch == 0

    def _admit(self, now: float) -> None:
        self._advance(now)
        admitted = False
        while self.waiting and self._fits(self.waiting[0]):
            request = self.waiting.popleft()
            self.batch += 1
            self.kv_used += request.input_tokens + request.output_tokens
            self._prefilling[request] = None
            ready = now + self.ttft_s(self.batch, request.input_tokens)
            self.events.schedule(ready, self._prefilled, request)
            admitted = True
        if admitted:
            self._reschedule(now)

    def _prefilled(self, now: float, request: Request) -> None:
        if request.reason is not None:  # aborted meanwhile
            return
        self._prefilling.pop(request, None)
        request.first_token = now
        self._advance(now)
        if request.output_tokens <= 1:
            self._finish(now, request)
            self._admit(now)
            self._reschedule(now)
            return
        target = self._steps + request.output_tokens - 1
        heapq.heappush(self._decoding, (target, next(self._seq), request))
        self._reschedule(now)

    def _advance(self, now: float) -> None:
        if self._decoding:
            self._steps += (now - self._since) / self.tbt_s(self.batch)
        self._since = now

    def _reschedule(self, now: float) -> None:
        self._version += 1
        if self._decoding:
            left = max(self._decoding[0][0] - self._steps, 0.0)
            self.events.schedule(now + left * self.tbt_s(self.batch), self._step, self._version)

    def _step(self, now: float, version: int) -> None:
        if version != self._version:
            return
        self._advance(now)
        while self._decoding and self._decoding[0][0] <= self._steps + 1e-6:
            _, _, request = heapq.heappop(self._decoding)
            self._finish(now, request)
        self._admit(now)
        self._reschedule(now)

    def _finish(self, now: float, request: Request) -> None:
        request.finish = now
        self.batch -= 1
        self.in_flight -= 1
        self.kv_used -= request.input_tokens + request.output_tokens
        self.output_tokens += request.output_tokens
        self.on_done(now, request)

    def abort_all(self, now: float, reason: str) -> list[Request]:
        """Stop the replica: every request it holds ends with `reason` (returned)."""
        held = [r for _, _, r in self._decoding] + list(self._prefilling) + list(self.waiting)
        for request in held:
            request.reason = reason
        self._decoding.clear()
        self._prefilling.clear()
        self.waiting.clear()
        self.batch = self.in_flight = self.kv_used = 0
        self._version += 1
        return held
