"""Static replicas from flags/env, plus an optional file that is re-read when it changes."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from scaleserve.gateway.pool import Endpoint, ReplicaPool
from scaleserve.gateway.settings import GatewaySettings

log = logging.getLogger("scaleserve.gateway.discovery")


def _mtime(path: str) -> int:
    return Path(path).stat().st_mtime_ns


class StaticDiscovery:
    def __init__(self, pool: ReplicaPool, settings: GatewaySettings, poll_s: float = 2.0) -> None:
        self._pool = pool
        self._settings = settings
        self._poll_s = poll_s

    def apply(self) -> tuple[str, ...]:
        addresses = self._settings.static_replicas()
        self._pool.set_endpoints(Endpoint(a) for a in addresses)
        return addresses

    async def run(self) -> None:
        addresses = self.apply()
        log.info("static replicas: %s", ", ".join(addresses) or "(none)")
        path = self._settings.replicas_file
        if not path:
            return
        mtime = await asyncio.to_thread(_mtime, path)
        while True:
            await asyncio.sleep(self._poll_s)
            try:
                now = await asyncio.to_thread(_mtime, path)
                if now != mtime:
                    mtime = now
                    log.info("replicas file changed: %s", ", ".join(self.apply()))
            except (OSError, ValueError) as exc:
                log.warning("cannot read replicas file %s: %s", path, exc)
