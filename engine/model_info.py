"""What the engine tells gateways about its model: limits, EOS ids, tokenizer files, template.

The tokenizer files travel inline in ModelInfo so that gateway pods need no model storage.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scaleserve.engine.proto import engine_pb2

PROTOCOL_VERSION = "v1"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "config.json",
)
MAX_INLINE_BYTES = 64 * 1024 * 1024  # the whole set; ModelInfo needs a large message limit


@dataclass(frozen=True)
class ModelFacts:
    served_name: str
    model_path: str
    tokenizer_path: str
    max_model_len: int
    vocab_size: int
    tensor_parallel_size: int
    eos_token_ids: tuple[int, ...] = ()
    chat_template: str = ""
    tokenizer_files: dict[str, bytes] = field(default_factory=dict)
    tool_call_parser: str = ""
    reasoning_parser: str = ""
    task: str = "generate"

    def to_proto(self) -> engine_pb2.ModelInfoResponse:
        return engine_pb2.ModelInfoResponse(
            served_model_name=self.served_name,
            model_path=self.model_path,
            tokenizer_path=self.tokenizer_path,
            chat_template=self.chat_template,
            max_model_len=self.max_model_len,
            tensor_parallel_size=self.tensor_parallel_size,
            eos_token_ids=list(self.eos_token_ids),
            vocab_size=self.vocab_size,
            tokenizer_files=self.tokenizer_files,
            protocol_version=PROTOCOL_VERSION,
            tool_call_parser=self.tool_call_parser,
            reasoning_parser=self.reasoning_parser,
            task=self.task,
        )


def resolve_tokenizer_dir(tokenizer: str) -> Path | None:
    """The local directory holding the tokenizer files (a hub id is looked up in the cache)."""
    path = Path(tokenizer)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        patterns = list(TOKENIZER_FILES)
        return Path(snapshot_download(tokenizer, allow_patterns=patterns, local_files_only=True))
    except Exception:
        return None


def read_tokenizer_files(directory: Path | None) -> dict[str, bytes]:
    if directory is None:
        return {}
    files: dict[str, bytes] = {}
    total = 0
    for name in TOKENIZER_FILES:
        path = directory / name
        if path.is_file():
            data = path.read_bytes()
            total += len(data)
            if total > MAX_INLINE_BYTES:
                break
            files[name] = data
    return files


def eos_token_ids(tokenizer: Any, files: dict[str, bytes]) -> tuple[int, ...]:
    ids: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    if isinstance(eos, int):
        ids.append(eos)
    raw = files.get("generation_config.json")
    if raw:
        value = json.loads(raw).get("eos_token_id")
        extra = value if isinstance(value, list) else [value]
        ids.extend(v for v in extra if isinstance(v, int) and v not in ids)
    return tuple(ids)


def chat_template_of(tokenizer: Any, files: dict[str, bytes]) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        return template
    if "chat_template.jinja" in files:
        return files["chat_template.jinja"].decode()
    raw = files.get("tokenizer_config.json")
    if raw:
        value = json.loads(raw).get("chat_template")
        if isinstance(value, str):
            return value
    return ""


def model_facts(
    engine: Any,
    served_name: str,
    tool_call_parser: str = "",
    reasoning_parser: str = "",
    task: str = "generate",
) -> ModelFacts:
    """Facts about the model an AsyncLLM has loaded."""
    vllm_config = engine.vllm_config
    model_config = vllm_config.model_config
    tokenizer = engine.get_tokenizer()
    tokenizer_dir = resolve_tokenizer_dir(model_config.tokenizer)
    files = read_tokenizer_files(tokenizer_dir)
    return ModelFacts(
        served_name=served_name,
        model_path=str(model_config.model),
        tokenizer_path=str(tokenizer_dir or model_config.tokenizer),
        max_model_len=int(model_config.max_model_len),
        vocab_size=int(model_config.get_vocab_size()),
        tensor_parallel_size=int(vllm_config.parallel_config.tensor_parallel_size),
        eos_token_ids=eos_token_ids(tokenizer, files),
        chat_template=chat_template_of(tokenizer, files),
        tokenizer_files=files,
        tool_call_parser=tool_call_parser,
        reasoning_parser=reasoning_parser,
        task=task,
    )
