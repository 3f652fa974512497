"""The one frozen settings object, built from ``HERALD_*`` environment variables in cli.py.

Nothing below cli.py reads the environment: settings flow down as arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from herald.errors import ConfigError
from herald.redact import is_secret_name, redact
from streams.topics import Topics
from web.limits import DEFAULT_MAX_BODY_BYTES

BUNDLED_GUARDRAILS = Path(__file__).resolve().parents[1] / "policies" / "examples" / "guardrails.yaml"
"""The example guardrails policy shipped with the package: what a worker loads when none is configured."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HERALD_", frozen=True, extra="forbid")

    data_dir: Path = Field(
        Path(".herald"), description="All local state: broker logs, warehouse, worker tables."
    )
    kafka_bootstrap: str | None = Field(
        None, description="host:port list of a running Kafka; unset = the local broker under data_dir."
    )
    kafka_port: int = Field(9092, ge=1, le=65535, description="Port of the local broker.")
    warehouse_dsn: str | None = Field(
        None,
        description="chdb:///path (embedded) or http(s)://user:pass@host:port/db; unset = chDB in data_dir.",
    )
    warehouse_reader_dsn: str | None = Field(
        None,
        description="http(s)://herald_reader:pass@host:port/db: the user people's SQL runs as on a "
        "ClickHouse server (cli.py access-sql creates it); unset = the warehouse DSN's user, read-only "
        "per request.",
    )
    namespace: str = Field(
        "",
        pattern=r"^([a-z0-9][a-z0-9_\-]{0,39})?$",
        description="Prefix of topic names and the consumer group, for environments sharing a cluster.",
    )
    partitions: int = Field(4, ge=1, le=1024, description="Partitions of topics Herald creates.")
    replication_factor: int = Field(1, ge=1, le=5)
    batch_max_events: int = Field(
        10_000, ge=1, le=500_000, description="Largest batch the ingest agent writes."
    )
    batch_within_s: float = Field(0.25, gt=0, le=30, description="Longest wait to fill an ingest batch.")
    dedup_horizon_s: int = Field(86_400, ge=60, description="How long an event id is remembered for dedup.")
    dedup_max_ids: int = Field(2_000_000, ge=1_000, description="Memory bound of the dedup set per worker.")
    max_event_bytes: int = Field(65_536, ge=512, description="Events larger than this are dead-lettered.")
    faults: str = Field(
        "",
        max_length=500,
        description="Fault injection for the chaos suite and crash tests (herald/faults.py); empty in "
        "production.",
    )
    session_timeout_s: float = Field(
        10.0, ge=6, le=300, description="Consumer group session: how soon a dead worker's partitions move."
    )
    api_host: str = "127.0.0.1"
    api_port: int = Field(8740, ge=0, le=65535, description="Port of the worker's web/API server; 0 = any.")
    api_max_body_bytes: int = Field(
        DEFAULT_MAX_BODY_BYTES,
        ge=4_096,
        le=16 * 1024 * 1024,
        description="Largest request body the API reads; larger ones get 413.",
    )
    warehouse_share_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Loopback port where the embedded warehouse's owner serves other workers.",
    )
    api_query_timeout_s: float = Field(
        30.0, gt=0, le=600, description="Time limit of one API warehouse query (the engine cancels it)."
    )
    sql_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Time limit of one /sql or cli.py sql query (the engine cancels it)."
    )
    sql_max_rows: int = Field(100_000, ge=1, le=10_000_000, description="Most rows one /sql query returns.")
    sql_max_memory_bytes: int = Field(
        1 << 30, ge=1 << 20, le=1 << 40, description="Memory one /sql query may use in the engine."
    )
    sql_max_bytes_to_read: int = Field(
        20 << 30, ge=1 << 20, le=1 << 50, description="Bytes one /sql query may read from the tables."
    )
    api_keys_file: Path | None = Field(
        None,
        description="YAML file of API keys (SHA-256 hashes, per tenant and role; see web/auth.py); "
        "unset = /api/v1 answers 503 and /sql stays open, read-only over every tenant (the API binds to "
        "loopback by default).",
    )
    api_rate_per_s: float = Field(
        20.0,
        ge=0,
        le=10_000,
        description="Requests per second each API key may make on /api/v1 and /sql (a token bucket per key); "
        "beyond it the API answers 429 with Retry-After; 0 = no per-key limit.",
    )
    api_rate_burst: int = Field(
        60, ge=1, le=100_000, description="Requests a key may make at once before its rate applies."
    )
    api_sql_concurrency_per_key: int = Field(
        2, ge=1, le=64, description="/sql queries one key may have running at once (more: 429)."
    )
    guardrails_file: Path | None = Field(
        None,
        description="Guardrails policy YAML (providers, routing, limits, budgets, SLAs; policies/loader.py) "
        "the worker loads at start (a bad file stops it); unset = the bundled "
        "policies/examples/guardrails.yaml.",
    )
    api_key: SecretStr | None = Field(
        None, description="Key the CLI sends to a worker's API (X-Api-Key) when the worker has a keys file."
    )
    worker_name: str = Field("worker-1", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    providers_file: Path | None = Field(
        None,
        description="JSON/YAML naming the delivery providers' endpoints ({endpoints: {name: {channel, host, "
        "port, url}}}, e.g. the local providers' ready file); unset = no dispatch agent in this worker.",
    )
    experiments_file: Path | None = Field(
        None,
        description="Experiments YAML (policies/examples/experiments.yaml) dispatch assigns; unset = none.",
    )
    segments_file: Path | None = Field(
        None,
        description="Segments YAML the experiments target; unset = policies/examples/segments.yaml.",
    )
    provider_timeout_s: float = Field(5.0, gt=0, le=120, description="Timeout of one provider call.")
    alerts_enabled: bool = Field(
        True, description="Run the alert monitor (one worker of the group leads it)."
    )
    alert_grace_minutes: int = Field(
        60,
        ge=0,
        le=20_160,
        description="Minutes a new series is learned before it may alert (history counts).",
    )
    alert_lateness_s: float = Field(
        15.0, ge=0, le=3600, description="Event-time allowance for late events before a minute is judged."
    )
    alert_history_days: int = Field(
        14, ge=0, le=60, description="Warehouse history a fresh monitor learns from before alerting."
    )
    alert_cooldown_minutes: int = Field(30, ge=0, le=1440, description="Quiet time after a resolved alert.")
    alert_resolve_after_minutes: int = Field(
        5, ge=1, le=240, description="Consecutive normal minutes that resolve an open alert."
    )
    sla_check_s: float = Field(60.0, gt=0, le=3600, description="How often the monitor evaluates the SLAs.")
    experiments_interval_s: float = Field(
        10.0, gt=0, le=3600, description="How often the leading worker recomputes experiment statistics."
    )
    segment_snapshot_s: float = Field(
        300.0, gt=0, le=86_400, description="How often the leading worker snapshots segment membership."
    )
    monitor_interval_s: float = Field(
        1.0, gt=0, le=60, description="How often the monitor looks for closed minutes and judges ingest."
    )
    ingest_stall_s: float = Field(
        60.0,
        ge=1,
        le=86_400,
        description="Seconds ingest may make no progress before it counts as stalled: a worker retrying "
        "one stage that long says degraded on /health, and a lifecycle partition behind with no write "
        "to the warehouse that long raises the monitor's ingest stall alert (critical).",
    )
    ingest_lag_alert: int = Field(
        50_000,
        ge=1,
        le=10**12,
        description="Messages behind on one lifecycle partition above which a lag that grew over the last "
        "5 minutes raises an ingest lag alert (major).",
    )
    public_url: str | None = Field(
        None,
        description="Base URL people reach the dashboard at (alert links); unset = this worker's API URL.",
    )
    runbook_base_url: str | None = Field(
        None,
        description="Where alert runbook links point (docs site / repo blob root); unset = the dashboard's.",
    )
    log_format: Literal["json", "console"] = "json"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("warehouse_dsn", "warehouse_reader_dsn")
    @classmethod
    def _known_scheme(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("chdb", "http", "https"):
            raise ValueError("must start with chdb://, http:// or https://")
        return value

    @property
    def warehouse(self) -> str:
        return self.warehouse_dsn or f"chdb://{(self.data_dir / 'warehouse').resolve()}"

    @property
    def segments(self) -> Path:
        """The segments file to load: ``segments_file``, else the bundled example."""
        return self.segments_file or BUNDLED_GUARDRAILS.with_name("segments.yaml")

    @property
    def guardrails(self) -> Path:
        """The guardrails policy file to load: ``guardrails_file``, else the bundled example."""
        return self.guardrails_file or BUNDLED_GUARDRAILS

    @property
    def embedded_warehouse(self) -> bool:
        return self.warehouse.startswith("chdb:")

    @property
    def topics(self) -> Topics:
        return Topics(self.namespace)

    @property
    def run_dir(self) -> Path:
        return self.data_dir / "run"

    def masked(self) -> dict[str, object]:
        """Settings as a dict safe to log: passwords in DSNs and URLs replaced by ***, the API key too."""
        out = self.model_dump(mode="json")  # SecretStr dumps as **********
        out["warehouse_dsn"] = mask_dsn(self.warehouse)
        for name in ("public_url", "runbook_base_url", "warehouse_reader_dsn"):  # may carry user:password@
            if isinstance(out[name], str):
                out[name] = mask_dsn(out[name])
        return out


def mask_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment; a bad value raises ConfigError naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]  # pydantic-settings accepts field kwargs
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            problems.append(f"HERALD_{field.upper()}: {err['msg']} (got {_shown(field, err.get('input'))})")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None


def _shown(field: str, value: object) -> str:
    """A rejected value as an error may show it: a secret field's hidden, passwords and keys masked."""
    return "***" if is_secret_name(field) else repr(redact(value))
