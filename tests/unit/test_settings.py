"""The one settings loader: flag over environment over default, and errors naming the source."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from scaleserve.engine.errors import SettingsError as EngineSettingsError
from scaleserve.engine.settings import EngineSettings
from scaleserve.engine.settings import add_arguments as engine_arguments
from scaleserve.gateway.settings import GatewaySettings
from scaleserve.gateway.settings import SettingsError as GatewaySettingsError
from scaleserve.gateway.settings import add_arguments as gateway_arguments
from scaleserve.operator import cli as operator_cli
from scaleserve.operator.errors import SettingsError as OperatorSettingsError
from scaleserve.operator.settings import OperatorSettings
from scaleserve.settings import Settings

pytestmark = pytest.mark.unit


def engine_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    engine_arguments(parser)
    return parser.parse_args(argv)


def gateway_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    gateway_arguments(parser)
    return parser.parse_args(argv)


def operator_flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    operator_cli.register(parser.add_subparsers())
    return parser.parse_args(["operator", *argv])


# model, its flags parser, a flag and its value, the field, its variable and default
PRECEDENCE = [
    (EngineSettings, engine_flags, ("--port", "7"), "port", "SCALESERVE_ENGINE_PORT", 50051),
    (GatewaySettings, gateway_flags, ("--max-queue", "7"), "max_queue",
     "SCALESERVE_GATEWAY_MAX_QUEUE", 1024),
    (OperatorSettings, operator_flags, ("--reconcile-interval", "7"), "reconcile_interval_s",
     "SCALESERVE_OPERATOR_RECONCILE_INTERVAL_S", 10.0),
]  # fmt: skip


@pytest.mark.parametrize(("model", "flags", "argv", "field", "variable", "default"), PRECEDENCE)
def test_a_flag_wins_over_the_environment_which_wins_over_the_default(
    model: type[Settings],
    flags: Any,
    argv: tuple[str, ...],
    field: str,
    variable: str,
    default: float,
) -> None:
    model_dir = {"SCALESERVE_ENGINE_MODEL": "/models/tiny"}  # the engine's one required setting
    assert getattr(model.load(flags(*argv), {**model_dir, variable: "5"}), field) == 7
    assert getattr(model.load(flags(), {**model_dir, variable: "5"}), field) == 5
    assert getattr(model.load(flags(), model_dir), field) == default


def test_empty_variables_count_as_unset_and_lists_split_on_commas() -> None:
    env = {"SCALESERVE_GATEWAY_REPLICAS": "a:1, b:2", "SCALESERVE_GATEWAY_PORT": ""}
    settings = GatewaySettings.load(gateway_flags(), env)
    assert settings.replicas == ("a:1", "b:2")
    assert settings.port == 8000
    namespaces = {"SCALESERVE_OPERATOR_NAMESPACES": "a,b"}
    assert OperatorSettings.load(operator_flags(), namespaces).namespaces == ("a", "b")
    repeated = operator_flags("--namespace", "x", "--namespace", "y")
    assert OperatorSettings.load(repeated, namespaces).namespaces == ("x", "y")


@pytest.mark.parametrize(
    ("model", "error", "variable", "value"),
    [
        (EngineSettings, EngineSettingsError, "SCALESERVE_ENGINE_MAX_NUM_SEQS", "many"),
        (EngineSettings, EngineSettingsError, "SCALESERVE_ENGINE_ENABLE_PREFIX_CACHING", "maybe"),
        (GatewaySettings, GatewaySettingsError, "SCALESERVE_GATEWAY_WORKERS", "0"),
        (GatewaySettings, GatewaySettingsError, "SCALESERVE_GATEWAY_ROUTING", "random"),
        (OperatorSettings, OperatorSettingsError, "SCALESERVE_OPERATOR_METRICS_PORT", "http"),
    ],
)
def test_an_invalid_variable_is_named_with_its_value_in_the_component_error(
    model: type[Settings], error: type[Exception], variable: str, value: str
) -> None:
    env = {"SCALESERVE_ENGINE_MODEL": "m", variable: value}
    with pytest.raises(error) as info:
        model.load({}, env)
    field = variable.split("_", 2)[2].lower()
    assert str(info.value).startswith(f"{field} ({variable}={value!r}): ")


def test_an_invalid_flag_is_named_as_the_flag_and_a_missing_one_by_both_names() -> None:
    with pytest.raises(OperatorSettingsError, match=r"^pending_grace_s \(--pending-grace=-1.0\)"):
        OperatorSettings.load(operator_flags("--pending-grace", "-1"), {})
    with pytest.raises(EngineSettingsError, match=r"model \(--model or SCALESERVE_ENGINE_MODEL\)"):
        EngineSettings.load(engine_flags(), {})
