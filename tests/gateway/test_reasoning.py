"""Reasoning models: the engine splits the output into reasoning and content with vLLM's
reasoning parser (`--reasoning-parser qwen3`, beside the Hermes tool parser), the gateway relays
it as `reasoning_content` (and vLLM's `reasoning`), and vLLM's own OpenAI server with the same
parsers answers the same requests the same way.

The tiny model's random weights never write `</think>`: under the Qwen3 parser, whose thinking is
on unless the template kwargs turn it off, its whole output is reasoning, as a thinking model's
answer cut off by max_tokens is; `enable_thinking: false` makes it all content. The split at the
end tag is covered on recorded outputs (tests/unit/engine/test_output_parsing_reasoning.py).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.fixtures.engines import TOOL_ARGS, EngineLauncher
from tests.fixtures.vllm_server import VllmServer, start_vllm_server
from tests.gateway.conftest import MODEL, GatewayFactory, GatewayProcess
from tests.gateway.test_differential import SEEDED, SYSTEM_USER, TOOLS, assert_same

pytestmark = pytest.mark.gateway

REASONING_ARGS = ("--reasoning-parser", "qwen3")
CHAT = "/v1/chat/completions"
OFF = {"enable_thinking": False}


def ch(**kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": SYSTEM_USER, "max_tokens": 12, "temperature": 0.0, **kw}


CORPUS: dict[str, dict[str, Any]] = {
    "thinking": ch(),
    "thinking-off": ch(chat_template_kwargs=OFF),
    "thinking-seeded-n2": ch(n=2, **SEEDED),
    "include-reasoning-false": ch(include_reasoning=False),
    "tools-auto-thinking": ch(tools=TOOLS, max_tokens=24),
    "tools-auto-thinking-off": ch(tools=TOOLS, chat_template_kwargs=OFF, max_tokens=24),
    "json-object-thinking-off": ch(
        response_format={"type": "json_object"}, chat_template_kwargs=OFF, max_tokens=24
    ),
}


@pytest.fixture(scope="module")
def servers(
    engine_launcher: EngineLauncher,
    gateway_factory: GatewayFactory,
    tiny_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayProcess, VllmServer]]:
    """scaleserve (an engine with the reasoning parser, behind a gateway) and vLLM's server with
    the same parsers, started side by side."""
    engine = engine_launcher.start(tiny_model_dir, *TOOL_ARGS, *REASONING_ARGS, name="reasoning")
    vllm = start_vllm_server(
        tiny_model_dir,
        tmp_path_factory.mktemp("vllm-reasoning"),
        "--enable-auto-tool-choice",
        *TOOL_ARGS,
        *REASONING_ARGS,
    )
    try:
        engine.wait_serving()
        vllm.wait_ready()
        yield gateway_factory([engine]), vllm
    finally:
        vllm.stop()
        engine.signal(signal.SIGTERM)
        engine.stop()


def post(url: str, body: dict[str, Any]) -> httpx.Response:
    response = httpx.post(url + CHAT, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response


def assemble(response: httpx.Response) -> list[dict[str, Any]]:
    """A stream's chunks folded per choice: reasoning, content, finish_reason, tool calls."""
    events = [line[6:] for line in response.text.split("\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    choices: dict[int, dict[str, Any]] = {}
    for chunk in (orjson.loads(e) for e in events[:-1]):
        for part in chunk["choices"]:
            choice = choices.setdefault(
                part["index"], {"reasoning": "", "content": "", "calls": 0, "finish": None}
            )
            delta = part["delta"]
            choice["reasoning"] += delta.get("reasoning") or ""
            choice["content"] += delta.get("content") or ""
            choice["calls"] += len(delta.get("tool_calls") or [])
            choice["finish"] = part.get("finish_reason") or choice["finish"]
    return [choices[i] for i in sorted(choices)]


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_unstreamed_answers_agree_with_vllm(
    name: str, servers: tuple[GatewayProcess, VllmServer]
) -> None:
    gateway, vllm = servers
    ours = post(gateway.url, CORPUS[name]).json()
    theirs = post(vllm.url, CORPUS[name]).json()
    for mine, ref in zip(ours["choices"], theirs["choices"], strict=True):
        message = mine["message"]
        # vLLM's server names the field `reasoning`; scaleserve sends it under both names
        assert message["reasoning"] == ref["message"]["reasoning"]
        assert message["reasoning_content"] == message["reasoning"]
    assert_same(ours, theirs)  # content, finish_reason, tool calls, usage


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_streamed_answers_agree_with_vllm(
    name: str, servers: tuple[GatewayProcess, VllmServer]
) -> None:
    gateway, vllm = servers
    body = {**CORPUS[name], "stream": True}
    assert assemble(post(gateway.url, body)) == assemble(post(vllm.url, body))


def test_the_split_is_what_the_thinking_switch_says(
    servers: tuple[GatewayProcess, VllmServer],
) -> None:
    gateway, _ = servers
    thinking = post(gateway.url, CORPUS["thinking"]).json()["choices"][0]["message"]
    off = post(gateway.url, CORPUS["thinking-off"]).json()["choices"][0]["message"]
    assert thinking["content"] is None
    assert thinking["reasoning_content"]
    assert off["reasoning_content"] is None
    assert off["content"] == thinking["reasoning_content"]
    hidden = post(gateway.url, CORPUS["include-reasoning-false"]).json()["choices"][0]["message"]
    assert hidden["reasoning_content"] is None
    assert hidden["content"] is None


def test_the_openai_client_reads_reasoning_content(
    servers: tuple[GatewayProcess, VllmServer],
) -> None:
    gateway, _ = servers
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    body: Any = dict(CORPUS["thinking"])
    with client:
        whole = client.chat.completions.create(**body).choices[0]
        streamed = ""
        for chunk in client.chat.completions.create(**body, stream=True):
            for choice in chunk.choices:
                streamed += (choice.delta.model_extra or {}).get("reasoning_content") or ""
    extra = whole.message.model_extra or {}
    assert whole.message.content is None
    assert isinstance(extra["reasoning_content"], str)
    assert extra["reasoning_content"]
    assert streamed == extra["reasoning_content"]
    assert whole.finish_reason == "length"
