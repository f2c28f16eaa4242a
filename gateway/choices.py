"""Engine messages of one request -> OpenAI choices: the whole body, or stream frames.

A request with `n` choices is one engine stream whose messages each belong to one choice
(`index`); a choice ends with the message carrying its finish_reason, and the stream is
complete once all `n` have ended (the last of them carries the usage).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scaleserve.gateway import logprobs as lp
from scaleserve.gateway import sse
from scaleserve.gateway.protocol import GenerationRequest
from scaleserve.gateway.reasoning import message_fields
from scaleserve.gateway.tools import delta_calls, response_calls


class Echo:
    """What `echo` puts before a completion choice: the prompt's text and token logprobs."""

    __slots__ = ("first_token", "text")

    def __init__(self, text: str, first_token: Callable[[], str]) -> None:
        self.text = text
        self.first_token = first_token


class Collector:
    """Accumulates the whole response of a non-streamed request."""

    def __init__(self, req: GenerationRequest, echo: Echo | None, reasoning: bool = False) -> None:
        n = req.choices.n
        self.req = req
        self.echo = echo
        self.reasoning = reasoning  # the engine splits reasoning off: the message says so
        self.thoughts: list[str | None] = [None] * n
        self.texts: list[list[str]] = [[] for _ in range(n)]
        self.entries: list[list[Any]] = [[] for _ in range(n)]
        self.finish: list[str | None] = [None] * n
        self.prompt_entries: list[Any] = []
        self.calls: list[list[Any]] = [[] for _ in range(n)]
        self.null_content = [False] * n
        self.finished = 0

    def add(self, msg: Any) -> bool:
        """Take one message; True once every choice has finished."""
        i = msg.index
        if msg.text:
            self.texts[i].append(msg.text)
        if msg.logprobs:
            self.entries[i].extend(msg.logprobs)
        if msg.prompt_logprobs:
            self.prompt_entries = list(msg.prompt_logprobs)
        if msg.tool_calls:
            self.calls[i].extend(msg.tool_calls)
        if msg.reasoning:
            self.thoughts[i] = (self.thoughts[i] or "") + msg.reasoning
        if msg.content_null:
            self.null_content[i] = True
        if msg.finish_reason:
            self.finish[i] = msg.finish_reason
            self.finished += 1
        return self.finished >= len(self.finish)

    def choices(self) -> list[dict[str, Any]]:
        req = self.req
        top = req.choices.logprobs
        out: list[dict[str, Any]] = []
        for i, reason in enumerate(self.finish):
            text = "".join(self.texts[i])
            logprobs: Any = None
            if req.kind == "chat":
                if top is not None:
                    logprobs = {"content": lp.chat_content(self.entries[i], top)}
                message: dict[str, Any] = {
                    "role": "assistant",
                    "content": None if self.null_content[i] else text,
                    "refusal": None,
                }
                if self.calls[i]:
                    message["tool_calls"] = response_calls(self.calls[i])
                if self.reasoning:
                    message.update(message_fields(self.thoughts[i]))
                out.append(
                    {"index": i, "message": message, "logprobs": logprobs, "finish_reason": reason}
                )
                continue
            echo = self.echo
            if top is not None:
                builder = lp.CompletionLogprobs(top)
                if echo is not None:
                    logprobs = builder.build(self.entries[i], self.prompt_entries, echo.first_token)
                else:
                    logprobs = builder.build(self.entries[i])
            if echo is not None:
                text = echo.text + text
            out.append({"index": i, "text": text, "logprobs": logprobs, "finish_reason": reason})
        return out


class Framer:
    """Turns a streamed request's messages into SSE frames."""

    def __init__(
        self,
        req: GenerationRequest,
        enc: sse.StreamEncoder,
        prompt_tokens: int,
        echo: Echo | None,
        reasoning: bool = False,
    ) -> None:
        n = req.choices.n
        self.req = req
        self.enc = enc
        self.chat = req.kind == "chat"
        self.top = req.choices.logprobs
        self.prompt_tokens = prompt_tokens
        self.echo = echo
        self.echoed = [False] * n
        self.tokens = [0] * n
        top = self.top or 0
        self.builders = [lp.CompletionLogprobs(top) for _ in range(n)]
        self.prompt_entries: list[Any] = []
        self.parsing = reasoning or (req.tools is not None and req.tools.parsed)
        self.plain = self.top is None and echo is None and not req.continuous_usage
        self.plain = self.plain and not self.parsing
        self.finished = 0
        self.n = n

    def opening(self) -> bytes:
        """Chat streams open with an assistant-role frame per choice."""
        if not self.chat:
            return b""
        usage = self._usage(0) if self.req.continuous_usage else None
        return b"".join(self.enc.role(i, usage) for i in range(self.n))

    def _usage(self, completion_tokens: int) -> dict[str, object]:
        return sse.usage_dict(self.prompt_tokens, completion_tokens)

    def frame(self, msg: Any) -> bytes:
        """The frame for one message (b"" when it carries nothing to show)."""
        i = msg.index
        self.tokens[i] += len(msg.token_ids)
        if msg.finish_reason:
            self.finished += 1
        if self.plain:
            if msg.finish_reason:
                return self.enc.finish(msg.finish_reason, msg.text, i)
            return self.enc.delta(msg.text, i) if msg.text else b""
        text = msg.text
        logprobs: Any = None
        if msg.prompt_logprobs:
            self.prompt_entries = list(msg.prompt_logprobs)
        echo = self.echo
        first = echo is not None and not self.echoed[i]
        if first:
            self.echoed[i] = True
            text = echo.text + text  # type: ignore[union-attr]
        if self.top is not None:
            if self.chat:
                logprobs = {"content": lp.chat_content(msg.logprobs, self.top)}
            elif first:
                first_token = echo.first_token  # type: ignore[union-attr]
                logprobs = self.builders[i].build(msg.logprobs, self.prompt_entries, first_token)
            else:
                logprobs = self.builders[i].build(msg.logprobs)
        calls = delta_calls(msg.tool_calls) if msg.tool_calls else None
        thought = msg.reasoning
        if not (text or calls or thought or msg.finish_reason or msg.token_ids):
            return b""
        if self.parsing and not (
            text or calls or thought or msg.finish_reason or self.top is not None
        ):
            return b""  # tokens a parser holds back (a call's or a tag's markup), as vLLM does
        usage = self._usage(self.tokens[i]) if self.req.continuous_usage else None
        finish = msg.finish_reason or None
        return self.enc.chunk(i, text, logprobs, finish, usage, calls, thought)

    @property
    def done(self) -> bool:
        return self.finished >= self.n
