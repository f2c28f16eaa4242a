"""The model's own tokenizer and chat template, built from an engine's ModelInfo.

Encoding uses Hugging Face `tokenizers` (Rust) on the tokenizer.json the engine ships inline;
the chat template is rendered with a sandboxed jinja2 environment set up the way transformers
sets up its own (trim_blocks, lstrip_blocks, `raise_exception`, `tojson`, `strftime_now`), so
gateway pods need neither model storage nor transformers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from scaleserve.gateway.chat_roles import developer_as_system
from scaleserve.gateway.errors import InvalidRequestError


class TokenizerUnavailableError(RuntimeError):
    """ModelInfo carried no usable tokenizer."""


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return str(value) if value else ""


def _raise_exception(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


class ModelTokenizer:
    """Prompt encoding and chat-template rendering for one model."""

    def __init__(self, tokenizer: Tokenizer, config: Mapping[str, Any], chat_template: str) -> None:
        self._tokenizer = tokenizer
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        template = chat_template or config.get("chat_template") or ""
        if isinstance(template, list):  # named templates: take "default"
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            template = named.get("default") or next(iter(named.values()), "")
        self.chat_template: str = template or ""
        self._template = None
        if self.chat_template:
            env = ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
            )
            env.filters["tojson"] = _tojson
            env.globals["raise_exception"] = _raise_exception
            env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
            self._template = env.from_string(self.chat_template)

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], chat_template: str = "") -> ModelTokenizer:
        raw = files.get("tokenizer.json")
        if not raw:
            raise TokenizerUnavailableError("the engine sent no tokenizer.json")
        tokenizer = Tokenizer.from_str(raw.decode())
        config: dict[str, Any] = {}
        if files.get("tokenizer_config.json"):
            config = json.loads(files["tokenizer_config.json"])
        if files.get("special_tokens_map.json"):
            for key, value in json.loads(files["special_tokens_map.json"]).items():
                config.setdefault(key, value)
        return cls(tokenizer, config, chat_template)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        text: str = self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)
        return text

    def render_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        if self._template is None:
            raise InvalidRequestError(
                "this model has no chat template: use /v1/completions", code="no_chat_template"
            )
        if continue_final_message and add_generation_prompt:
            raise InvalidRequestError(
                "continue_final_message and add_generation_prompt cannot both be true",
                param="continue_final_message",
            )
        context = dict(extra or {})
        context.update(
            messages=list(developer_as_system(messages, self.chat_template)),
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )
        try:
            text: str = self._template.render(**context)
        except TemplateError as exc:
            raise InvalidRequestError(f"chat template error: {exc}", param="messages") from None
        if continue_final_message and messages:
            final = str(messages[-1].get("content", ""))
            cut = text.rfind(final)
            if final and cut >= 0:
                text = text[: cut + len(final)]
        return text

    def encode_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> list[int]:
        text = self.render_chat(messages, add_generation_prompt, continue_final_message, extra)
        # The template writes any BOS itself, as transformers' apply_chat_template assumes.
        return self.encode(text, add_special_tokens=False)
