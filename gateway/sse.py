"""Server-sent events for OpenAI streaming responses, built from precomputed bytes.

Everything in a chunk except the text delta is fixed for the whole stream (id, created, model,
object, choice index), so each stream precomputes the bytes before and after the delta; a token
frame costs one JSON string escape (orjson) and two concatenations. No I/O here.
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
    """Frames for one stream of one choice (index 0)."""

    __slots__ = ("_head", "_include_usage", "_kind", "_prefix", "_suffix", "_usage_tail")

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
        if kind == "chat":
            self._prefix = self._head + b'{"index":0,"delta":{"content":'
            self._suffix = b'},"logprobs":null,"finish_reason":null}]' + self._usage_tail
        else:
            self._prefix = self._head + b'{"index":0,"text":'
            self._suffix = b',"logprobs":null,"finish_reason":null}]' + self._usage_tail

    def role(self) -> bytes:
        """The opening chat frame: the assistant role with empty content."""
        return (
            self._head
            + b'{"index":0,"delta":{"role":"assistant","content":""},'
            + b'"logprobs":null,"finish_reason":null}]'
            + self._usage_tail
        )

    def delta(self, text: str) -> bytes:
        """A frame carrying a text delta."""
        return self._prefix + orjson.dumps(text) + self._suffix

    def finish(self, reason: str, text: str = "") -> bytes:
        """The frame that ends the choice, optionally carrying a last text delta."""
        if self._kind == "chat":
            delta = b'{"content":' + orjson.dumps(text) + b"}" if text else b"{}"
            choice = b'{"index":0,"delta":' + delta
        else:
            choice = b'{"index":0,"text":' + orjson.dumps(text)
        return (
            self._head
            + choice
            + b',"logprobs":null,"finish_reason":'
            + orjson.dumps(reason)
            + b"}]"
            + self._usage_tail
        )

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
