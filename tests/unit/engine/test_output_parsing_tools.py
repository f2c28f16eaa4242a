"""Tool-call parsing with vLLM's parsers on outputs recorded from real models of each supported
format (Hermes/Qwen `<tool_call>` JSON, Llama 3 JSON, Mistral `[TOOL_CALLS]`): the whole output
and the same output streamed token by token give the same calls, and `tool_choice` auto ends
with finish_reason "tool_calls"."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scaleserve.engine.proto import engine_pb2
from scaleserve.engine.tiny_model import Recipe, train_tokenizer
from tests.fixtures.relay import relayed

pytestmark = pytest.mark.unit

output_parsing = pytest.importorskip("scaleserve.engine.output_parsing", reason="needs vLLM")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        },
    },
}
CLOCK = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
PARIS = ("get_weather", {"city": "Paris", "unit": "celsius"})
CET = ("get_time", {"zone": "CET"})
# name -> (recorded output, expected calls, expected content)
RECORDED: dict[str, tuple[str, list[tuple[str, dict[str, Any]]], str | None]] = {
    "hermes": (  # Qwen2.5-7B-Instruct, two parallel calls after a sentence
        "Let me check both.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n'
        "</tool_call>\n<tool_call>\n"
        '{"name": "get_time", "arguments": {"zone": "CET"}}\n</tool_call>',
        [PARIS, CET],
        "Let me check both.\n",
    ),
    "llama3_json": (  # Llama-3.1-8B-Instruct's JSON tool call
        '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}',
        [PARIS],
        None,
    ),
    "mistral": (  # Mistral-7B-Instruct-v0.3
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]',
        [PARIS],
        None,
    ),
}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The tiny model's tokenizer, with the formats' marker tokens that the parsers look up."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(Recipe()))
    tok.add_special_tokens(
        {
            "additional_special_tokens": [
                "<tool_call>",
                "</tool_call>",
                "<|python_tag|>",
                "[TOOL_CALLS]",
            ]
        }
    )
    return tok


def parsing(name: str, tokenizer: Any, whole: bool, choice: str = "auto") -> Any:
    engine = type("Engine", (), {"model_config": type("C", (), {"model": "m"})()})()
    engine.get_tokenizer = lambda: tokenizer
    parser_cls = output_parsing.parser_class(name, None, engine)
    spec = engine_pb2.ToolCalling(
        tools=json.dumps([WEATHER, CLOCK]),
        tool_choice=choice,
        parallel_tool_calls=True,
        whole_output=whole,
    )
    return output_parsing.OutputParsing(parser_cls, tokenizer, spec, None)


def run(name: str, tokenizer: Any, text: str, whole: bool) -> tuple[list[Any], str, str, bool]:
    """Feed `text` token by token as the engine's relay does; return the calls assembled per
    index, the content, the last finish_reason and the content_null flag."""
    calls: dict[int, dict[str, str]] = {}
    content, finish, null = "", "", False
    for msg in relayed(parsing(name, tokenizer, whole), tokenizer, text, [1, 2, 3]):
        content += msg.text
        finish, null = msg.finish_reason, msg.content_null
        for piece in msg.tool_calls:
            call = calls.setdefault(piece.index, {"name": "", "arguments": ""})
            call["name"] += piece.name
            call["arguments"] += piece.arguments
    assembled = [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())]
    return assembled, content, finish, null


@pytest.mark.parametrize("name", sorted(RECORDED))
@pytest.mark.parametrize("whole", [True, False], ids=["whole", "streamed"])
def test_recorded_outputs_parse_into_their_calls(name: str, whole: bool, tokenizer: Any) -> None:
    text, expected, content = RECORDED[name]
    calls, got_content, finish, null = run(name, tokenizer, text, whole)
    assert calls == expected
    assert finish == "tool_calls"
    if whole:
        assert got_content == (content or "")
        assert null == (content is None)
    else:
        assert got_content.strip() == (content or "").strip()


def test_plain_text_stays_content_under_auto(tokenizer: Any) -> None:
    calls, content, finish, null = run("hermes", tokenizer, "Paris is sunny today.", True)
    assert (calls, content, finish, null) == ([], "Paris is sunny today.", "stop", False)


def test_required_and_named_choices_constrain_decoding(tokenizer: Any) -> None:
    required = parsing("hermes", tokenizer, True, "required").sampling_overrides()
    named = parsing(
        "hermes",
        tokenizer,
        True,
        json.dumps({"type": "function", "function": {"name": "get_time"}}),
    ).sampling_overrides()
    for overrides in (required, named):
        constraint = overrides["structured_outputs"]
        assert constraint.structural_tag or constraint.json
        assert overrides["skip_special_tokens"] is False  # the Hermes markers are kept
    assert "get_time" in str(named["structured_outputs"])


def test_unknown_parser_fails_at_start(tokenizer: Any) -> None:
    with pytest.raises(TypeError):
        parsing("no-such-format", tokenizer, True)
