"""The CLI's file-checking commands: clear errors that name the file and the field, exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import cli
from herald.errors import ConfigError

EXAMPLES = Path(cli.__file__).parent / "policies" / "examples"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.app, list(args))
    return result.exit_code, result.output


def test_check_policies_accepts_the_examples_and_prints_their_versions() -> None:
    """Valid guardrails and segments files pass with a version and the segment names."""
    code, output = run(
        "check-policies",
        "--guardrails",
        str(EXAMPLES / "guardrails.yaml"),
        "--segments",
        str(EXAMPLES / "segments.yaml"),
    )
    assert code == 0, output
    assert "guardrails.yaml: ok, version " in output and "gold_customers_es" in output


def test_check_policies_names_file_field_and_reason_for_every_problem(tmp_path: Path) -> None:
    """A bad policy lists each problem as file: field: reason and exits 2."""
    bad = tmp_path / "guardrails.yaml"
    text = (EXAMPLES / "guardrails.yaml").read_text()
    bad.write_text(
        text.replace("price_micros: 7500", "price_micros: -3").replace(
            "open_error_rate: 0.5", "open_error_rate: 1.5"
        )
    )
    with pytest.raises(ConfigError) as err:  # cli.main prints a HeraldError and exits 2
        CliRunner().invoke(cli.app, ["check-policies", "--guardrails", str(bad)], catch_exceptions=False)
    message = str(err.value)
    assert f"{bad}: providers.sms[0].price_micros: Input should be greater than or equal to 0" in message
    assert f"{bad}: breaker.open_error_rate: Input should be less than or equal to 1" in message


def test_check_policies_without_files_says_what_to_pass() -> None:
    """Calling it with nothing to check is a usage error with a hint."""
    code, output = run("check-policies")
    assert code == 2 and "--guardrails PATH" in output
