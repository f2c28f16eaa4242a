"""API keys, request size limits, and the concurrency limit with 429 + Retry-After."""

from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fixtures.engines import EngineProcess
from tests.gateway.conftest import MODEL, GatewayFactory, GatewayProcess

pytestmark = pytest.mark.gateway

KEY = "sk-test-123"


@pytest.fixture(scope="module")
def guarded(
    gateway_factory: GatewayFactory,
    engine_replica: EngineProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> GatewayProcess:
    secret = tmp_path_factory.mktemp("secret")
    (secret / "key-a").write_text(KEY + "\n")
    (secret / "key-b").write_text("sk-other\n")
    return gateway_factory(
        [engine_replica],
        "--api-key-file",
        str(secret),
        "--max-concurrency",
        "1",
        "--max-queue",
        "0",
        "--max-body-bytes",
        "4096",
        "--retry-after",
        "2",
    )


def post(gw: GatewayProcess, key: str | None, **payload: object) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2, **payload}
    return httpx.post(gw.base_url + "/completions", json=body, headers=headers, timeout=60)


def test_api_keys_are_required(guarded: GatewayProcess) -> None:
    missing = post(guarded, None)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    wrong = post(guarded, "sk-wrong")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    assert post(guarded, KEY).status_code == 200
    assert post(guarded, "sk-other").status_code == 200
    assert httpx.get(guarded.base_url + "/models").status_code == 401
    # probes and the operator's signal (on the internal port) stay open
    assert httpx.get(guarded.url + "/readyz").status_code == 200
    assert httpx.get(guarded.internal_url + "/stats").status_code == 200


def test_api_keys_rotate_without_a_restart(guarded: GatewayProcess) -> None:
    secret = Path(guarded_secret(guarded))
    (secret / "key-c").write_text("sk-rotated\n")
    try:
        assert until(lambda: post(guarded, "sk-rotated").status_code == 200)
    finally:
        (secret / "key-c").unlink()
    assert until(lambda: post(guarded, "sk-rotated").status_code == 401)
    assert post(guarded, KEY).status_code == 200


def guarded_secret(gw: GatewayProcess) -> str:
    args = gw.process.args
    assert isinstance(args, list)
    return str(args[args.index("--api-key-file") + 1])


def until(holds: Callable[[], bool], timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while not holds():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_large_bodies_get_413(guarded: GatewayProcess) -> None:
    response = post(guarded, KEY, prompt="x" * 10_000)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_beyond_the_concurrency_limit_gets_429_with_retry_after(
    guarded: GatewayProcess, engine_replica: EngineProcess
) -> None:
    # The engine core paused first: the held request stays in flight (no token made) however
    # fast the machine, until the second request has been answered.
    with ThreadPoolExecutor(1) as pool, engine_replica.core_paused():
        held = pool.submit(post, guarded, KEY, max_tokens=16)
        guarded.wait_in_flight(1, timeout_s=30)
        assert guarded.stats()["in_flight"] == 1
        rejected = post(guarded, KEY)
    assert rejected.status_code == 429
    assert rejected.headers["retry-after"] == "2"
    assert rejected.json()["error"]["type"] == "rate_limit_error"
    assert held.result(timeout=60).status_code == 200  # the held request lost nothing
    assert post(guarded, KEY).status_code == 200


def test_idle_connection_outlives_the_client_pool_expiry(guarded: GatewayProcess) -> None:
    """A client pool keeps an idle connection for 5 s (httpx's default) and may reuse it just
    before; the gateway must not be the one closing it then (the request would fail)."""
    conn = http.client.HTTPConnection("127.0.0.1", guarded.port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        first = conn.getresponse()
        first.read()
        assert first.status == 200
        sock = conn.sock
        time.sleep(6.5)
        conn.request("GET", "/healthz")  # on the same socket; a closed one raises here
        second = conn.getresponse()
        second.read()
        assert second.status == 200
        assert conn.sock is sock
    finally:
        conn.close()
