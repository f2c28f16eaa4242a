"""The tiny test model: deterministic, real formats, cached."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from scaleserve.engine.tiny_model import CHAT_TEMPLATE, Recipe, is_complete, make_tiny_model

pytestmark = pytest.mark.unit


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("m") / "tiny")


def test_same_recipe_gives_byte_identical_files(
    built: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    again = make_tiny_model(tmp_path_factory.mktemp("m2") / "tiny")
    assert _digest(built) == _digest(again)


def test_a_finished_model_is_not_rebuilt(built: Path) -> None:
    before = (built / "model.safetensors").stat().st_mtime_ns
    make_tiny_model(built)
    assert (built / "model.safetensors").stat().st_mtime_ns == before
    assert is_complete(built, Recipe())
    assert not is_complete(built, Recipe(seed=1))


def test_config_is_a_llama_with_head_dim_64(built: Path) -> None:
    config = json.loads((built / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    assert (built / "model.safetensors").stat().st_size < 16 * 2**20


def test_tokenizer_round_trips_and_has_the_chat_template(built: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    raw = Tokenizer.from_file(str(built / "tokenizer.json"))
    text = "The gateway streams tokens to the client."
    ids = raw.encode(text, add_special_tokens=False).ids
    assert raw.decode(ids) == text
    assert len(ids) < len(text) / 2  # trained merges, not bytes

    hf = AutoTokenizer.from_pretrained(str(built))
    assert hf.chat_template == CHAT_TEMPLATE
    prompt = hf.apply_chat_template(
        [{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt == "<|user|>\nHello</s>\n<|assistant|>\n"
    assert hf.eos_token == "</s>"
    assert hf.encode("Hello")[0] == hf.bos_token_id


def test_mixtral_variant_is_a_mixture_of_experts(tmp_path: Path) -> None:
    directory = make_tiny_model(tmp_path / "moe", Recipe(arch="mixtral"))
    config = json.loads((directory / "config.json").read_text())
    assert config["architectures"] == ["MixtralForCausalLM"]
    assert config["num_local_experts"] == 4
    assert config["num_experts_per_tok"] == 2


def test_unknown_arch_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown arch 'gpt'"):
        make_tiny_model(tmp_path / "x", Recipe(arch="gpt"))


def test_a_model_built_with_another_chat_template_is_rebuilt(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The template is part of the cache key: an older cached model (e.g. one whose template
    knew no tools) is not taken for the current one, so set-up rebuilds it."""
    from scaleserve.engine import tiny_model

    assert is_complete(built, Recipe())
    monkeypatch.setattr(tiny_model, "CHAT_TEMPLATE", CHAT_TEMPLATE.replace("tools", "functions"))
    assert not is_complete(built, Recipe())
