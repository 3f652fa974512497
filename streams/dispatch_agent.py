"""The dispatch agent: send requests from Kafka -> decisions -> provider sends -> lifecycle events.

Requests (``herald.dispatch.requests.v1``, schemas/avro/dispatch_requested.avsc) are keyed by tenant,
so one worker owns all of a tenant's rate and budget state: limits hold exactly with any number of
workers. Each tenant's :class:`dispatch.core.Dispatcher` state (counters, budgets, the request
ledger) is kept in the compacted ``herald.dispatch.state.v1`` topic, written to the same partition
number as the tenant's requests; a worker assigned a partition reads that state partition to its
end before it decides anything.

One batch at a time, per consumer poll:

1. decide every request (a request the ledger knows is not decided again);
2. **write ahead**: the touched tenants' state and the decision events (REQUESTED, SUPPRESSED,
   DISPATCHED) are produced and flushed *before* any provider is called;
3. send the routed requests concurrently (each with its one failover retry) and produce the outcome
   events (SENT, FAILED) and the tenants' state again;
4. flush, then commit the request offsets.

Before 2, before 3 and before the state write of 3, the agent proves it still owns its partitions
(``_fence``, as the warehouse sink does): a worker paused past its session, whose partitions moved,
writes no state over the new owner's and calls no provider; it drops the batch and reads the state
again. A crash before 2 loses nothing (the requests are read again, nothing was counted or sent). A crash
between 2 and 4 leaves ledger entries ``sending``: the next owner sends those again with the same
idempotency key (the notification id), so a provider that honours keys (the HTTP SMS API) sends
once; an SMTP relay may deliver a second copy of a message that was in flight at the crash. Counters
never count a request twice. Deferred requests (rate limits, quiet hours, no healthy provider) wait
in a timer heap and in the ledger, so they survive a restart too.

Circuit breakers are this worker's own view of each provider, shared by its tenants.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from dispatch.core import Attempt, Dispatcher, Step, budget_alert, switch_alert
from dispatch.service import call_provider
from experiments.definitions import LoadedExperiments
from herald.errors import DecodeError
from herald.settings import Settings
from policies.breaker import CircuitBreaker
from policies.engagement import EngagementProfile
from policies.loader import LoadedPolicy
from policies.segments import Segment
from projections.engagement import read_profiles
from projections.warehouse import Warehouse
from providers.base import ProviderAdapter
from schemas.codec import AvroCodec, request_codec
from schemas.contract import request_problem
from streams.alerts import AlertPublisher
from streams.emitter import Emitter
from streams.ingest import dead_letter
from streams.pipeline import DeadLetterSink, FencedError
from streams.sink import source_message

log = structlog.get_logger("herald.dispatch")

AdapterFactory = Callable[[], Mapping[str, ProviderAdapter]]
RECEIPT_FIRST_MS = 500  # first status poll after a send; then doubling, at most every 30 s
RECEIPT_PATIENCE_MS = 10 * 60_000  # no receipt by then: the outcome stays unknown
EXPERIMENTS_REFRESH_S = 5.0  # how often the agent asks the registry for new definitions


@dataclass
class DispatchTotals:
    requests: int = 0
    routed: int = 0
    suppressed: int = 0
    deferred: int = 0
    sent: int = 0
    failed: int = 0
    resumed: int = 0
    receipts: int = 0
    dead_letters: int = 0
    batches: int = 0
    fenced: int = 0
    by_reason: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class DispatchAgent:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        loaded: LoadedPolicy,
        adapters: AdapterFactory,
        *,
        batch_max: int = 500,
        ledger_keep: int = 20_000,
        clock: Callable[[], float] = time.time,
        warehouse: Warehouse | None = None,
        experiments: Callable[[], tuple[LoadedExperiments, Mapping[str, Segment]] | None] | None = None,
        links: tuple[str, str] = ("http://127.0.0.1:8740", "http://127.0.0.1:8740/dashboard/"),
    ) -> None:
        self.settings = settings
        self.loaded = loaded
        self._adapter_factory = adapters
        self._batch_max = batch_max
        self._ledger_keep = ledger_keep
        self._clock = clock
        self._topics = settings.topics
        self._codec = request_codec()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="dispatch-agent", daemon=True)
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": self._topics.dispatch_group,
                "client.id": f"herald-dispatch-{settings.worker_name}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": int(settings.session_timeout_s * 1000),
                "heartbeat.interval.ms": int(settings.session_timeout_s * 1000 / 5),
                "max.poll.interval.ms": 300_000,
            }
        )
        self._state_producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5}
        )
        self._bootstrap = bootstrap
        self._emitter = Emitter(bootstrap, self._topics.lifecycle)
        self._dead_letters = DeadLetterSink(bootstrap, self._topics.dispatch_dead_letter)
        self.breakers: dict[str, CircuitBreaker] = {}
        self.tenants: dict[str, Dispatcher] = {}
        self.partition_of: dict[str, int] = {}  # tenant -> the partition its requests (and state) are on
        self.assigned: set[int] = set()
        self._restore: set[int] = set()  # assigned, state not read yet
        self._timers: list[tuple[int, str, str]] = []  # (due ms, tenant, request id)
        self._receipts: list[tuple[int, str, str, int]] = []  # (due ms, tenant, request id, polls so far)
        self._resume: list[tuple[str, str]] = []  # (tenant, request id) in flight at the last owner's end
        self.totals = DispatchTotals()
        self._fenced_at = -float("inf")
        self.crashed: BaseException | None = None
        self.alerts = AlertPublisher(bootstrap, self._topics.alerts, warehouse)
        self._warehouse = warehouse
        self._experiments = experiments  # the current definitions (experiments/registry.py), polled
        self._experiments_version: str | None = None
        self._experiments_checked = 0.0
        self._links = links
        self._alert_codec = AvroCodec.for_contract("alert_event")
        self._switched: dict[str, tuple[str, int]] = {}  # breaker key -> (open alert id, opened at ms)
        self._pending_alerts: list[dict[str, Any]] = []  # budget thresholds crossed in this batch
        # SLA breaches the monitor attributed to a provider: tenant -> {"<channel>:<provider>": why}.
        # Read from the alerts topic from its beginning (a group of this process alone), so every
        # worker knows them whichever tenants it owns now or later.
        self._sla_avoid: dict[str, dict[str, str]] = {}
        self._alerts_reader = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"herald-dispatch-sla-{settings.worker_name}-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._alerts_reader.subscribe([self._topics.alerts])
        self._consumer.subscribe(
            [self._topics.dispatch_requests],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        t = self.totals
        return {
            "partitions": sorted(self.assigned),
            "tenants": len(self.tenants),
            "policy_version": self.loaded.version,
            "requests": t.requests,
            "routed": t.routed,
            "suppressed": t.suppressed,
            "deferred_waiting": len(self._timers),
            "sent": t.sent,
            "failed": t.failed,
            "resumed": t.resumed,
            "receipts": t.receipts,
            "receipts_waiting": len(self._receipts),
            "dead_letters": t.dead_letters,
            "fenced": t.fenced,
            "breakers": {k: b.state_at(self._clock()) for k, b in sorted(self.breakers.items())},
            "alerts_published": len(self.alerts.published),
            "crashed": repr(self.crashed) if self.crashed else None,
        }

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        fresh = {p.partition for p in partitions}
        self.assigned |= fresh
        self._restore |= fresh
        log.info("dispatch.partitions_assigned", partitions=sorted(fresh))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        gone = {p.partition for p in partitions}
        self.assigned -= gone
        self._restore -= gone
        for tenant in [t for t, p in self.partition_of.items() if p in gone]:
            self.tenants.pop(tenant, None)
            self.partition_of.pop(tenant, None)
        self._timers = [t for t in self._timers if t[1] in self.tenants]
        heapq.heapify(self._timers)
        self._receipts = [r for r in self._receipts if r[1] in self.tenants]
        heapq.heapify(self._receipts)
        self._resume = [r for r in self._resume if r[0] in self.tenants]
        log.info("dispatch.partitions_revoked", partitions=sorted(gone))

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # a crash must be visible, not a silent stall
            self.crashed = exc
            log.exception("dispatch.crashed")
        finally:
            self._consumer.close()
            self._alerts_reader.close()
            self._emitter.close()
            self._dead_letters.close()
            self._state_producer.flush(10)
            self.alerts.close()

    async def _main(self) -> None:
        adapters = dict(self._adapter_factory())  # built on this loop: HTTP sessions belong to it
        try:
            while not self._stop.is_set():
                messages = self._consumer.consume(self._batch_max, timeout=0.05)
                self._read_sla_alerts()
                if self._restore:
                    self._load_state()
                await self._batch(messages, adapters)
        finally:
            for adapter in adapters.values():
                await adapter.aclose()

    # -- state ----------------------------------------------------------------------------------
    def _load_state(self) -> None:
        """Read the state partitions of newly assigned partitions to their end."""
        partitions, self._restore = sorted(self._restore), set()
        reader = Consumer(
            {
                "bootstrap.servers": self._bootstrap,
                "group.id": "herald-dispatch-restore",
                "enable.auto.commit": False,
            }
        )
        try:
            for partition in partitions:
                tp = TopicPartition(self._topics.dispatch_state, partition)
                low, high = reader.get_watermark_offsets(tp, timeout=10)
                latest: dict[str, bytes] = {}
                if high > low:
                    reader.assign([TopicPartition(self._topics.dispatch_state, partition, low)])
                    position, deadline = low, time.monotonic() + 60
                    while position < high:
                        if time.monotonic() > deadline:
                            raise RuntimeError(
                                f"dispatch state partition {partition} unreadable up to {high}"
                            )
                        for m in reader.consume(1000, timeout=1.0):
                            key, value = m.key(), m.value()
                            if m.error() is None and key is not None and value is not None:
                                latest[key.decode()] = value
                            position = max(position, (m.offset() or 0) + 1)
                for tenant, data in latest.items():
                    dispatcher = Dispatcher.restore(self.loaded, data, self.breakers)
                    dispatcher.state.avoid = dict(self._sla_avoid.get(tenant, {}))  # the alerts topic rules
                    self._expose_to(dispatcher)
                    self.tenants[tenant], self.partition_of[tenant] = dispatcher, partition
                    for request_id, *_rest in dispatcher.pending_receipts():
                        heapq.heappush(self._receipts, (0, tenant, request_id, 0))
                    for request_id, status, _record in dispatcher.unfinished():
                        if status == "sending":
                            self._resume.append((tenant, request_id))
                        else:
                            heapq.heappush(self._timers, (0, tenant, request_id))  # decide again at once
                log.info("dispatch.state_restored", partition=partition, tenants=len(latest))
        finally:
            reader.close()

    def _current_experiments(self) -> tuple[LoadedExperiments, Mapping[str, Segment]] | None:
        if self._experiments is None:
            return None
        try:
            return self._experiments()
        except Exception as exc:  # the warehouse is briefly away: keep the definitions we have
            log.warning("dispatch.definitions_unavailable", error=f"{type(exc).__name__}: {exc}")
            return None

    def _expose_to(self, dispatcher: Dispatcher) -> None:
        current = self._current_experiments()
        if current is not None:
            dispatcher.use_experiments(*current)

    def _refresh_experiments(self) -> None:
        """New experiment or segment definitions (the files, or changes through the API) reach every
        dispatcher within EXPERIMENTS_REFRESH_S."""
        now = self._clock()
        if self._experiments is None or now - self._experiments_checked < EXPERIMENTS_REFRESH_S:
            return
        self._experiments_checked = now
        current = self._current_experiments()
        if current is None or current[0].version == self._experiments_version:
            return
        self._experiments_version = current[0].version
        for dispatcher in self.tenants.values():
            dispatcher.use_experiments(*current)
        log.info(
            "dispatch.experiments_loaded", version=current[0].version, experiments=len(current[0].definitions)
        )

    def _dispatcher(self, tenant: str, partition: int) -> Dispatcher:
        dispatcher = self.tenants.get(tenant)
        if dispatcher is None:
            dispatcher = self.tenants[tenant] = Dispatcher(self.loaded)
            dispatcher.state.breakers = self.breakers
            dispatcher.state.avoid = dict(self._sla_avoid.get(tenant, {}))
            self._expose_to(dispatcher)
        self.partition_of[tenant] = partition
        return dispatcher

    def _read_sla_alerts(self) -> None:
        """Apply SLA breach alerts that name a provider: that tenant avoids it until RESOLVED."""
        for m in self._alerts_reader.consume(500, timeout=0):
            value = m.value()
            if m.error() is not None or value is None:
                continue
            try:
                alert = self._alert_codec.decode(value)
            except DecodeError:
                continue
            if not str(alert["metric"]).startswith("sla.") or not alert["provider"]:
                continue
            tenant, key = alert["tenant_id"], f"{str(alert['channel']).lower()}:{alert['provider']}"
            avoided = self._sla_avoid.setdefault(tenant, {})
            if alert["status"] == "OPENED":
                avoided[key] = f"SLA breach {alert['alert_id']}"
            else:
                avoided.pop(key, None)
            if tenant in self.tenants:
                self.tenants[tenant].state.avoid = dict(avoided)
            log.warning("dispatch.sla_route", tenant=tenant, avoid=sorted(avoided), status=alert["status"])

    def _write_state(self, tenants: set[str]) -> None:
        for tenant in tenants:
            dispatcher = self.tenants[tenant]
            dispatcher.forget_settled(self._ledger_keep)
            self._state_producer.produce(
                self._topics.dispatch_state,
                key=tenant.encode(),
                value=dispatcher.snapshot(),
                partition=self.partition_of[tenant],
            )

    def _flush(self) -> None:
        remaining = self._state_producer.flush(30)
        if remaining:
            raise RuntimeError(f"{remaining} dispatch state records not acknowledged")
        self._emitter.flush(30)

    # -- one batch ------------------------------------------------------------------------------
    def _profiles(
        self, decoded: list[tuple[dict[str, Any], Dispatcher]], now_ms: int
    ) -> dict[tuple[str, str], EngagementProfile]:
        """Engagement profiles (from the warehouse, one query per tenant) of the recipients whose
        request an engagement-based experiment segment must judge; none when the warehouse is away
        (the request is then judged as for a recipient without history, and the miss is logged)."""
        wanted: dict[str, set[str]] = {}
        for record, dispatcher in decoded:
            if dispatcher.needs_profile(record, now_ms):
                wanted.setdefault(str(record["tenant_id"]), set()).add(str(record["recipient"]["id"]))
        found: dict[tuple[str, str], EngagementProfile] = {}
        if not wanted or self._warehouse is None:
            return found
        for tenant, ids in wanted.items():
            try:
                for recipient_id, _, profile in read_profiles(self._warehouse, tenant, sorted(ids)):
                    found[(tenant, recipient_id)] = profile
            except Exception as exc:  # the warehouse is briefly away: judge without history
                log.warning(
                    "dispatch.profiles_unavailable", tenant=tenant, error=f"{type(exc).__name__}: {exc}"
                )
        return found

    def _decoded(
        self, messages: list[Message], last: dict[tuple[str, int], int]
    ) -> list[tuple[dict[str, Any], Dispatcher]]:
        """The batch's valid requests with their tenant's dispatcher; the rest go to the dead-letter
        topic. Notes each partition's newest offset in ``last``."""
        decoded: list[tuple[dict[str, Any], Dispatcher]] = []
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("dispatch.consume_error", error=str(err))
                continue
            last[(m.topic() or "", m.partition() or 0)] = m.offset() or 0
            try:
                record = self._codec.decode(m.value() or b"")
                problem = request_problem(record)
                if problem:
                    raise DecodeError("invalid", problem)
            except DecodeError as exc:
                stage = "validate" if exc.kind == "invalid" else "decode"
                letter = dead_letter(source_message(m), stage, exc.kind, str(exc), datetime.now(UTC))
                self._dead_letters.send([letter])
                self.totals.dead_letters += 1
                continue
            decoded.append((record, self._dispatcher(str(record["tenant_id"]), m.partition() or 0)))
        return decoded

    async def _batch(self, messages: list[Message], adapters: Mapping[str, ProviderAdapter]) -> None:
        now_ms = int(self._clock() * 1000)
        touched: set[str] = set()
        attempts: list[tuple[str, Attempt, dict[str, Any]]] = []
        last: dict[tuple[str, int], int] = {}  # (topic, partition) -> newest offset in the batch
        self._refresh_experiments()
        decoded = self._decoded(messages, last)
        profiles = self._profiles(decoded, now_ms)
        for record, owner in decoded:
            self.totals.requests += 1
            recipient = (str(record["tenant_id"]), str(record["recipient"]["id"]))
            step = owner.decide(record, now_ms, profile=profiles.get(recipient))
            self._take(recipient[0], record, step, touched, attempts)
        while self._timers and self._timers[0][0] <= now_ms:  # deferred requests now due
            _, tenant, request_id = heapq.heappop(self._timers)
            dispatcher = self.tenants.get(tenant)
            if dispatcher is None or dispatcher.status(request_id) != "deferred":
                continue
            record = dispatcher.ledger[request_id].record
            self._take(tenant, record, dispatcher.decide(record, now_ms), touched, attempts)
        for tenant, request_id in self._resume:
            dispatcher = self.tenants.get(tenant)
            attempt = dispatcher.resume(request_id, now_ms) if dispatcher else None
            if dispatcher is not None and attempt is not None:
                self.totals.resumed += 1
                attempts.append((tenant, attempt, dispatcher.ledger[request_id].record))
        self._resume = []
        await self._poll_receipts(adapters, touched)
        if not touched and not attempts and not last:
            return
        firsts = _first_offsets(messages)
        try:
            self._fence(firsts)
            self._write_state(touched)
            self._flush()  # write-ahead: decisions and counters are durable before any provider is called
            self._fence(firsts)
            pending = [
                self._send(tenant, attempt, record, adapters, touched) for tenant, attempt, record in attempts
            ]
            await asyncio.gather(*pending)
            self._fence(firsts)
            self._write_state(touched)
            self._flush()
        except FencedError as exc:
            self._fenced(firsts, exc)
            return
        self._publish_alerts()
        if last:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in last.items()], asynchronous=False
            )
        self.totals.batches += 1

    def _fence(self, firsts: dict[tuple[str, int], int]) -> None:
        """Prove this worker still owns its partitions before it writes their tenants' state or calls a
        provider (a worker paused past its session must not overwrite the new owner's counters or send
        what it already sent): a synchronous commit of where it stands, which the group coordinator
        refuses once the partitions moved. A commit renews the session: one less than half a session
        old still holds (streams/sink.py does the same for ingest)."""
        now = time.monotonic()
        if now - self._fenced_at < self.settings.session_timeout_s / 2:
            return
        assignment = self._consumer.assignment()
        if not assignment:
            raise FencedError("no partitions assigned")
        try:
            positions = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.position(assignment)}
            standing = {**{k: v for k, v in positions.items() if v >= 0}, **firsts}
            if standing:
                self._consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(standing.items())],
                    asynchronous=False,
                )
        except KafkaException as exc:
            raise FencedError(f"the group refused this worker's offsets: {exc}") from exc
        self._fenced_at = now

    def _fenced(self, firsts: dict[tuple[str, int], int], exc: FencedError) -> None:
        """Drop every decision of the batch: the state of its partitions is read again from the state
        topic (the new owner's, or ours if the partitions are still ours) and the batch re-consumed."""
        log.warning("dispatch.fenced", error=str(exc), partitions=sorted(p for _, p in firsts))
        self.totals.fenced += 1
        for tenant in [t for t, p in self.partition_of.items() if p in self.assigned]:
            self.tenants.pop(tenant, None)
            self.partition_of.pop(tenant, None)
        self._timers, self._receipts, self._resume = [], [], []
        self._restore |= set(self.assigned)
        for (topic, partition), offset in firsts.items():
            if partition in self.assigned:
                try:
                    self._consumer.seek(TopicPartition(topic, partition, offset))
                except KafkaException:
                    continue  # revoked meanwhile
        self._fenced_at = -float("inf")

    def _publish_alerts(self) -> None:
        """A breaker that opened (failover) or closed (failback) since the last batch: an alert on the
        alerts topic and in the ``alerts`` table, OPENED then RESOLVED with the same id. Budget
        thresholds crossed in the batch go out the same way."""
        records, self._pending_alerts = self._pending_alerts, []
        for key, breaker in self.breakers.items():
            for t in breaker.pop_transitions():
                at_ms = int(t.at * 1000)
                if t.to_state == "open" and key not in self._switched:
                    digest = hashlib.sha256(f"{self.settings.worker_name}|{key}|{at_ms}".encode())
                    self._switched[key] = (digest.hexdigest()[:20], at_ms)
                    alert_id, opened = self._switched[key]
                elif t.to_state == "closed" and key in self._switched:
                    alert_id, opened = self._switched.pop(key)
                else:
                    continue
                records.append(switch_alert(t, alert_id, opened, self._links, self.loaded.version))
                log.warning(
                    "dispatch.provider_switch", provider=t.provider, channel=t.channel,
                    to_state=t.to_state, reason=t.reason,
                )  # fmt: skip
        self.alerts.add(records)
        try:
            self.alerts.flush()
        except Exception as exc:  # the broker or warehouse is briefly away: they stay queued, next batch
            log.warning("dispatch.alerts_not_published", error=str(exc), pending=self.alerts.pending)

    def _take(
        self,
        tenant: str,
        record: dict[str, Any],
        step: Step,
        touched: set[str],
        attempts: list[tuple[str, Attempt, dict[str, Any]]],
    ) -> None:
        touched.add(tenant)
        for event in step.events:
            self._emitter.emit(event)
        if step.decision is not None:
            self.totals.by_reason[step.decision.reason] += 1
            at_ms = int(self._clock() * 1000)
            for scope, crossed in step.decision.alerts:
                self._pending_alerts.append(
                    budget_alert(tenant, scope, crossed, at_ms, self._links, step.decision.policy_version)
                )
            if step.decision.action == "suppress":
                self.totals.suppressed += 1
        if step.attempt is not None:
            self.totals.routed += 1
            attempts.append((tenant, step.attempt, record))
        elif step.defer_until_ms is not None:
            self.totals.deferred += 1
            heapq.heappush(self._timers, (step.defer_until_ms, tenant, str(record["request_id"])))

    async def _poll_receipts(self, adapters: Mapping[str, ProviderAdapter], touched: set[str]) -> None:
        """Ask the providers about the sends whose receipt is due; DELIVERED or FAILED when they know,
        ask again later (backing off) while they do not, give up after RECEIPT_PATIENCE_MS."""
        now_ms = int(self._clock() * 1000)
        due: list[tuple[int, str, str, int]] = []
        while self._receipts and self._receipts[0][0] <= now_ms and len(due) < 500:
            due.append(heapq.heappop(self._receipts))
        if not due:
            return

        async def one(tenant: str, request_id: str, tries: int) -> None:
            dispatcher = self.tenants.get(tenant)
            pending = dispatcher.pending_receipts_of(request_id) if dispatcher else None
            if dispatcher is None or pending is None:
                return
            provider, message_id, sent_ms = pending
            poll = getattr(adapters.get(provider), "status", None)  # providers with delivery receipts
            status = await poll(message_id) if poll is not None else None
            now = int(self._clock() * 1000)
            if status in ("delivered", "failed"):
                step = dispatcher.receipt(request_id, status == "delivered", now)
                for event in step.events:
                    self._emitter.emit(event)
                    self.totals.receipts += 1
                touched.add(tenant)
            elif now - sent_ms > RECEIPT_PATIENCE_MS:
                dispatcher.receipt_expired(request_id)
                touched.add(tenant)
            else:
                backoff = min(RECEIPT_FIRST_MS * 2 ** (tries + 1), 30_000)
                heapq.heappush(self._receipts, (now + backoff, tenant, request_id, tries + 1))

        await asyncio.gather(*(one(tenant, rid, tries) for _due, tenant, rid, tries in due))

    async def _send(
        self,
        tenant: str,
        attempt: Attempt,
        record: dict[str, Any],
        adapters: Mapping[str, ProviderAdapter],
        touched: set[str],
    ) -> None:
        dispatcher = self.tenants[tenant]
        while attempt is not None:
            adapter = adapters.get(attempt.provider)
            result = await call_provider(adapter, attempt, record)
            now_ms = int(self._clock() * 1000)
            step = dispatcher.outcome(attempt, result, now_ms, receipts=hasattr(adapter, "status"))
            touched.add(tenant)
            for event in step.events:
                self._emitter.emit(event)
                if event["event_type"] == "SENT":
                    self.totals.sent += 1
                    if dispatcher.pending_receipts_of(attempt.request_id):
                        heapq.heappush(
                            self._receipts, (now_ms + RECEIPT_FIRST_MS, tenant, attempt.request_id, 0)
                        )
                elif event["event_type"] == "FAILED" and step.attempt is None:
                    self.totals.failed += 1
            attempt = step.attempt  # type: ignore[assignment]  # the one failover retry, or None


def _first_offsets(messages: list[Message]) -> dict[tuple[str, int], int]:
    first: dict[tuple[str, int], int] = {}
    for m in messages:
        if m.error() is None:
            first.setdefault((m.topic() or "", m.partition() or 0), m.offset() or 0)
    return first
