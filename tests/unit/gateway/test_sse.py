"""The SSE encoder: every frame is valid OpenAI JSON, escaping is right, bytes are stable."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaleserve.gateway import sse

pytestmark = pytest.mark.unit


def parse(frame: bytes) -> dict:
    assert frame.startswith(b"data: ")
    assert frame.endswith(b"\n\n")
    assert frame.count(b"\n\n") == 1
    return json.loads(frame[6:-2])


def test_completion_delta_frame() -> None:
    enc = sse.StreamEncoder("completion", "cmpl-1", 1700000000, "tiny")
    assert parse(enc.delta("Hello")) == {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1700000000,
        "model": "tiny",
        "choices": [{"index": 0, "text": "Hello", "logprobs": None, "finish_reason": None}],
    }


def test_chat_frames() -> None:
    enc = sse.StreamEncoder("chat", "chatcmpl-1", 1, "m", include_usage=True)
    role = parse(enc.role())
    assert role["object"] == "chat.completion.chunk"
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert role["usage"] is None
    delta = parse(enc.delta("x"))
    assert delta["choices"][0]["delta"] == {"content": "x"}
    assert delta["choices"][0]["finish_reason"] is None
    finish = parse(enc.finish("stop"))
    assert finish["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    finish_text = parse(enc.finish("length", "end"))
    assert finish_text["choices"][0]["delta"] == {"content": "end"}
    usage = parse(enc.usage(7, 3, 2))
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 7,
        "completion_tokens": 3,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 2},
    }


def test_usage_key_only_with_include_usage() -> None:
    enc = sse.StreamEncoder("completion", "c", 1, "m")
    assert "usage" not in parse(enc.delta("a"))
    assert "usage" not in parse(enc.finish("stop"))


def test_error_frame_and_done() -> None:
    frame = parse(sse.error_frame("boom", "server_error", "engine_error"))
    assert frame == {
        "error": {"message": "boom", "type": "server_error", "param": None, "code": "engine_error"}
    }
    assert sse.DONE == b"data: [DONE]\n\n"


@given(text=st.text(), rid=st.text(min_size=1), model=st.text(min_size=1))
def test_any_text_round_trips(text: str, rid: str, model: str) -> None:
    for kind in ("chat", "completion"):
        enc = sse.StreamEncoder(kind, rid, 5, model, include_usage=True)  # type: ignore[arg-type]
        frame = parse(enc.delta(text))
        assert frame["id"] == rid
        assert frame["model"] == model
        choice = frame["choices"][0]
        assert (choice["delta"]["content"] if kind == "chat" else choice["text"]) == text


def test_newlines_in_text_never_break_frames() -> None:
    enc = sse.StreamEncoder("completion", "c", 1, "m")
    frame = enc.delta("a\n\nb\r\n")
    assert frame.count(b"\n") == 2
    assert parse(frame)["choices"][0]["text"] == "a\n\nb\r\n"
