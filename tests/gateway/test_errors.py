"""Malformed and out-of-range requests get OpenAI-style 4xx errors, never a 500."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.gateway.conftest import MODEL, GatewayProcess

pytestmark = pytest.mark.gateway

C = "/v1/completions"
CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


def body(**kw: object) -> dict:
    return {"model": MODEL, "prompt": "hello", "max_tokens": 4, **kw}


CASES = [
    (C, body(temperature=3), 400, "temperature"),
    (C, body(temperature=-0.1), 400, "temperature"),
    (C, body(top_p=1.5), 400, "top_p"),
    (C, body(max_tokens=0), 400, "max_tokens"),
    (C, body(max_tokens="many"), 400, "max_tokens"),
    (C, body(max_tokens=100_000), 400, "max_tokens"),  # beyond the context window
    (C, body(n=2, temperature=0), 400, "n"),  # vLLM refuses n > 1 for greedy sampling
    (C, body(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    (C, body(frequency_penalty=9), 400, "frequency_penalty"),
    (C, body(seed=1.5), 400, "seed"),
    (C, body(stream=False, stream_options={"include_usage": True}), 400, "stream_options"),
    (C, body(prompt=[1, 2, 99_999]), 400, "prompt"),  # token id outside the vocabulary
    (C, body(prompt=["a", "b"]), 400, "prompt"),
    (C, body(prompt=""), 400, "prompt"),
    (C, body(prompt="word " * 3000), 400, "prompt"),  # longer than the context window
    (C, body(stop_token_ids=[99_999]), 400, "stop_token_ids"),
    (C, body(model="no-such-model"), 404, "model"),
    (C, {"prompt": "hi"}, 400, "model"),
    (CHAT, {"model": MODEL}, 400, "messages"),
    (CHAT, {"model": MODEL, "messages": "hi"}, 400, "messages"),
    (
        CHAT,
        {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages[0].role",
    ),
    (CHAT, {"model": MODEL, "messages": OK_MESSAGES, "n": 0}, 400, "n"),
    (
        CHAT,
        {"model": MODEL, "messages": OK_MESSAGES, "tools": [{"type": "function"}]},
        400,
        "tools",
    ),
    (
        CHAT,
        {"model": MODEL, "messages": OK_MESSAGES, "max_completion_tokens": -1},
        400,
        "max_completion_tokens",
    ),
    (CHAT, {"model": MODEL, "messages": OK_MESSAGES, "top_logprobs": 2}, 400, "top_logprobs"),
    (
        CHAT,
        {"model": MODEL, "messages": OK_MESSAGES, "logit_bias": {"100000": 5}},
        400,
        "logit_bias",
    ),
    (
        CHAT,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
        },
        400,
        "messages[0].content",
    ),
]


@pytest.mark.parametrize(("path", "payload", "status", "param"), CASES)
def test_bad_fields_get_openai_errors(
    gateway: GatewayProcess, path: str, payload: dict, status: int, param: str
) -> None:
    for stream in (False, True):
        data = {**payload, "stream": stream} if "stream_options" not in payload else payload
        response = httpx.post(gateway.url + path, json=data, timeout=30)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == param
        assert error["message"]
        assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"model": "tiny", "prompt": "x"', b"x" * 10],
)
def test_bodies_that_are_not_json_objects(gateway: GatewayProcess, raw: bytes) -> None:
    for path in (C, CHAT):
        response = httpx.post(
            gateway.url + path, content=raw, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_wrong_routes_and_methods(gateway: GatewayProcess) -> None:
    missing = httpx.get(gateway.url + "/v1/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong_method = httpx.get(gateway.url + C)
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()
    unknown_model = httpx.get(gateway.url + "/v1/models/other")
    assert unknown_model.status_code == 404


def test_openai_client_raises_typed_errors(gateway: GatewayProcess) -> None:
    with openai.OpenAI(base_url=gateway.base_url, api_key="x", max_retries=0) as c:
        with pytest.raises(openai.BadRequestError) as info:
            c.completions.create(model=MODEL, prompt="hi", temperature=7)
        assert info.value.param == "temperature"  # type: ignore[attr-defined]
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="gpt-x", messages=OK_MESSAGES)  # type: ignore[arg-type]
        with pytest.raises(openai.BadRequestError, match="maximum context length"):
            c.completions.create(model=MODEL, prompt="hi", max_tokens=5000)
