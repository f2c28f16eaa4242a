"""Chat message content: strings and arrays of text parts (joined with a newline, as vLLM's
server joins them), the system and developer roles, and a 400 naming the message for image,
audio or file parts, which a text-only model cannot take."""

from __future__ import annotations

import pytest

from scaleserve.gateway.errors import InvalidRequestError
from scaleserve.gateway.protocol import parse_chat

pytestmark = pytest.mark.unit


def chat(*messages: dict) -> dict:
    return {"model": "m", "messages": list(messages)}


def test_text_parts_are_joined_and_every_text_role_is_kept() -> None:
    req = parse_chat(
        chat(
            {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
            {"role": "developer", "content": "Answer in French."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hello,"}, {"type": "text", "text": "hi"}],
            },
        )
    )
    assert [(m["role"], m["content"]) for m in req.messages] == [
        ("system", "Be brief."),
        ("developer", "Answer in French."),
        ("user", "Hello,\nhi"),
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
        "just a string",
    ],
    ids=["image", "audio", "file", "not-an-object"],
)
def test_non_text_parts_get_a_400_naming_the_message(part: object) -> None:
    body = chat(
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]},
    )
    with pytest.raises(InvalidRequestError) as info:
        parse_chat(body)
    assert info.value.status == 400
    assert info.value.param == "messages[1].content"
    assert info.value.code == "unsupported_value"
    assert "text-only" in info.value.message


def test_a_text_part_without_text_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_chat(chat({"role": "user", "content": [{"type": "text"}]}))
    assert info.value.param == "messages[0].content"
