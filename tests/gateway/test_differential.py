"""The same requests to vLLM's own OpenAI server and to scaleserve (gateway over engines), on the
tiny model: the answers agree field by field.

Every request is greedy or seeded, so both servers must produce the same tokens. Streams are
compared after assembly (chunk boundaries depend on timing on both sides). Fields that must
differ, or that vLLM's server adds beyond the OpenAI API, are listed below with the reason.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import orjson
import pytest

from tests.fixtures.vllm_server import VllmServer, vllm_server
from tests.gateway.conftest import MODEL, GatewayProcess

pytestmark = pytest.mark.gateway

__all__ = ["vllm_server"]

# Different on every request by design.
PER_REQUEST = {"id": "random per request (responses and tool calls)", "created": "a timestamp"}
# vLLM's server sends `tool_calls: []` on every chat message without calls; scaleserve, like
# OpenAI, leaves the field out. An empty list on vLLM's side is compared as absent.
NO_CALLS: list[Any] = []
# vLLM's server extensions, not part of the OpenAI API, which scaleserve does not send.
VLLM_ONLY = {
    "stop_reason": "vLLM extension (the matched stop string or token id)",
    "token_ids": "vLLM extension (return_token_ids)",
    "prompt_token_ids": "vLLM extension (return_token_ids)",
    "prompt_logprobs": "vLLM extension (raw prompt logprobs beside the OpenAI logprobs)",
    "kv_transfer_params": "vLLM extension (disaggregated prefill)",
    "service_tier": "vLLM always sends null; OpenAI sends it only when requested",
    "system_fingerprint": "vLLM sends null or omits it by message; scaleserve always null",
    "completion_tokens_details": "vLLM sends null (reasoning token counts)",
    "prompt_tokens_details": "vLLM reports cached tokens only with --enable-prompt-tokens-details",
    "reasoning": "vLLM extension (reasoning parser output; no parser configured)",
    "reasoning_content": "vLLM extension (reasoning parser output; no parser configured)",
    "annotations": "vLLM sends null (web search annotations)",
    "audio": "vLLM sends null (audio output)",
    "function_call": "vLLM sends null (the deprecated functions API)",
    "routed_experts": "vLLM extension (MoE routing export)",
    "ec_transfer_params": "vLLM extension (encoder cache transfer)",
    "metrics": "vLLM extension (per-request timing metrics)",
    "prompt_text": "vLLM extension (the prompt as text)",
}
IGNORED = PER_REQUEST.keys() | VLLM_ONLY.keys()
LOGPROB_TOLERANCE = 2e-3  # float32 logits, summed in a different batch on each server

COMPLETION = "/v1/completions"
CHAT = "/v1/chat/completions"
P1 = "The quick brown fox jumps over the lazy dog. A journey of a thousand miles"
P2 = "Kubernetes runs containers on a cluster of nodes. The gateway"
USER = [{"role": "user", "content": "What is the capital of France?"}]
SYSTEM_USER = [{"role": "system", "content": "You are helpful."}, *USER]
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
    "required": ["city", "population"],
    "additionalProperties": False,
}


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, CLOCK]  # not strict: the call's envelope is constrained, its arguments free
STRICT_TOOLS = [{**t, "function": {**t["function"], "strict": True}} for t in TOOLS]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL_TURNS = [
    *ASK_WEATHER,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call-1",
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "arguments": '{"city": "Paris", "unit": "celsius"}',
                },
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call-1", "content": "18 degrees and sunny"},
]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def c(**kw: Any) -> tuple[str, dict[str, Any]]:
    return COMPLETION, {"prompt": P1, "max_tokens": 12, "temperature": 0.0, **kw}


def ch(**kw: Any) -> tuple[str, dict[str, Any]]:
    return CHAT, {"messages": SYSTEM_USER, "max_tokens": 12, "temperature": 0.0, **kw}


SEEDED = {"temperature": 1.0, "top_p": 0.9, "seed": 1234}
CORPUS: dict[str, tuple[str, dict[str, Any]]] = {
    "completion": c(),
    "completion-second-prompt": c(prompt=P2, max_tokens=16),
    "completion-one-token": c(max_tokens=1),
    "completion-token-ids": c(prompt=[1, 60, 61, 62, 63, 64]),
    "completion-ignore-eos": c(max_tokens=24, ignore_eos=True),
    "completion-stop-string": c(max_tokens=24, stop=[" the", "."], ignore_eos=True),
    "completion-stop-token-ids": c(stop_token_ids=[10, 20, 30, 40, 50], ignore_eos=True),
    "completion-min-tokens": c(min_tokens=10, max_tokens=12),
    "completion-seeded": c(**SEEDED),
    "completion-top-k": c(temperature=0.8, top_k=5, seed=7),
    "completion-presence-penalty": c(presence_penalty=1.5, max_tokens=20),
    "completion-frequency-penalty": c(frequency_penalty=1.2, max_tokens=20),
    "completion-repetition-penalty": c(repetition_penalty=1.4, max_tokens=20),
    "completion-logit-bias-up": c(logit_bias={"70": 100}),
    "completion-logit-bias-down": c(logit_bias={str(t): -100 for t in range(60, 120)}),
    "completion-logprobs-0": c(logprobs=0),
    "completion-logprobs-3": c(logprobs=3),
    "completion-echo": c(echo=True),
    "completion-echo-logprobs": c(echo=True, logprobs=2),
    "completion-n3-seeded": c(n=3, **SEEDED),
    "completion-n2-logprobs": c(n=2, logprobs=1, **SEEDED),
    "completion-json-object": c(response_format={"type": "json_object"}, max_tokens=24),
    "chat": ch(),
    "chat-user-only": ch(messages=USER),
    "chat-developer-role": ch(messages=[{"role": "developer", "content": "Be brief."}, *USER]),
    "chat-text-parts": ch(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hello, "},
                    {"type": "text", "text": "how are you?"},
                ],
            }
        ]
    ),
    "chat-multi-turn": ch(
        messages=[
            *SYSTEM_USER,
            {"role": "assistant", "content": "Paris is the capital of France."},
            {"role": "user", "content": "Count from one to ten."},
        ]
    ),
    "chat-max-completion-tokens": ch(max_completion_tokens=5),
    "chat-stop": ch(stop=["a"], max_tokens=24),
    "chat-seeded": ch(**SEEDED),
    "chat-penalties": ch(presence_penalty=0.5, frequency_penalty=0.5, max_tokens=20),
    "chat-logit-bias": ch(logit_bias={"65": 50, "66": 50}),
    "chat-logprobs": ch(logprobs=True),
    "chat-top-logprobs": ch(logprobs=True, top_logprobs=3),
    "chat-n2-seeded": ch(n=2, **SEEDED),
    "chat-n2-logprobs": ch(n=2, logprobs=True, top_logprobs=2, **SEEDED),
    "chat-json-object": ch(response_format={"type": "json_object"}, max_tokens=24),
    "chat-json-schema": ch(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "city", "schema": SCHEMA, "strict": True},
        },
        max_tokens=40,
    ),
    "chat-user-field": ch(user="someone@example.com"),
    "tools-required": ch(messages=ASK_WEATHER, tools=TOOLS, tool_choice="required", max_tokens=80),
    "tools-required-one-call": ch(
        messages=ASK_WEATHER,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=80,
    ),
    "tools-required-strict": ch(
        messages=ASK_WEATHER, tools=STRICT_TOOLS, tool_choice="required", max_tokens=80
    ),
    "tools-auto-strict": ch(messages=ASK_WEATHER, tools=STRICT_TOOLS, max_tokens=60),
    "tools-named": ch(messages=ASK_WEATHER, tools=TOOLS, tool_choice=NAMED, max_tokens=100),
    "tools-auto": ch(messages=ASK_WEATHER, tools=TOOLS, max_tokens=24),
    "tools-none": ch(messages=ASK_WEATHER, tools=TOOLS, tool_choice="none"),
    "tools-multi-turn-auto": ch(messages=TOOL_TURNS, tools=TOOLS, max_tokens=24),
    "tools-multi-turn-named": ch(
        messages=TOOL_TURNS, tools=TOOLS, tool_choice=NAMED, max_tokens=100
    ),
}
# Requests both servers refuse with a 400 naming the same parameter. Where vLLM names none
# (None), scaleserve's parameter is given after it.
REFUSED: dict[str, tuple[str, dict[str, Any], str | None, str]] = {
    "n2-greedy": (*c(n=2), None, "n"),
    "top-logprobs-without-logprobs": (*ch(top_logprobs=2), "top_logprobs", "top_logprobs"),
    "logit-bias-out-of-vocabulary": (*c(logit_bias={"100000": 5}), "logit_bias", "logit_bias"),
    "logprobs-over-20": (*c(logprobs=21), "logprobs", "logprobs"),
    "json-schema-missing": (
        *ch(response_format={"type": "json_schema"}),
        "response_format",
        "response_format",
    ),
    "suffix": (*c(suffix="x"), "suffix", "suffix"),
    "image-part": (
        *ch(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                }
            ]
        ),
        None,
        "messages[0].content",
    ),
    "tools-empty": (*ch(tools=[]), "tools", "tools"),
    "tool-choice-without-tools": (*ch(tool_choice="required"), "tool_choice", "tool_choice"),
    "tool-choice-unknown-value": (
        *ch(tools=TOOLS, tool_choice="any"),
        "tool_choice",
        "tool_choice",
    ),
    "tool-choice-unknown-function": (
        *ch(tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}}),
        "tool_choice",
        "tool_choice",
    ),
}
STREAMED = [
    "completion",
    "completion-stop-string",
    "completion-logprobs-3",
    "completion-echo",
    "completion-echo-logprobs",
    "completion-n3-seeded",
    "completion-json-object",
    "chat",
    "chat-top-logprobs",
    "chat-n2-logprobs",
    "chat-json-schema",
    "chat-stop",
    "tools-required",
    "tools-required-strict",
    "tools-auto-strict",
    "tools-named",
    "tools-auto",
    "tools-multi-turn-auto",
    "tools-multi-turn-named",
]


def assert_same(ours: Any, theirs: Any, path: str = "$") -> None:
    if isinstance(theirs, dict) and isinstance(ours, dict):
        mine = {k: v for k, v in ours.items() if k not in IGNORED}
        ref = {k: v for k, v in theirs.items() if k not in IGNORED}
        if ref.get("tool_calls") == NO_CALLS and "tool_calls" not in mine:
            del ref["tool_calls"]
        assert mine.keys() == ref.keys(), f"{path}: keys {sorted(mine)} != vLLM's {sorted(ref)}"
        for key in ref:
            assert_same(mine[key], ref[key], f"{path}.{key}")
    elif isinstance(theirs, list) and isinstance(ours, list):
        assert len(ours) == len(theirs), f"{path}: {len(ours)} items != vLLM's {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(theirs, float) and isinstance(ours, int | float):
        assert math.isclose(ours, theirs, abs_tol=LOGPROB_TOLERANCE), f"{path}: {ours} != {theirs}"
    else:
        assert ours == theirs, f"{path}: {ours!r} != vLLM's {theirs!r}"


def post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + path, json={"model": MODEL, **body}, timeout=120)


def assemble(path: str, response: httpx.Response) -> dict[str, Any]:
    """A stream folded into the shape of the non-streamed answer: per choice the joined text,
    the concatenated logprobs and the finish_reason; the usage of the closing frame."""
    assert response.status_code == 200, response.text
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert len({chunk["id"] for chunk in chunks}) == 1
    choices: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for part in chunk["choices"]:
            choice = choices.setdefault(part["index"], {"text": "", "logprobs": None})
            if part.get("finish_reason") is not None:
                choice["finish_reason"] = part["finish_reason"]
            text = part["delta"].get("content") if path == CHAT else part["text"]
            choice["text"] += text or ""
            if path == CHAT:
                _add_calls(choice, part["delta"].get("tool_calls") or [])
            choice["logprobs"] = _join(choice["logprobs"], part.get("logprobs"))
    usage = chunks[-1].get("usage")
    return {"choices": [choices[i] for i in sorted(choices)], "usage": usage}


def _add_calls(choice: dict[str, Any], deltas: list[dict[str, Any]]) -> None:
    """Tool-call deltas joined per call index, as a client assembles them."""
    calls = choice.setdefault("tool_calls", {})
    for delta in deltas:
        call = calls.setdefault(delta["index"], {"name": "", "arguments": ""})
        function = delta.get("function") or {}
        call["name"] += function.get("name") or ""
        call["arguments"] += function.get("arguments") or ""


def _join(have: Any, more: Any) -> Any:
    if more is None:
        return have
    if have is None:
        return more
    return {k: (have[k] + more[k]) if isinstance(more[k], list) else more[k] for k in more}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_unstreamed_answers_agree(
    name: str, gateway: GatewayProcess, vllm_server: VllmServer
) -> None:
    path, body = CORPUS[name]
    theirs = post(vllm_server.url, path, body)
    ours = post(gateway.url, path, body)
    assert theirs.status_code == 200, theirs.text
    assert ours.status_code == 200, ours.text
    assert_same(ours.json(), theirs.json())


@pytest.mark.parametrize("name", STREAMED)
def test_streamed_answers_agree(
    name: str, gateway: GatewayProcess, vllm_server: VllmServer
) -> None:
    path, body = CORPUS[name]
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    theirs = assemble(path, post(vllm_server.url, path, body))
    ours = assemble(path, post(gateway.url, path, body))
    assert_same(ours, theirs)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_both_refuse_the_same_requests(
    name: str, gateway: GatewayProcess, vllm_server: VllmServer
) -> None:
    path, body, their_param, our_param = REFUSED[name]
    theirs = post(vllm_server.url, path, body)
    ours = post(gateway.url, path, body)
    assert (theirs.status_code, ours.status_code) == (400, 400), (theirs.text, ours.text)
    assert theirs.json()["error"]["param"] == their_param
    assert ours.json()["error"]["param"] == our_param
    assert ours.json()["error"]["type"] == "invalid_request_error"
