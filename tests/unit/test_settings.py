"""Configuration: defaults, HERALD_ variables, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from herald.errors import ConfigError
from herald.settings import load_settings, mask_dsn
from streams.ingest_watch import ingest_health_config


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


def test_api_rate_limits_default_to_20_per_second_burst_60_and_two_sql_queries() -> None:
    """The per-key API limits have safe defaults; 0 turns the rate limit off."""
    s = load_settings()
    assert (s.api_rate_per_s, s.api_rate_burst, s.api_sql_concurrency_per_key) == (20.0, 60, 2)
    assert load_settings(api_rate_per_s=0).api_rate_per_s == 0


def test_api_rate_limits_out_of_bounds_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A negative rate, an empty burst and no /sql slot at all are configuration errors."""
    monkeypatch.setenv("HERALD_API_RATE_PER_S", "-1")
    monkeypatch.setenv("HERALD_API_RATE_BURST", "0")
    monkeypatch.setenv("HERALD_API_SQL_CONCURRENCY_PER_KEY", "0")
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "HERALD_API_RATE_PER_S" in message and "HERALD_API_RATE_BURST" in message
    assert "HERALD_API_SQL_CONCURRENCY_PER_KEY" in message


def test_ingest_alerts_default_to_a_60_s_stall_and_a_50k_lag(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ingest alert thresholds have defaults, reach the monitor's rules, and refuse zero."""
    s = load_settings()
    assert (s.ingest_stall_s, s.ingest_lag_alert) == (60.0, 50_000)
    config = ingest_health_config(load_settings(ingest_stall_s=3, ingest_lag_alert=10))
    assert (config.stall_after_ms, config.lag_alert) == (3_000, 10)
    monkeypatch.setenv("HERALD_INGEST_STALL_S", "0")
    monkeypatch.setenv("HERALD_INGEST_LAG_ALERT", "0")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "HERALD_INGEST_STALL_S" in str(err.value) and "HERALD_INGEST_LAG_ALERT" in str(err.value)
