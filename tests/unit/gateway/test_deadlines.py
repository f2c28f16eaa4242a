"""Deadlines (the sweeper), API key reloading and request ids: pure, no engine."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scaleserve.gateway.app import request_id_of
from scaleserve.gateway.auth import ApiKeys
from scaleserve.gateway.deadlines import Flow, Sweeper, bind_send
from scaleserve.gateway.errors import EngineTimeoutError, UnauthorizedError

pytestmark = pytest.mark.unit


def streaming_flow(task: asyncio.Task) -> Flow:
    flow = Flow(task, "req_1")
    flow.upstream = SimpleNamespace(reads=0, complete=False, replica="r1")
    return flow


@pytest.mark.asyncio
async def test_sweeper_ends_a_stream_whose_engine_is_silent() -> None:
    stalled: list[str] = []
    sweeper = Sweeper(idle_timeout=5, write_timeout=10, on_engine_stall=stalled.append)
    task = asyncio.ensure_future(asyncio.sleep(60))
    flow = streaming_flow(task)
    sweeper.flows.add(flow)
    sweeper.sweep(0.0)
    flow.upstream.reads += 1  # a message: progress
    sweeper.sweep(4.0)
    sweeper.sweep(8.0)
    assert not flow.ended  # 4 s since the last message
    sweeper.sweep(9.5)
    assert flow.ended
    assert task.cancelling()
    assert isinstance(flow.error, EngineTimeoutError)
    assert flow.error.code == "token_idle_timeout"
    assert stalled == ["r1"]
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_sweeper_closes_a_client_that_stops_reading_without_an_error() -> None:
    sweeper = Sweeper(idle_timeout=5, write_timeout=10, on_engine_stall=lambda r: None)
    task = asyncio.ensure_future(asyncio.sleep(60))
    flow = streaming_flow(task)
    sweeper.flows.add(flow)
    flow.writing = True  # a write blocked on the client
    sweeper.sweep(0.0)
    sweeper.sweep(9.0)
    assert not flow.ended  # past the idle timeout, but the engine is not the one waiting
    sweeper.sweep(10.5)
    assert flow.ended
    assert flow.error is None
    assert sweeper.write_stalls == 1
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.asyncio
async def test_sweeper_leaves_queued_and_finished_streams_alone() -> None:
    sweeper = Sweeper(idle_timeout=1, write_timeout=1, on_engine_stall=lambda r: None)
    task = asyncio.ensure_future(asyncio.sleep(60))
    waiting = Flow(task, "req_2")  # no upstream yet: first-token and queue deadlines apply
    done = streaming_flow(task)
    done.upstream.complete = True
    sweeper.flows |= {waiting, done}
    for t in range(10):
        sweeper.sweep(float(t))
    assert not waiting.ended
    assert not done.ended
    task.cancel()


@pytest.mark.asyncio
async def test_tracked_send_adds_the_request_id_and_marks_the_end() -> None:
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    flow = Flow(asyncio.current_task(), "req_abc")  # type: ignore[arg-type]
    tracked = bind_send(flow, send)
    await tracked({"type": "http.response.start", "status": 200, "headers": [(b"a", b"b")]})
    assert flow.started
    assert not flow.finished
    await tracked({"type": "http.response.body", "body": b"x", "more_body": True})
    assert not flow.finished
    await tracked({"type": "http.response.body", "body": b"y"})
    assert flow.finished
    assert flow.writes == 3
    assert not flow.writing
    assert (b"x-request-id", b"req_abc") in sent[0]["headers"]


def test_request_ids_are_taken_from_the_client_when_sane() -> None:
    assert request_id_of({"headers": [(b"x-request-id", b"abc-123")]}) == "abc-123"
    for bad in (b"", b"a b", b"x" * 200, b"\xff"):
        made = request_id_of({"headers": [(b"x-request-id", bad)]})
        assert made.startswith("req_")
    assert request_id_of({"headers": []}) != request_id_of({"headers": []})


def test_api_keys_are_reloaded_when_the_secret_changes(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("sk-old\n")
    keys = ApiKeys.from_path(str(secret), poll_s=0)
    keys.check("Bearer sk-old")
    # a Secret update replaces the file (new inode), as the kubelet's atomic writer does
    (tmp_path / "new").write_text("sk-new\n")
    os.replace(tmp_path / "new", secret / "key")
    keys.check("Bearer sk-new")
    with pytest.raises(UnauthorizedError):
        keys.check("Bearer sk-old")
    (secret / "key").write_text("")  # emptied mid-update: the last good keys stay
    keys.check("Bearer sk-new")


class SilentCall:
    """A Generate call whose engine says nothing after its first message."""

    async def read(self) -> object:
        await asyncio.Event().wait()

    def done(self) -> bool:
        return False

    def cancel(self) -> None:
        pass


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("error", "status"),
    [
        (EngineTimeoutError("the engine sent nothing", code="token_idle_timeout"), "504"),
        (None, "408"),  # closed for not reading: the client is told nothing
    ],
)
async def test_a_started_stream_ended_by_a_deadline_is_counted_by_how_it_ended(
    error: EngineTimeoutError | None, status: str
) -> None:
    from scaleserve.engine.proto import engine_pb2
    from scaleserve.gateway.deadlines import CURRENT_FLOW
    from scaleserve.gateway.dispatch import Upstream
    from scaleserve.gateway.protocol import parse_completion
    from scaleserve.gateway.responses import GenerationResponse
    from scaleserve.gateway.service import Gateway
    from scaleserve.gateway.settings import GatewaySettings

    gw = Gateway(GatewaySettings())
    first = engine_pb2.GenerateResponse(text=" a", token_ids=[7])
    upstream = Upstream(SimpleNamespace(outputs=0), SilentCall(), first, 0.0, 1)

    async def open_call(*_: object) -> Upstream:
        return upstream

    async def finish(_: Upstream) -> None:
        pass

    gw.dispatch.open, gw.dispatch.finish = open_call, finish  # type: ignore[method-assign]
    req = parse_completion({"model": "m", "prompt": "x", "stream": True})
    sent: list[dict] = []
    frame_sent = asyncio.Event()

    async def send(message: dict) -> None:
        sent.append(message)
        if message.get("body"):
            frame_sent.set()

    async def receive() -> dict:
        await asyncio.Event().wait()
        return {}

    async def serve() -> None:
        CURRENT_FLOW.set(flow)
        model: Any = None  # read only to echo the prompt, which this request does not
        response = GenerationResponse(gw, req, model, "cmpl-1", [1], None, "completions", 0.0)
        await response({}, receive, send)

    flow = Flow(asyncio.current_task(), "req_1")  # type: ignore[arg-type]
    task = asyncio.ensure_future(serve())
    flow.task = task
    await frame_sent.wait()
    assert sent[0]["status"] == 200  # the stream had started
    flow.end(error)
    with pytest.raises(asyncio.CancelledError):
        await task
    requests = "scaleserve_gateway_requests_total"
    sample = gw.metrics.registry.get_sample_value
    assert sample(requests, {"route": "completions", "status": status}) == 1.0
    assert sample(requests, {"route": "completions", "status": "200"}) is None
