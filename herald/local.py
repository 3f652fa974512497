"""Where the CLI finds Kafka and the warehouse: the configured ones, or the local ones under data_dir."""

from __future__ import annotations

import httpx

from herald.errors import HeraldError, KafkaUnavailableError
from herald.settings import Settings
from infra.local_kafka import LocalKafka


def local_kafka(settings: Settings) -> LocalKafka:
    return LocalKafka(settings.data_dir / "kafka", settings.kafka_port)


def bootstrap_servers(settings: Settings, start: bool = False) -> tuple[str, bool]:
    """(bootstrap, started_here): HERALD_KAFKA_BOOTSTRAP, else the local broker (started if asked)."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap, False
    broker = local_kafka(settings)
    if broker.running():
        return broker.bootstrap, False
    if not start:
        raise KafkaUnavailableError(
            "no Kafka: set HERALD_KAFKA_BOOTSTRAP, or start the local broker with `cli.py kafka up`"
        )
    return broker.start(), True


def query_endpoint(
    api: str, query: str, timeout: float = 60, api_key: str | None = None
) -> tuple[list[str], list[list[object]]]:
    """Run a read-only query through a worker's SQL endpoint (with a global key when it has keys)."""
    headers = {"X-Api-Key": api_key} if api_key else {}
    response = httpx.post(f"{api}/sql", json={"query": query}, timeout=timeout, headers=headers)
    if response.status_code != 200:
        raise HeraldError(f"SQL endpoint refused the query: {response.json().get('detail', response.text)}")
    body = response.json()
    return body["columns"], body["rows"]
