"""A tiny Mixtral (MoE: 4 experts, top-2) serves through the engine like the dense model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from scaleserve.engine.client import EngineClient
from tests.engine.reference import PROMPT_TEXTS, OfflineReference, encode
from tests.fixtures.engines import EngineLauncher

pytestmark = pytest.mark.engine


@pytest.mark.asyncio
async def test_tiny_mixtral_streams_the_offline_greedy_output(
    engine_launcher: EngineLauncher,
    tiny_moe_model_dir: Path,
    tmp_path: Path,
) -> None:
    prompts = [encode(tiny_moe_model_dir, text) for text in PROMPT_TEXTS[:3]]
    requests: list[dict[str, Any]] = [
        {"prompt": ids, "max_tokens": 24, "temperature": 0.0, "ignore_eos": True} for ids in prompts
    ]
    reference = OfflineReference(tiny_moe_model_dir, requests, tmp_path / "offline-moe.log")
    engine = engine_launcher.start(tiny_moe_model_dir, name="moe")
    try:
        await asyncio.to_thread(engine.wait_serving)
        want = await asyncio.to_thread(reference.results)
    finally:
        reference.close()
    try:
        async with EngineClient(engine.address) as client:
            got = await asyncio.gather(
                *(
                    client.generate(ids, max_tokens=24, temperature=0.0, ignore_eos=True)
                    for ids in prompts * 4
                )
            )
            info = await client.model_info()
    finally:
        await asyncio.to_thread(engine.stop)
    assert b"Mixtral" in info.tokenizer_files["config.json"]
    for i, result in enumerate(got):
        assert result.token_ids == want[i % len(prompts)]["token_ids"], f"stream {i}"
