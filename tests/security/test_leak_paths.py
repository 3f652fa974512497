"""Error messages and settings dumps that end up in the worker's log or on a terminal never show a key
or a password: rejected settings, a keys file with a key pasted in, the CLI's error line."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
import yaml

import cli
from herald.errors import ConfigError
from herald.settings import load_settings
from web.auth import hash_key, load_key_ring, new_key

KEY, _ = new_key("acme-dash", "acme", "viewer")
PASSWORD = "Wh-p4ssw0rd-9c1e"


def config_error(**overrides: object) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(**overrides)
    return str(err.value)


def test_a_rejected_dsn_is_reported_without_its_password() -> None:
    """A DSN of an unknown scheme is named with its value, the password masked."""
    message = config_error(warehouse_dsn=f"postgres://ops:{PASSWORD}@db:5432/herald")
    assert "HERALD_WAREHOUSE_DSN" in message and "postgres://ops:***@db:5432/herald" in message
    assert PASSWORD not in message


def test_a_rejected_api_key_setting_is_not_echoed() -> None:
    """A bad HERALD_API_KEY is named, its value is not."""
    message = config_error(api_key=12345678901234)
    assert "HERALD_API_KEY" in message and "12345678901234" not in message


def test_masked_settings_hide_passwords_in_every_url_and_the_api_key() -> None:
    """masked() is safe to log: no password of a DSN or URL, no API key."""
    settings = load_settings(
        warehouse_dsn=f"https://ops:{PASSWORD}@ch:8443/herald",
        public_url=f"https://viewer:{PASSWORD}@herald.example",
        api_key=KEY,
    )
    shown = str(settings.masked())
    assert PASSWORD not in shown and KEY not in shown
    assert settings.masked()["public_url"] == "https://viewer:***@herald.example"


def test_a_key_pasted_into_the_keys_file_is_not_echoed(tmp_path: Path) -> None:
    """An entry holding the key itself (an unknown field) is refused without repeating the key."""
    entry = {"name": "acme-dash", "tenant": "acme", "role": "viewer", "key_sha256": hash_key(KEY), "key": KEY}
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"keys": [entry]}))
    with pytest.raises(ConfigError) as err:
        load_key_ring(path)
    assert "keys[0].key: Extra inputs are not permitted" in str(err.value)
    assert KEY not in str(err.value)


def test_the_cli_error_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """An error the CLI prints (e.g. a YAML error quoting the line with a key) shows no key."""
    with pytest.raises(typer.Exit):
        cli.fail(ConfigError(f'keys.yaml: not valid YAML: line 3:\n    key_sha256: "{KEY}\n'))
    err = capsys.readouterr().err
    assert err.startswith("error: keys.yaml: not valid YAML") and "hk_***" in err
    assert KEY not in err
