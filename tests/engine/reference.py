"""Shared request sets and the offline-reference runner for engine tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.engine.offline_reference import RESULT_MARKER
from tests.fixtures.engines import ENGINE_ENV, REPO_ROOT

PROMPT_TEXTS = (
    "The quick brown fox",
    "Kubernetes runs containers on a cluster of nodes.",
    "Hello, how are you today?",
    "Count from one to ten: one, two,",
    "The gateway streams tokens",
    "What is the capital of France?",
    "Tensor parallelism splits each layer",
    "A",
)


def encode(model_dir: Path, text: str) -> list[int]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


class OfflineReference:
    """`LLM.generate` in a subprocess; `start` returns at once, `results` waits."""

    def __init__(self, model_dir: Path, requests: list[dict[str, Any]], log_path: Path) -> None:
        self.requests = requests
        self.log_path = log_path
        env_args = {**os.environ, **ENGINE_ENV}
        self._stderr = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.engine.offline_reference", "--model", str(model_dir)],
            cwd=REPO_ROOT,
            env=env_args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(requests).encode())
        self.process.stdin.close()

    def close(self) -> None:
        """Stop the subprocess if it still runs and release its pipes."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def results(self, timeout_s: float = 300) -> list[dict[str, Any]]:
        assert self.process.stdout is not None
        with self.process.stdout:
            out = self.process.stdout.read()
        code = self.process.wait(timeout_s)
        self._stderr.close()
        lines = [
            json.loads(line[len(RESULT_MARKER) :])
            for line in out.decode().splitlines()
            if line.startswith(RESULT_MARKER)
        ]
        if code != 0 or len(lines) != len(self.requests):
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-40:])
            raise AssertionError(f"offline reference failed (exit {code}):\n{tail}")
        return lines
