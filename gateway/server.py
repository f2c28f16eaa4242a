"""The gateway's HTTP server: uvicorn with a deadline on request headers and a drain on SIGTERM.

uvicorn bounds idle keep-alive connections but not a client that opens a connection (or starts
a request) and never finishes its headers; `HeaderDeadlineProtocol` answers 408 and closes
such a connection after receive_timeout (the body's deadline is the app's), and gives the app a
way to reset a connection whose client stopped reading (`DROP_CONNECTION` in the scope). On SIGTERM,
`GatewayServer` starts the gateway's drain before uvicorn stops accepting; uvicorn's own
graceful timeout is set a little beyond the drain, so the drain's error events go out before
uvicorn would cancel anything.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import sys
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from scaleserve.gateway.deadlines import DROP_CONNECTION
from scaleserve.gateway.errors import RequestTimeoutError
from scaleserve.gateway.settings import GatewaySettings

DRAIN_MARGIN_S = 5.0  # uvicorn's graceful timeout beyond the drain
RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST
_BODY_408 = RequestTimeoutError("the request headers did not arrive in time").body()
TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    + f"content-length: {len(_BODY_408)}\r\n\r\n".encode()
    + _BODY_408
)


def header_deadline_protocol(timeout: float) -> type[HttpToolsProtocol]:
    class HeaderDeadlineProtocol(HttpToolsProtocol):
        _headers_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()
            scope = cast(dict[str, Any], self.scope)  # uvicorn types it without our key
            scope[DROP_CONNECTION] = self._drop  # before the request's task first runs

        def _drop(self) -> None:
            if self.cycle is not None:
                self.cycle.disconnected = True  # uvicorn: not "returned without completing"
            sock = self.transport.get_extra_info("socket")
            if sock is not None:  # a reset: the kernel drops what it queued for the client too
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET_ON_CLOSE)
            self.transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._headers_timer is None:
                self._headers_timer = self.loop.call_later(timeout, self._expired)

        def _disarm(self) -> None:
            if self._headers_timer is not None:
                self._headers_timer.cancel()
                self._headers_timer = None

        def _expired(self) -> None:
            self._headers_timer = None
            if not self.transport.is_closing():
                self.transport.write(TIMEOUT_408)
                self.transport.close()

    return HeaderDeadlineProtocol


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_exit: Any) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            # a signal handler: hand the drain to the loop rather than run it here
            asyncio.get_event_loop().call_soon_threadsafe(self._on_exit)
        super().handle_exit(sig, frame)


def serve(app: Any, settings: GatewaySettings, sockets: list[socket.socket] | None = None) -> None:
    """Run `app` until SIGTERM and its drain end; on `sockets` (a worker's share of the pod's
    listening socket) or on settings.host:port."""
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=header_deadline_protocol(settings.receive_timeout),
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.drain_timeout + DRAIN_MARGIN_S),
        timeout_keep_alive=int(settings.keep_alive),
        limit_concurrency=settings.max_connections,
        backlog=settings.backlog,
        lifespan="on",
    )
    # uvicorn re-raises the signal it shut down for once it is done; by then the gateway has
    # drained, so that second delivery ends the process with status 0, not "killed by SIGTERM".
    signal.signal(signal.SIGTERM, _exit_ok)
    GatewayServer(config, app.gateway.begin_drain).run(sockets)


def _exit_ok(sig: int, frame: FrameType | None) -> None:
    sys.exit(0)
