"""Putting alerts out: the alerts topic first, then the ``alerts`` table, nothing lost on the way.

Every alert record (schemas/avro/alert_event.avsc: the monitor's series and SLA alerts, the dispatch
agents' provider switches and budget thresholds) goes to ``herald.ops.alerts.v1`` (Avro, acks=all,
idempotent producer, keyed ``tenant/channel/provider``) and, once the broker has it, to the
``alerts`` table. Records wait in two queues until each step succeeded, so a broker or warehouse
hiccup is retried by the next :meth:`AlertPublisher.flush` instead of dropping an alert; a retry may
repeat a record on the topic (consumers fold by ``alert_id`` and ``status``; so does the table).
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaError, Producer

from projections.rows import ALERT_COLUMNS, alert_row
from projections.warehouse import Warehouse
from schemas.codec import AvroCodec


class AlertPublisher:
    def __init__(self, bootstrap: str, topic: str, warehouse: Warehouse | None) -> None:
        self.topic = topic
        self.warehouse = warehouse
        self._codec = AvroCodec.for_contract("alert_event")
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "compression.type": "lz4",
            }
        )
        self._to_topic: list[dict[str, Any]] = []  # decided, not yet acknowledged by the broker
        self._to_table: list[dict[str, Any]] = []  # on the topic, not yet in the table
        self._errors: list[str] = []
        self.published: list[dict[str, Any]] = []

    @property
    def pending(self) -> int:
        return len(self._to_topic) + len(self._to_table)

    @property
    def unsent(self) -> bool:
        """Records not on the topic yet (a checkpoint must not get ahead of them)."""
        return bool(self._to_topic)

    def add(self, records: list[dict[str, Any]]) -> None:
        self._to_topic.extend(records)

    def flush(self) -> None:
        """Put queued records on the topic, then in the table; raise (keeping them queued) on failure."""
        if self._to_topic:
            self._errors.clear()
            for record in self._to_topic:
                key = f"{record['tenant_id']}/{record['channel']}/{record['provider']}".encode()
                self._producer.produce(
                    self.topic,
                    key=key,
                    value=self._codec.encode(record),
                    headers=[("alert_status", str(record["status"]).encode())],
                    on_delivery=self._on_delivery,
                )
            remaining = self._producer.flush(30)
            if remaining or self._errors:
                raise RuntimeError(f"alerts not acknowledged: {self._errors or remaining}")
            self.published.extend(self._to_topic)
            self._to_table.extend(self._to_topic)
            self._to_topic = []
        if self._to_table and self.warehouse is not None:
            self.warehouse.insert("alerts", [alert_row(r) for r in self._to_table], list(ALERT_COLUMNS))
        self._to_table = []

    def close(self) -> None:
        self._producer.flush(10)

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))
