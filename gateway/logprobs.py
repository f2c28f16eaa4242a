"""Engine TokenLogprobs -> the OpenAI logprobs objects, shaped as vLLM's server shapes them.

Each TokenLogprob lists vLLM's candidates in vLLM's order (the sampled token first, then the
best by rank); chat takes the first `top` of them, completions the first `top + 1` keyed by
token text, which is how vLLM's server slices the same list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

FLOOR = -9999.0  # OpenAI's stand-in for -inf


def _lp(value: float) -> float:
    return max(value, FLOOR)


def chat_content(entries: Sequence[Any], top: int) -> list[dict[str, Any]]:
    """The `logprobs.content` list of a chat choice."""
    return [
        {
            "token": e.token,
            "logprob": _lp(e.logprob),
            "bytes": list(e.token.encode("utf-8", errors="replace")),
            "top_logprobs": [
                {
                    "token": t.token,
                    "logprob": _lp(t.logprob),
                    "bytes": list(t.token.encode("utf-8", errors="replace")),
                }
                for t in e.top[:top]
            ],
        }
        for e in entries
    ]


class CompletionLogprobs:
    """The `logprobs` object of one completions choice, built incrementally (text offsets run
    on across a stream's chunks)."""

    __slots__ = ("offset", "top")

    def __init__(self, top: int) -> None:
        self.top = top
        self.offset = 0

    def build(
        self,
        entries: Sequence[Any],
        prompt_entries: Sequence[Any] | None = None,
        first_prompt_token: Callable[[], str] | None = None,
    ) -> dict[str, Any]:
        """Logprobs for `entries`, preceded (echo) by the prompt's: its first token has none."""
        tokens: list[str] = []
        token_logprobs: list[float | None] = []
        top_logprobs: list[dict[str, float] | None] = []
        if first_prompt_token is not None:
            tokens.append(first_prompt_token())
            token_logprobs.append(None)
            top_logprobs.append(None)
        for e in [*(prompt_entries or ()), *entries]:
            tokens.append(e.token)
            token_logprobs.append(_lp(e.logprob))
            top_logprobs.append({t.token: _lp(t.logprob) for t in e.top[: self.top + 1]})
        offsets = []
        for token in tokens:
            offsets.append(self.offset)
            self.offset += len(token)
        return {
            "text_offset": offsets,
            "token_logprobs": token_logprobs,
            "tokens": tokens,
            "top_logprobs": top_logprobs,
        }
