"""A random-weight Llama checkpoint of a real size (default: the Llama-3-8B configuration).

    python benchmarks/gpu/make_random_llama.py DIR [--config llama-3-8b] [--device cuda]

Writes config.json, sharded bf16 safetensors with an index, and the tiny model's tokenizer
(scaleserve.engine.tiny_model: a BPE trained locally, so no hub is needed). The model's
vocabulary is the real one's size (128256): its embedding and LM head cost what Llama-3-8B's
cost; the tokenizer only knows the first few hundred ids, so the LM head's rows past those are
zero: greedy decoding (what the benchmark sends) then always picks a token the tokenizer can
detokenize, and the matmul still spans the whole vocabulary. The weights are random (normal,
std 0.02; norms 1), so the text is noise and the timings are real. Tensors are
generated one at a time (on the GPU when there is one), so host memory stays near one shard.
A finished directory of the same configuration is left as is.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CONFIGS: dict[str, dict[str, Any]] = {
    "llama-3-8b": {
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
    },
    # for checking this script on a CPU machine: same shapes rules, a few MB
    "llama-mini": {
        "vocab_size": 4096,
        "hidden_size": 256,
        "intermediate_size": 512,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
    },
}
MARKER = ".scaleserve-random-llama.json"
SHARD_BYTES = 4 * 2**30


def tensor_shapes(cfg: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """Every parameter of a LlamaForCausalLM (untied embeddings), in checkpoint order."""
    h, inter, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * head_dim
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, h))]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (h,)),
            (p + "self_attn.q_proj.weight", (h, h)),
            (p + "self_attn.k_proj.weight", (kv, h)),
            (p + "self_attn.v_proj.weight", (kv, h)),
            (p + "self_attn.o_proj.weight", (h, h)),
            (p + "post_attention_layernorm.weight", (h,)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
        ]
    shapes += [("model.norm.weight", (h,)), ("lm_head.weight", (vocab, h))]
    return shapes


def hf_config(cfg: dict[str, Any], bos: int, eos: int, pad: int) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16",
        "bos_token_id": bos,
        "eos_token_id": eos,
        "pad_token_id": pad,
        **cfg,
    }


def make(directory: Path, name: str, device: str) -> Path:
    import torch
    from safetensors.torch import save_file

    from scaleserve.engine.tiny_model import Recipe, write_tokenizer

    cfg = CONFIGS[name]
    marker = directory / MARKER
    if marker.is_file() and json.loads(marker.read_text()).get("config") == cfg:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    write_tokenizer(directory, Recipe())
    tok = json.loads((directory / "tokenizer.json").read_text())
    ids = {t["content"]: t["id"] for t in tok["added_tokens"]}
    known = max(tok["model"]["vocab"].values()) + 1  # ids the tokenizer can detokenize
    config = hf_config(cfg, ids["<s>"], ids["</s>"], ids["<pad>"])
    (directory / "config.json").write_text(json.dumps(config, indent=2))

    generator = torch.Generator(device=device).manual_seed(0)
    weight_map: dict[str, str] = {}
    shard: dict[str, Any] = {}
    shard_bytes, index, total = 0, 0, 0
    shards: list[tuple[str, dict[str, Any]]] = []

    def flush() -> None:
        nonlocal shard, shard_bytes, index
        if shard:
            index += 1
            file = f"model-{index:05d}.safetensors"
            save_file(shard, str(directory / file), metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(shard, file))
            shards.append((file, shard))
            shard, shard_bytes = {}, 0

    for key, shape in tensor_shapes(cfg):
        if key.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
            if key == "lm_head.weight":
                t[known:] = 0.0
            t = (t * 0.02).to(torch.bfloat16).cpu()
        size = t.numel() * t.element_size()
        if shard and shard_bytes + size > SHARD_BYTES:
            flush()
        shard[key] = t.contiguous()
        shard_bytes += size
        total += size
    flush()
    # rename to the usual "-of-N" names now that N is known
    final_map: dict[str, str] = {}
    for i, (file, tensors) in enumerate(shards, start=1):
        target = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        (directory / file).rename(directory / target)
        final_map.update(dict.fromkeys(tensors, target))
    index_json = {"metadata": {"total_size": total}, "weight_map": final_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index_json, indent=2))
    marker.write_text(json.dumps({"config": cfg}, indent=2))
    return directory


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--config", choices=sorted(CONFIGS), default="llama-3-8b")
    parser.add_argument(
        "--device", default=None, help="where to draw weights (default: cuda if any)"
    )
    args = parser.parse_args()
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    print(make(args.directory, args.config, device))
    return 0


if __name__ == "__main__":
    sys.exit(main())
