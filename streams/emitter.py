"""The emitter: how services put lifecycle events on the log.

Validates against the contract (Avro types, the semantic rules and each field's bound, so a service
learns at emit time of an event ingest would dead-letter), encodes with the codec, and produces
with ``acks=all`` and idempotence on, keyed by notification id. Errors are reported, never
swallowed: ``emit`` raises EmitError for a bad event, and delivery failures are collected and
raised by ``flush``.

    emitter = Emitter("127.0.0.1:9092")
    emitter.emit({"event_id": ..., "event_type": "SENT", ...})
    emitter.flush()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Producer

from herald.errors import EmitError
from schemas.codec import AvroCodec, lifecycle_codec
from schemas.contract import contract_violations, request_problem
from streams.topics import LIFECYCLE


class Emitter:
    def __init__(
        self,
        bootstrap: str,
        topic: str = LIFECYCLE,
        codec: AvroCodec | None = None,
        max_event_bytes: int = 65_536,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.codec = codec or lifecycle_codec()
        self.max_event_bytes = max_event_bytes
        self._clock = clock
        self._errors: list[str] = []
        self.delivered = 0
        config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 500_000,
            "message.max.bytes": 4_194_304,
        }
        config.update(producer_config or {})
        self._producer = Producer(config)

    def encode(self, event: Mapping[str, Any]) -> bytes:
        """Validate and encode one event; raise EmitError naming every problem."""
        problems = contract_violations(event, self._clock())
        if problems:
            raise EmitError(f"event {event.get('event_id')!r} breaks the contract: " + "; ".join(problems))
        data = self.codec.encode(event)
        if len(data) > self.max_event_bytes:
            raise EmitError(
                f"event {event.get('event_id')!r} is {len(data)} bytes; the limit is {self.max_event_bytes}"
            )
        return data

    def emit(self, event: Mapping[str, Any]) -> None:
        self.emit_raw(str(event["notification_id"]).encode(), self.encode(event))

    def emit_raw(
        self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Produce bytes as they are (the simulator uses it to inject bad input)."""
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=value,
                    key=key,
                    headers=cast(Any, headers),
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain, then retry
            except KafkaException as exc:
                raise EmitError(f"cannot produce to {self.topic}: {exc}") from exc
        self._producer.poll(0)

    def emit_request(self, request: Mapping[str, Any]) -> None:
        """Produce a DispatchRequested record (an emitter built with ``request_codec()`` on the
        dispatch requests topic), keyed by tenant so one worker owns the tenant's limits."""
        problem = request_problem(request)
        if problem:
            raise EmitError(f"request {request.get('request_id')!r} is invalid: {problem}")
        self.emit_raw(str(request["tenant_id"]).encode(), self.codec.encode(request))

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is None:
            self.delivered += 1
        else:
            self._errors.append(str(err))

    def close(self, timeout: float = 30.0) -> None:
        """Deliver what is queued and release the producer's connections."""
        self._producer.flush(timeout)
        self._producer.close()

    def flush(self, timeout: float = 60.0) -> int:
        """Wait for every produced event to be acknowledged; raise EmitError if any was not."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise EmitError(f"{remaining} events not acknowledged by the broker within {timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise EmitError(f"{len(errors)} events failed delivery; first: {errors[0]}")
        return self.delivered
