"""The models the gateway serves, one per distinct ModelInfo of its replicas."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

from scaleserve.engine.proto import engine_pb2
from scaleserve.gateway.tokenizer import ModelTokenizer


@dataclass(frozen=True)
class Model:
    """A served model as its replicas' ModelInfo describes it. Replicas whose ModelInfo agrees
    on the name, the tokenizer, the chat template and the limits share one `key`; a request is
    tokenized by one Model and routed only to replicas of its key."""

    key: Hashable
    name: str
    max_model_len: int
    vocab_size: int
    tokenizer: ModelTokenizer
    created: int
    tool_call_parser: str = ""  # the engines' vLLM tool parser ("": tool calling is off)
    reasoning_parser: str = ""  # the engines' vLLM reasoning parser ("": no reasoning split)
    task: str = "generate"  # or "embed": the engines serve /v1/embeddings only


def model_key(info: engine_pb2.ModelInfoResponse) -> tuple[str, str]:
    """(served name, digest of everything that changes how its requests are prepared)."""
    digest = hashlib.sha256()
    for name in sorted(info.tokenizer_files):
        digest.update(name.encode() + b"\0" + info.tokenizer_files[name] + b"\0")
    digest.update(info.chat_template.encode())
    digest.update(f"\0{info.max_model_len}\0{info.vocab_size}\0{info.tool_call_parser}".encode())
    if info.reasoning_parser:
        digest.update(f"\0{info.reasoning_parser}".encode())
    if info.task and info.task != "generate":  # keys of generating engines stay as they were
        digest.update(f"\0{info.task}".encode())
    return info.served_model_name, digest.hexdigest()[:16]
