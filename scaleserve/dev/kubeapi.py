"""A minimal HTTPS client for a local API server, authenticated with a client certificate.

`scaleserve dev cluster` uses it to wait for readiness and to create nodes without depending on
the `kubernetes` package; tests and tools use that package's clients.
"""

from __future__ import annotations

import http.client
import json
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass
class KubeApi:
    server: str  # https://127.0.0.1:PORT
    ca_file: Path
    cert_file: Path
    key_file: Path
    timeout_s: float = 10.0
    _ctx: ssl.SSLContext | None = field(default=None, init=False, repr=False)

    def _context(self) -> ssl.SSLContext:
        if self._ctx is None:
            ctx = ssl.create_default_context(cafile=str(self.ca_file))
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
            self._ctx = ctx
        return self._ctx

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, str]:
        url = urlsplit(self.server)
        conn = http.client.HTTPSConnection(
            url.hostname or "127.0.0.1", url.port, timeout=self.timeout_s, context=self._context()
        )
        try:
            payload = None if body is None else json.dumps(body).encode()
            headers = {"Accept": "application/json"}
            if payload is not None:
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        finally:
            conn.close()

    def get_json(self, path: str) -> Any:
        status, text = self.request("GET", path)
        if status != 200:
            raise ApiError(status, text)
        return json.loads(text)

    def create(self, path: str, obj: dict[str, Any], *, exist_ok: bool = False) -> None:
        status, text = self.request("POST", path, obj)
        if status in (200, 201, 202) or (exist_ok and status == 409):
            return
        raise ApiError(status, text)

    def ready(self) -> bool:
        try:
            status, _ = self.request("GET", "/readyz")
        except OSError:
            return False
        return status == 200
