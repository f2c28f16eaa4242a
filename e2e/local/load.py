"""Streaming clients for the whole-system scenarios, with the official `openai` client.

`Load` runs a varying number of client loops; each loop sends one streaming chat completion
after another and records how it ended:

- ``complete``: the stream ended with a finish_reason (and the client saw ``[DONE]``);
- ``error_event``: content arrived, then the gateway's SSE error event (a clean, reported end);
- ``failed``: an exception before any content (connection refused, HTTP error, ...);
- ``truncated``: the stream ended without a finish_reason and without an error event.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import openai

PROMPTS = (
    "Write a short poem about the sea.",
    "Explain tensor parallelism in one paragraph.",
    "List three colours.",
    "Tell me about Kubernetes operators.",
)


async def sse_lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The lines of an event stream. SSE ends lines at CR, LF or CRLF only: text line splitting
    (str.splitlines, httpx's iter_lines) also breaks at U+2028, U+0085 and the like, which a
    JSON string may hold unescaped (random-weight models do emit them)."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            yield line
    if pending:
        yield pending


@dataclass
class Outcome:
    kind: str  # complete | error_event | failed | truncated
    started: float
    ended: float
    chunks: int
    detail: str = ""


@dataclass
class Load:
    base_url: str
    model: str = "tiny-llama"
    max_tokens: int = 16
    ignore_eos: bool = False  # every generation runs to max_tokens (long, predictable streams)
    request_timeout_s: float = 180.0
    outcomes: list[Outcome] = field(default_factory=list)
    _tasks: list[tuple[asyncio.Task[None], asyncio.Event]] = field(default_factory=list)
    _stopping: list[asyncio.Task[None]] = field(default_factory=list)
    _client: Any = None

    async def __aenter__(self) -> Load:
        # one client, enough connections for every loop; no retries: each outcome is counted
        import httpx

        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key="unused",
            max_retries=0,
            timeout=self.request_timeout_s,
            http_client=httpx.AsyncClient(limits=limits, timeout=self.request_timeout_s),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.set_clients(0, wait=True)
        await self._client.close()

    @property
    def clients(self) -> int:
        return len(self._tasks)

    async def set_clients(self, n: int, *, wait: bool = False) -> None:
        """Grow or shrink to `n` client loops; a loop told to stop finishes its request first."""
        while len(self._tasks) < n:
            index, stop = len(self._tasks), asyncio.Event()
            task = asyncio.create_task(self._loop(index, stop), name=f"client {index}")
            self._tasks.append((task, stop))
        stopping = self._tasks[n:]
        del self._tasks[n:]
        for _, stop in stopping:
            stop.set()
        self._stopping.extend(task for task, _ in stopping)
        if wait:
            await asyncio.gather(*self._stopping, return_exceptions=True)
            self._stopping.clear()

    async def _loop(self, index: int, stop: asyncio.Event) -> None:
        seq = 0
        while not stop.is_set():
            prompt = PROMPTS[(index + seq) % len(PROMPTS)]
            seq += 1
            self.outcomes.append(await self.one(prompt))

    async def one(self, prompt: str) -> Outcome:
        """One streaming chat completion, sent by the official client. The SSE lines are read
        raw: building the client's typed chunk objects costs about a millisecond each, which
        would make 64 clients the busiest process on the machine."""
        started = time.monotonic()
        chunks = 0
        finish = None
        try:
            async with self._client.chat.completions.with_streaming_response.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=self.max_tokens,
                temperature=0.8,
                stream=True,
                extra_body={"ignore_eos": True} if self.ignore_eos else None,
            ) as response:
                async for line in sse_lines(response.iter_bytes()):
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:  # the gateway's SSE error event: a clean, reported end
                        detail = str(event["error"].get("message"))
                        return Outcome("error_event", started, time.monotonic(), chunks, detail)
                    for choice in event.get("choices") or ():
                        if (choice.get("delta") or {}).get("content"):
                            chunks += 1
                        finish = choice.get("finish_reason") or finish
        except (openai.APIStatusError, openai.APIConnectionError) as exc:
            kind = "truncated" if chunks else "failed"
            detail = f"{type(exc).__name__}: {exc} (cause: {exc.__cause__!r})"
            return Outcome(kind, started, time.monotonic(), chunks, detail)
        except Exception as exc:
            kind = "truncated" if chunks else "failed"
            return Outcome(kind, started, time.monotonic(), chunks, repr(exc))
        kind = "complete" if finish else "truncated"
        return Outcome(kind, started, time.monotonic(), chunks, str(finish))

    def counts(self, since: float = 0.0) -> Counter[str]:
        return Counter(o.kind for o in self.outcomes if o.started >= since)

    def problems(
        self, since: float = 0.0, kinds: tuple[str, ...] = ("failed", "truncated")
    ) -> list[Outcome]:
        return [o for o in self.outcomes if o.started >= since and o.kind in kinds]
