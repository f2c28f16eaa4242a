"""The `developer` role for chat templates that do not know it, handled as vLLM's server does:
developer messages become system messages, merged into one leading system message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def supports_developer(chat_template: str) -> bool:
    return '"developer"' in chat_template or "'developer'" in chat_template


def developer_as_system(
    messages: Sequence[Mapping[str, Any]], chat_template: str
) -> Sequence[Mapping[str, Any]]:
    if not any(m.get("role") == "developer" for m in messages) or supports_developer(chat_template):
        return messages
    converted = [{**m, "role": "system"} if m.get("role") == "developer" else m for m in messages]
    systems = [i for i, m in enumerate(converted) if m.get("role") == "system"]
    if systems == [0][: len(systems)]:
        return converted  # at most one system message, already first
    contents = [str(converted[i].get("content") or "") for i in systems]
    merged = {"role": "system", "content": "\n\n".join(c for c in contents if c)}
    return [merged, *(m for m in converted if m.get("role") != "system")]
