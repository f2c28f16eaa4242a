"""Reasoning parsing with vLLM's parsers on outputs in the formats of the supported thinking
models (DeepSeek-R1: the template opens `<think>`, the output closes it; Qwen3: the output holds
the whole `<think>...</think>` block): the whole output and the same output streamed token by
token split into the same reasoning and content, reasoning is split before tool calls, and
`include_reasoning` false drops it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from scaleserve.engine.proto import engine_pb2
from scaleserve.engine.tiny_model import Recipe, train_tokenizer
from tests.fixtures.relay import relayed

pytestmark = pytest.mark.unit

output_parsing = pytest.importorskip("scaleserve.engine.output_parsing", reason="needs vLLM")

R1_THOUGHT = "Okay, the user asks for the capital of France. That is Paris.\n"
QWEN_THOUGHT = "\nThe user wants the capital of France. It is Paris.\n"
ANSWER = "The capital of France is Paris."
# parser -> case -> (output, template kwargs, expected reasoning, expected content)
RECORDED: dict[str, dict[str, tuple[str, dict[str, Any] | None, str | None, str | None]]] = {
    "deepseek_r1": {
        "closed": (f"{R1_THOUGHT}</think>\n\n{ANSWER}", None, R1_THOUGHT, f"\n\n{ANSWER}"),
        "with-open-tag": (
            f"<think>{R1_THOUGHT}</think>\n\n{ANSWER}",
            None,
            R1_THOUGHT,
            f"\n\n{ANSWER}",
        ),
        "cut-off-while-thinking": (R1_THOUGHT, None, R1_THOUGHT, None),
    },
    "qwen3": {
        "closed": (
            f"<think>{QWEN_THOUGHT}</think>\n\n{ANSWER}",
            None,
            QWEN_THOUGHT,
            f"\n\n{ANSWER}",
        ),
        "cut-off-while-thinking": (QWEN_THOUGHT, {"enable_thinking": True}, QWEN_THOUGHT, None),
        "thinking-off": (ANSWER, {"enable_thinking": False}, None, ANSWER),
    },
}
CASES = [(p, c) for p in sorted(RECORDED) for c in sorted(RECORDED[p])]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    """The tiny model's tokenizer with the thinking and tool-call markers as special tokens,
    as the models that use these formats have them."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(Recipe()))
    markers = ["<think>", "</think>", "<tool_call>", "</tool_call>"]
    tok.add_special_tokens({"additional_special_tokens": markers})
    return tok


def parsing(
    tokenizer: Any,
    reasoning_parser: str,
    whole: bool,
    kwargs: dict[str, Any] | None = None,
    omit: bool = False,
    tool_parser: str | None = None,
) -> Any:
    engine = type("Engine", (), {"model_config": type("C", (), {"model": "m"})()})()
    engine.get_tokenizer = lambda: tokenizer
    parser_cls = output_parsing.parser_class(tool_parser, reasoning_parser, engine)
    reasoning = engine_pb2.Reasoning(
        omit=omit, chat_template_kwargs=json.dumps(kwargs) if kwargs else "", whole_output=whole
    )
    tools = None
    if tool_parser:
        tools = engine_pb2.ToolCalling(
            tools=json.dumps([WEATHER]),
            tool_choice="auto",
            parallel_tool_calls=True,
            whole_output=whole,
        )
    return output_parsing.OutputParsing(parser_cls, tokenizer, tools, reasoning)


def run(p: Any, tokenizer: Any, text: str) -> dict[str, Any]:
    """Feed `text` token by token as the engine's relay does; return what the messages carry:
    the joined reasoning and content, the content_null flag, tool calls, finish_reason."""
    prompt = tokenizer.encode("<|user|>\nWhat is the capital of France?</s>\n<|assistant|>\n")
    out: dict[str, Any] = {"reasoning": "", "content": "", "null": False, "calls": []}
    for msg in relayed(p, tokenizer, text, prompt):
        out["reasoning"] += msg.reasoning
        out["content"] += msg.text
        out["null"] = out["null"] or msg.content_null
        out["calls"] += [(c.name, c.arguments) for c in msg.tool_calls if c.name]
        out["finish"] = msg.finish_reason
    return out


@pytest.mark.parametrize(("parser", "case"), CASES)
@pytest.mark.parametrize("whole", [True, False], ids=["whole", "streamed"])
def test_recorded_outputs_split_into_reasoning_and_content(
    parser: str, case: str, whole: bool, tokenizer: Any
) -> None:
    text, kwargs, reasoning, content = RECORDED[parser][case]
    got = run(parsing(tokenizer, parser, whole, kwargs), tokenizer, text)
    assert got["reasoning"] == (reasoning or "")
    assert got["content"] == (content or "")
    assert got["finish"] == "stop"
    if whole:  # a whole answer that was all reasoning has content null, as vLLM's server says
        assert got["null"] == (content is None)


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "streamed"])
def test_include_reasoning_false_drops_the_reasoning(whole: bool, tokenizer: Any) -> None:
    text, _, _, content = RECORDED["deepseek_r1"]["closed"]
    got = run(parsing(tokenizer, "deepseek_r1", whole, omit=True), tokenizer, text)
    assert (got["reasoning"], got["content"]) == ("", content)


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "streamed"])
def test_tool_calls_are_parsed_from_the_content_after_the_reasoning(
    whole: bool, tokenizer: Any
) -> None:
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    thought = "\nI should look the weather up.\n"
    text = f"<think>{thought}</think>\n\n{call}"
    got = run(parsing(tokenizer, "qwen3", whole, tool_parser="hermes"), tokenizer, text)
    assert got["reasoning"] == thought
    assert [name for name, _ in got["calls"]] == ["get_weather"]
    assert got["finish"] == "tool_calls"
    assert "<tool_call>" not in got["content"]


def test_generate_kwargs_follow_vllms_server(tokenizer: Any) -> None:
    """Structured outputs wait for the reasoning to end unless it is dropped, and the engine
    core's parser gets the template kwargs, as vLLM's server passes them."""
    prompt = tokenizer.encode("<|user|>\nHi</s>\n<|assistant|>\n<think>\n")
    kept = parsing(tokenizer, "deepseek_r1", True, {"enable_thinking": True})
    dropped = parsing(tokenizer, "deepseek_r1", True, omit=True)
    assert kept.generate_kwargs(prompt) == {
        "reasoning_ended": False,
        "reasoning_parser_kwargs": {"chat_template_kwargs": {"enable_thinking": True}},
    }
    assert dropped.generate_kwargs(prompt)["reasoning_ended"] is True


def test_unknown_reasoning_parser_fails_at_start(tokenizer: Any) -> None:
    with pytest.raises(TypeError):
        parsing(tokenizer, "no-such-format", True)
