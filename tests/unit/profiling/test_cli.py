"""`scaleserve profile`'s arguments: modes, validation, the estimate without its extra, and
`--layouts` on the committed reference profiles."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scaleserve.cli import build_parser, main
from scaleserve.profiling.cli import int_list, token_range

pytestmark = pytest.mark.unit

REFERENCES = Path(__file__).resolve().parents[3] / "profiles"


def test_a_mode_is_required_and_modes_exclude_each_other() -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["profile", "--gpu", "cpu"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["profile", "--estimate", "--url", "http://x"])
    assert exc.value.code == 2


def test_lists_and_ranges_are_checked_when_parsed() -> None:
    assert int_list("1,8, 32") == (1, 8, 32)
    assert token_range("10:250") == (10, 250)
    parser = build_parser()
    for bad in (["--concurrency", "1,x"], ["--concurrency", "0"], ["--token-ids", "9:3"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(["profile", "--url", "http://x", *bad])
        assert exc.value.code == 2


def test_the_defaults_of_an_estimate() -> None:
    args = build_parser().parse_args(["profile", "--estimate", "--model", "m", "--gpu", "g"])
    assert (args.input_tokens, args.output_tokens) == (1024, 256)
    assert args.backend_version == "0.24.0"
    assert args.startup_seconds is None
    assert args.max_concurrency == 2048


def test_the_estimate_without_its_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("aiconfigurator", "aiconfigurator.cli", "aiconfigurator.cli.api"):
        monkeypatch.setitem(sys.modules, name, None)  # as on a machine without the extra
    code = main(["profile", "--estimate", "--model", "m", "--gpu", "h200_sxm"])
    assert code == 2
    assert "pip install -r requirements/estimate.txt" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--estimate", "--gpu", "h200_sxm"], "--estimate needs --model and --gpu"),
        (["--url", "http://127.0.0.1:9", "--gpu", "cpu"], "--startup-seconds"),
        (
            [
                "--url",
                "http://x",
                "--gpu",
                "cpu",
                "--startup-seconds",
                "1",
                "--tensor-parallel",
                "1,2",
            ],
            "one degree",
        ),
    ],
)
def test_missing_or_contradictory_options_are_refused_by_name(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profile", *argv]) == 2
    assert message in capsys.readouterr().err


def test_layouts_reads_a_reference_profile(capsys: pytest.CaptureFixture[str]) -> None:
    path = REFERENCES / "llama-3.1-8b.h200_sxm.yaml"
    assert main(["profile", "--layouts", str(path), "--gpus", "8"]) == 0
    out = capsys.readouterr().out
    assert "8 x TP1 overtakes 1 x TP8 at 151 requests in flight" in out
    assert "lowest request latency from 1 requests in flight: 1 x TP8" in out


def test_layouts_names_the_bad_field_of_a_malformed_profile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    text = (REFERENCES / "llama-3.1-8b.h200_sxm.yaml").read_text()
    bad.write_text(text.replace("startupSeconds: 217.7", "startupSeconds: -1", 1))
    assert main(["profile", "--layouts", str(bad)]) == 2
    assert "tensorParallel.0.startupSeconds" in capsys.readouterr().err
