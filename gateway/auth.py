"""Optional API keys: a file with one key per line, or a mounted Secret (one key per file).

Keys are re-read when the file or directory changes (a rotated Secret: the kubelet swaps the
volume's files), checked at most once per `poll_s` when a request needs them: one stat call.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from pathlib import Path

from scaleserve.gateway.errors import UnauthorizedError

log = logging.getLogger("scaleserve.gateway")


def load_keys(path: str) -> frozenset[str]:
    """Keys from a file (one per line, # comments) or from every regular file of a directory."""
    if not path:
        return frozenset()
    source = Path(path)
    texts: list[str] = []
    if source.is_dir():  # a Secret volume: skip its ..data links and hidden entries
        texts = [
            p.read_text()
            for p in sorted(source.iterdir())
            if not p.name.startswith(".") and p.is_file()
        ]
    else:
        texts = [source.read_text()]
    keys = {line.split("#", 1)[0].strip() for text in texts for line in text.splitlines()}
    keys.discard("")
    if not keys:
        raise ValueError(f"no API keys found in {path}")
    return frozenset(keys)


def signature(path: str) -> tuple[int, ...]:
    """Changes whenever the key file (or any file of a key directory) is replaced or edited."""
    source = Path(path)
    paths = [source]
    if source.is_dir():
        paths += sorted(p for p in source.iterdir() if not p.name.startswith("."))
    result: list[int] = []
    for p in paths:
        try:
            st = os.stat(p)  # follows the Secret volume's ..data links to the current files
        except OSError:
            continue
        result += (st.st_ino, st.st_mtime_ns, st.st_size)
    return tuple(result)


class ApiKeys:
    def __init__(self, keys: frozenset[str], path: str = "", poll_s: float = 1.0) -> None:
        self._keys = tuple(k.encode() for k in keys)
        self._path = path
        self._poll_s = poll_s
        self._next_poll = time.monotonic() + poll_s
        self._signature = signature(path) if path else ()

    @classmethod
    def from_path(cls, path: str, poll_s: float = 1.0) -> ApiKeys:
        return cls(load_keys(path), path, poll_s)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now < self._next_poll:
            return
        self._next_poll = now + self._poll_s
        current = signature(self._path)
        if current == self._signature:
            return
        try:
            keys = load_keys(self._path)
        except (OSError, ValueError) as exc:  # mid-swap or emptied: keep the keys we have
            log.warning("API keys not reloaded: %s", exc)
            return
        self._signature = current
        self._keys = tuple(k.encode() for k in keys)
        log.info("API keys reloaded from %s (%d keys)", self._path, len(keys))

    def check(self, authorization: str | None) -> None:
        if self._path:
            self._reload_if_changed()
        if not self._keys:
            return
        if not authorization:
            raise UnauthorizedError(
                "missing API key: send it as 'Authorization: Bearer <key>'", code="missing_api_key"
            )
        scheme, _, token = authorization.partition(" ")
        presented = token.strip().encode()
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(presented, key) for key in self._keys
        ):
            raise UnauthorizedError("incorrect API key provided")
