"""The internal port: /stats (the operator's signal), /metrics (Prometheus) and /livez.

It runs on its own thread, so the liveness probe never queues behind the streams the event
loop relays: /livez answers from the thread and fails only when the loop itself has not
ticked for `stale_after` seconds (wedged, not merely busy). /stats and /metrics read the
gateway's state on the loop (one call each, bounded by a timeout), where that state lives.
The API port serves none of these.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socketserver
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

log = logging.getLogger("scaleserve.gateway")
PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
LOOP_CALL_TIMEOUT_S = 10.0


def http_server(
    address: tuple[str, int] | str, answer: Callable[[str], tuple[int, str, bytes]]
) -> socketserver.BaseServer:
    """A threaded HTTP/1.1 server on a TCP (host, port) or a Unix socket path, each GET
    answered by `answer(path)` -> (status, content type, body)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # a client that sends nothing does not keep a thread

        def do_GET(self) -> None:
            status, ctype, body = answer(self.path.partition("?")[0])
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # probes and scrapes every few seconds: no access log

    httpd: socketserver.BaseServer
    if isinstance(address, str):
        httpd = _UnixHTTPServer(address, Handler)
    else:
        httpd = ThreadingHTTPServer(address, Handler)
    httpd.daemon_threads = True
    return httpd


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    pass


class InternalServer:
    """/stats, /metrics and /livez of one gateway process: on the internal TCP port, or, for
    a worker of a pod with several (workers.py), on a Unix socket `path` that the pod's
    supervisor reads and sums."""

    def __init__(
        self,
        host: str,
        port: int,
        stats: Callable[[], dict[str, Any]],
        metrics: Callable[[], bytes],
        last_tick: Callable[[], float],
        stale_after: float = 30.0,
        path: str = "",
    ) -> None:
        self._stats = stats
        self._metrics = metrics
        self._last_tick = last_tick
        self._stale_after = stale_after
        self._loop: asyncio.AbstractEventLoop | None = None
        self._path = path
        self.httpd = http_server(path or (host, port), self.answer)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])  # type: ignore[index]

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/livez":
            stale = time.monotonic() - self._last_tick()
            if stale > self._stale_after:
                return 503, "text/plain", f"event loop stalled for {stale:.0f}s\n".encode()
            return 200, "text/plain", b"ok\n"
        if path == "/stats":
            return 200, "application/json", orjson.dumps(self._on_loop(self._stats))
        if path == "/metrics":
            return 200, PROMETHEUS, self._on_loop(self._metrics)
        return 404, "text/plain", b"not found\n"

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        assert self._loop is not None

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(LOOP_CALL_TIMEOUT_S)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="gateway-internal", daemon=True
        )
        self._thread.start()
        where = self._path or f"port {self.port}"
        log.info("internal %s: /stats, /metrics, /livez", where)

    async def stop(self) -> None:
        if self._thread is not None:
            await asyncio.to_thread(self.httpd.shutdown)
        self.httpd.server_close()
        if self._path:
            # gone: this process serves nothing any more (the supervisor counts it as idle)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
