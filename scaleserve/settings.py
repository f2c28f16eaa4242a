"""The one settings loader of the engine, the gateway and the operator (pydantic-settings).

Each component declares a frozen `Settings` model whose fields are its flags (`--some-flag`,
parsed by its argparse parser) and its `SCALESERVE_<COMPONENT>_SOME_FLAG` variables. `load`
merges them: a flag that was given wins over the environment, which wins over the default
(empty variables count as unset). An invalid value raises the component's own error type,
naming the field and where the value came from, e.g.
`port (SCALESERVE_ENGINE_PORT='http'): input should be a valid integer`.
Building a model directly (tests, benchmarks) takes explicit values and defaults only.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Self

from pydantic import BeforeValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list | tuple):
        return tuple(s.strip() for s in value if s.strip())
    return value


def _json_object(value: Any) -> Any:
    if isinstance(value, str):
        return json.loads(value) if value.strip() else {}
    return value


# `a, b` or a sequence (a repeated flag) -> ("a", "b"); NoDecode: the environment's text is
# not JSON
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list)]
JsonObject = Annotated[dict[str, Any], NoDecode, BeforeValidator(_json_object)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
OptionalStr = Annotated[str | None, BeforeValidator(lambda v: v or None)]  # "": unset
Port = Annotated[int, Field(gt=0, lt=65536)]
PortOrOff = Annotated[int, Field(ge=0, lt=65536)]  # 0: the listener is off


class Settings(BaseSettings):
    """Base of the components' settings; a subclass sets `env_prefix` and `settings_error`."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_ignore_empty=True)
    settings_error: ClassVar[type[ValueError]] = ValueError
    flag_names: ClassVar[Mapping[str, str]] = {}  # field -> its flag where not --field-name

    def __init__(self, _origin: Mapping[str, str] | None = None, **values: Any) -> None:
        """`_origin`: field -> where its value came from, for error messages (`load`)."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise self.settings_error(_describe(exc, _origin or {})) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment comes in through `load` only

    @classmethod
    def load(
        cls,
        flags: argparse.Namespace | Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> Self:
        """Flags (None: not given) over the environment (default os.environ) over defaults."""
        given = vars(flags) if isinstance(flags, argparse.Namespace) else dict(flags or {})
        given = {k: v for k, v in given.items() if k in cls.model_fields and v is not None}
        found = _Environment(cls, os.environ if environ is None else environ)()
        prefix = cls.model_config.get("env_prefix", "")
        origin = {name: f"{cls.flag(name)} or {prefix}{name.upper()}" for name in cls.model_fields}
        origin |= {name: f"{prefix}{name.upper()}={raw!r}" for name, raw in found.items()}
        origin |= {name: f"{cls.flag(name)}={value!r}" for name, value in given.items()}
        return cls(_origin=origin, **(found | given))

    @classmethod
    def flag(cls, name: str) -> str:
        return cls.flag_names.get(name, "--" + name.replace("_", "-"))


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (a test's dict)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self.environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self.environ, self.case_sensitive, self.env_ignore_empty)


def _describe(exc: ValidationError, origin: Mapping[str, str]) -> str:
    """`field (where it came from): problem`, one per invalid field."""
    problems = []
    for error in exc.errors(include_url=False):
        ctx = error.get("ctx") or {}
        problem = str(ctx["error"]) if error["type"] == "value_error" else error["msg"]
        problem = problem[:1].lower() + problem[1:]
        if not error["loc"]:  # a check across fields names them itself
            problems.append(problem)
            continue
        name = str(error["loc"][0])
        where = f" ({origin[name]})" if name in origin else ""
        problems.append(f"{name}{where}: {problem}")
    return "; ".join(problems)
