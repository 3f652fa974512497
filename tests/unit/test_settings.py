"""Configuration: defaults, HERALD_ variables, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from herald.errors import ConfigError
from herald.settings import load_settings, mask_dsn


def test_defaults_put_all_state_under_the_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With only HERALD_DATA_DIR set, the warehouse is embedded chDB inside it."""
    monkeypatch.setenv("HERALD_DATA_DIR", str(tmp_path))
    s = load_settings()
    assert s.warehouse == f"chdb://{(tmp_path / 'warehouse').resolve()}"
    assert s.embedded_warehouse and s.topics.lifecycle == "herald.lifecycle.events.v1"


def test_namespace_prefixes_topics_and_consumer_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """A namespace keeps environments apart on a shared cluster."""
    monkeypatch.setenv("HERALD_NAMESPACE", "staging")
    s = load_settings()
    assert s.topics.lifecycle == "staging.herald.lifecycle.events.v1"
    assert s.topics.consumer_group == "staging.herald"
    assert s.topics.sink_group == "staging.herald-warehouse"


def test_bad_value_names_the_variable_and_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid variable is reported as HERALD_<NAME>: reason (got value)."""
    monkeypatch.setenv("HERALD_PARTITIONS", "zero")
    monkeypatch.setenv("HERALD_WAREHOUSE_DSN", "postgres://x")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "HERALD_PARTITIONS" in message and "'zero'" in message
    assert "HERALD_WAREHOUSE_DSN: Value error, must start with chdb://, http:// or https://" in message


def test_settings_are_frozen() -> None:
    """Nothing can change settings after they are built."""
    s = load_settings()
    with pytest.raises(Exception, match="frozen"):
        s.partitions = 9  # type: ignore[misc]


def test_dsn_passwords_are_masked() -> None:
    """Passwords never reach logs."""
    assert mask_dsn("https://ops:s3cret@ch.example:8443/herald") == "https://ops:***@ch.example:8443/herald"
    assert mask_dsn("chdb:///data/warehouse") == "chdb:///data/warehouse"
