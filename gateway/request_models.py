"""The OpenAI request bodies as typed models (msgspec), decoded straight from the body's bytes.

msgspec checks types and ranges while it decodes, in one pass in C, and ignores fields it does
not know (as the gateway always has). What a type cannot say (fields that refuse each other,
vLLM's wording for its refusals) is checked after decoding, in protocol.py and the parameter
modules. `null` is the same as an absent field everywhere.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

MAX_N = 128
MAX_LOGPROBS = 20  # vLLM's default max_logprobs
MAX_STOP = 4
MAX_SEED = 2**63 - 1
MAX_INT32 = 2**31 - 1
MAX_INPUTS = 2048  # OpenAI's limit on one embeddings request's inputs


# An integer field also takes an integral float (5.0), as it always has here.
Count = Annotated[int, Meta(ge=1, le=MAX_INT32)] | Annotated[float, Meta(ge=1, le=MAX_INT32)]
MinTokens = Annotated[int, Meta(ge=0, le=MAX_INT32)] | Annotated[float, Meta(ge=0, le=MAX_INT32)]
TopK = Annotated[int, Meta(ge=-1, le=MAX_INT32)] | Annotated[float, Meta(ge=-1, le=MAX_INT32)]
Seed = (
    Annotated[int, Meta(ge=-MAX_SEED - 1, le=MAX_SEED)]
    | Annotated[float, Meta(ge=-(2.0**63), lt=2.0**63)]  # 2.0**63 is MAX_SEED + 1
)
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
Repetition = Annotated[float, Meta(gt=0.0, le=10.0)]
TokenId = Annotated[int, Meta(ge=0)]
Logprobs = Annotated[int, Meta(ge=0, le=MAX_LOGPROBS)]
StopText = Annotated[str, Meta(min_length=1)]
Role = Literal["system", "developer", "user", "assistant", "tool"]
Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]


class StreamOptions(Struct):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class JsonSchemaSpec(Struct):
    schema: dict[str, Any] | None = None


class ResponseFormat(Struct):
    type: str | None = None
    json_schema: JsonSchemaSpec | None = None


class Sampled(Struct):
    """The fields /v1/completions and /v1/chat/completions share."""

    model: str | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    suffix: str | None = None
    max_tokens: Count | None = None
    max_completion_tokens: Count | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    seed: Seed | None = None
    stop: StopText | Annotated[list[StopText], Meta(max_length=MAX_STOP)] | None = None
    stop_token_ids: list[TokenId] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    repetition_penalty: Repetition | None = None
    min_tokens: MinTokens | None = None
    ignore_eos: bool | None = None
    n: Annotated[int, Meta(ge=1, le=MAX_N)] | None = None
    best_of: int | None = None
    logit_bias: dict[int, float] | None = None  # token ids arrive as the object's string keys
    response_format: ResponseFormat | None = None


class CompletionBody(Sampled):
    prompt: str | list[str | TokenId | list[TokenId]] | None = None
    logprobs: Logprobs | None = None
    echo: bool | None = None


class ContentPart(Struct):
    type: str | None = None
    text: str | None = None


class Message(Struct):
    role: Role
    content: str | list[str | ContentPart] | None = None
    tool_calls: list[dict[str, Any]] | None = None  # handed to the chat template as sent
    tool_call_id: str | None = None
    name: str | None = None


class Tool(Struct):
    type: str = "function"
    function: dict[str, Any] | None = None  # handed to the chat template as sent


class NamedFunction(Struct):
    name: str | None = None


class NamedToolChoice(Struct):
    type: str = "function"
    function: NamedFunction | None = None


class ChatBody(Sampled):
    messages: list[Message] | None = None
    logprobs: bool | None = None
    top_logprobs: Logprobs | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    tools: list[Tool] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    include_reasoning: bool | None = None
    reasoning_effort: Effort | None = None
    thinking_token_budget: int | None = None


class EmbeddingBody(Struct):
    model: str | None = None
    input: str | list[str | TokenId | list[TokenId]] | None = None
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None
