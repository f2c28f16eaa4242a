"""Reference outputs from vLLM's offline `LLM.generate`, run as a separate process.

`python -m tests.engine.offline_reference --model DIR --dtype float32 --max-model-len N < in.json`
reads ``[{"prompt": [ids] | "text", "max_tokens": n, ...sampling}]`` and prints one JSON line
per request with its `token_ids` and `text`. A process of its own keeps the test process free
of vLLM's engine (memory, threads, warnings) and allows a __main__ guard for spawn.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

RESULT_MARKER = "OFFLINE-RESULT "


def run(args: argparse.Namespace, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=args.model,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
    )
    prompts: list[Any] = []
    params = []
    for request in requests:
        prompt = request.pop("prompt")
        is_text = isinstance(prompt, str)
        prompts.append({"prompt": prompt} if is_text else {"prompt_token_ids": prompt})
        params.append(SamplingParams(**request))
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [
        {
            "token_ids": list(out.outputs[0].token_ids),
            "text": out.outputs[0].text,
            "finish_reason": out.outputs[0].finish_reason,
            "prompt_token_ids": list(out.prompt_token_ids or []),
        }
        for out in outputs
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--max-model-len", type=int, default=1024)
    args = parser.parse_args()
    requests = json.load(sys.stdin)
    for result in run(args, requests):
        print(RESULT_MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
