"""Server-sent events for OpenAI streaming responses, built from precomputed bytes.

Everything in a plain chunk except the text delta is fixed for the whole stream (id, created,
model, object, and per choice its index), so each stream precomputes the bytes before and after
the delta; a token frame costs one JSON string escape (orjson) and two concatenations. Frames
with logprobs or running usage are built in full. No I/O here.
"""

from __future__ import annotations

from typing import Literal

import orjson

DONE = b"data: [DONE]\n\n"
Kind = Literal["completion", "chat"]


def _frame(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def escape(text: str) -> bytes:
    """`text` as a JSON string literal, quotes included."""
    return orjson.dumps(text)


class StreamEncoder:
    """Frames for one stream of `n` choices.

    `delta` is the per-token fast path (precomputed bytes around the text, one prefix per
    choice index); `chunk` builds frames that carry logprobs or running usage as well.
    """

    __slots__ = ("_head", "_include_usage", "_kind", "_prefixes", "_suffix", "_usage_tail")

    def __init__(
        self, kind: Kind, request_id: str, created: int, model: str, include_usage: bool = False
    ) -> None:
        self._kind: Kind = kind
        self._include_usage = include_usage
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        head = (
            b'data: {"id":'
            + escape(request_id)
            + b',"object":"'
            + obj.encode()
            + b'","created":'
            + str(int(created)).encode()
            + b',"model":'
            + escape(model)
        )
        if kind == "chat":
            head += b',"system_fingerprint":null'
        self._head = head + b',"choices":['
        self._usage_tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"
        self._prefixes: dict[int, bytes] = {}
        if kind == "chat":
            self._suffix = b'},"logprobs":null,"finish_reason":null}]' + self._usage_tail
        else:
            self._suffix = b',"logprobs":null,"finish_reason":null}]' + self._usage_tail

    def _prefix(self, index: int) -> bytes:
        prefix = self._prefixes.get(index)
        if prefix is None:
            field = b',"delta":{"content":' if self._kind == "chat" else b',"text":'
            prefix = self._head + b'{"index":' + str(index).encode() + field
            self._prefixes[index] = prefix
        return prefix

    def role(self, index: int = 0, usage: dict[str, object] | None = None) -> bytes:
        """The opening chat frame of a choice: the assistant role with empty content."""
        return (
            self._head
            + b'{"index":'
            + str(index).encode()
            + b',"delta":{"role":"assistant","content":""},'
            + b'"logprobs":null,"finish_reason":null}]'
            + self._tail(usage)
        )

    def delta(self, text: str, index: int = 0) -> bytes:
        """A frame carrying a text delta."""
        return self._prefix(index) + orjson.dumps(text) + self._suffix

    def finish(self, reason: str, text: str = "", index: int = 0) -> bytes:
        """The frame that ends a choice, optionally carrying a last text delta."""
        return self.chunk(index, text, finish=reason)

    def chunk(
        self,
        index: int,
        text: str,
        logprobs: object = None,
        finish: str | None = None,
        usage: dict[str, object] | None = None,
        tool_calls: list[dict[str, object]] | None = None,
        reasoning: str = "",
    ) -> bytes:
        """A frame with everything a choice's chunk may carry."""
        if tool_calls or reasoning:
            fields: dict[str, object] = {"content": text} if text else {}
            if reasoning:  # as gateway.reasoning.message_fields: both names clients read
                fields["reasoning_content"] = fields["reasoning"] = reasoning
            if tool_calls:
                fields["tool_calls"] = tool_calls
            delta = orjson.dumps(fields)
            choice = b'{"index":' + str(index).encode() + b',"delta":' + delta
        elif self._kind == "chat":
            delta = b'{"content":' + orjson.dumps(text) + b"}" if text or not finish else b"{}"
            choice = b'{"index":' + str(index).encode() + b',"delta":' + delta
        else:
            choice = b'{"index":' + str(index).encode() + b',"text":' + orjson.dumps(text)
        return (
            self._head
            + choice
            + b',"logprobs":'
            + orjson.dumps(logprobs)
            + b',"finish_reason":'
            + orjson.dumps(finish)
            + b"}]"
            + self._tail(usage)
        )

    def _tail(self, usage: dict[str, object] | None) -> bytes:
        if usage is None:
            return self._usage_tail
        return b',"usage":' + orjson.dumps(usage) + b"}\n\n"

    def usage(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> bytes:
        """The closing usage frame (stream_options.include_usage): no choices, usage set."""
        return (
            self._head
            + b'],"usage":'
            + orjson.dumps(usage_dict(prompt_tokens, completion_tokens, cached_tokens))
            + b"}\n\n"
        )


def usage_dict(
    prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
) -> dict[str, object]:
    usage: dict[str, object] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return usage


def error_frame(
    message: str, type_: str, code: str | None = None, param: str | None = None
) -> bytes:
    """An OpenAI error object as an SSE event (a stream that fails after its first token)."""
    return _frame({"error": {"message": message, "type": type_, "param": param, "code": code}})
