"""A request body decoded into its typed model (request_models.py), and msgspec's complaints
mapped to OpenAI's 400: the offending field as `param`, `invalid_type` or `invalid_value`.

`param` names the top-level field, as OpenAI's API and vLLM's server do, except inside
`messages` (down to the message's field: `messages[2].content`) and `tool_choice` (its whole
path), where vLLM names the nested field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

from scaleserve.gateway.errors import InvalidRequestError

T = TypeVar("T")

# "Expected `int`, got `str` - at `$.n`"; "... - at `key` in `$.logit_bias`"
AT = re.compile(r" - at `(?:key` in `)?\$(?P<path>[^`]*)`$")
MISSING = re.compile(r"Object missing required field `(?P<name>[^`]+)`")
NAME = re.compile(r"[A-Za-z_]\w*")


DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


def decode(source: bytes | Mapping[str, Any], model: type[T]) -> T:
    """`source`: the body's bytes (the server's path) or an already-parsed object."""
    try:
        if isinstance(source, bytes):
            decoder = DECODERS.get(model)
            if decoder is None:  # built once per model: a decoder skips the type lookup
                decoder = DECODERS[model] = msgspec.json.Decoder(model)
            return decoder.decode(source)  # type: ignore[no-any-return]
        return msgspec.convert(source, model, str_keys=True)
    except msgspec.ValidationError as exc:
        raise invalid_field(str(exc)) from None
    except msgspec.DecodeError as exc:
        if not source:
            raise InvalidRequestError("request body is empty; expected a JSON object") from None
        raise InvalidRequestError(f"request body is not valid JSON: {exc}") from None


def parse_json(body: bytes) -> dict[str, Any]:
    """A body that must be a JSON object, untyped."""
    return decode(body, dict[str, Any])


def invalid_field(error: str) -> InvalidRequestError:
    """msgspec's ValidationError text as the 400 naming the field."""
    at = AT.search(error)
    detail = error[: at.start()] if at else error
    path = at["path"].lstrip(".") if at else ""
    missing = MISSING.match(detail)
    if missing:
        path = f"{path}.{missing['name']}".lstrip(".")
    if not path:  # only the body itself is checked at the root
        return InvalidRequestError("request body must be a JSON object")
    if missing:
        code, what = "missing_required_parameter", "Missing"
    elif detail.startswith("Expected `") and ", got `" in detail:
        code, what = "invalid_type", "Invalid type for"
    else:
        code, what = "invalid_value", "Invalid value for"
    return InvalidRequestError(f"{what} '{path}': {detail}", param=param_of(path), code=code)


def param_of(path: str) -> str:
    """`messages[0].content[1].text` -> `messages[0].content`; `stop[2]` -> `stop`."""
    if path.startswith("tool_choice"):
        return path
    head, _, rest = path.partition(".")
    if head.startswith("messages["):
        field = NAME.match(rest)
        return f"{head}.{field.group()}" if field else head
    top = NAME.match(path)
    return top.group() if top else path
