"""Optional API keys: a file with one key per line, or a mounted Secret (one key per file)."""

from __future__ import annotations

import hmac
from pathlib import Path

from scaleserve.gateway.errors import UnauthorizedError


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


class ApiKeys:
    def __init__(self, keys: frozenset[str]) -> None:
        self._keys = tuple(k.encode() for k in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def check(self, authorization: str | None) -> None:
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
