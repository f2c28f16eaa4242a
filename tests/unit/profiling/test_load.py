"""The open-loop client: requests go at their offsets, whatever is still running."""

from __future__ import annotations

import asyncio
import time

import pytest

from scaleserve.profiling.load import RequestRecord, open_loop_at

pytestmark = pytest.mark.unit


def test_an_open_loop_sends_each_request_at_its_offset_without_waiting_for_the_others() -> None:
    running: list[int] = []
    overlapped: list[bool] = []

    async def send(index: int) -> RequestRecord:
        record = RequestRecord(sent=time.perf_counter())
        overlapped.append(bool(running))
        running.append(index)
        await asyncio.sleep(0.2)  # longer than the gaps: the next ones go meanwhile
        running.remove(index)
        record.tokens = index
        return record

    async def run() -> tuple[float, list[RequestRecord], float]:
        start = time.perf_counter()
        records, wall = await open_loop_at(send, [0.0, 0.05, 0.05, 0.1])
        return start, records, wall

    start, records, wall = asyncio.run(run())
    assert [r.tokens for r in records] == [0, 1, 2, 3]
    for record, offset in zip(records, [0.0, 0.05, 0.05, 0.1], strict=True):
        assert record.sent >= start + offset
    assert overlapped[1:] == [True, True, True]
    assert wall >= 0.3
