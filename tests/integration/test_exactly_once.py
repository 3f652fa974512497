"""Every table derived from the log stays exact under the faults that broke it before: a crash between a
batch's events part and its views, a worker paused past its session, the embedded warehouse's owner
restarting, a value the engine refuses, a future-dated event against the dedup horizon. Against the
real engine, and the real broker where a worker runs."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from herald.settings import load_settings
from projections.migrate import migrate
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from simulator.model import DEFAULT_MODEL, generate
from simulator.run import emit_exact
from streams.ingest import DeadLetter, SourceMessage, TopicPartition
from streams.pipeline import IngestPipeline
from tests.conftest import Herald
from tests.integration.helpers import wait_for

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
TOPIC = "lifecycle"
ROLLUP_RECOUNTS = {
    # rollup: (query on the rollup, the same from events)
    "delivery_minute": (
        "SELECT tenant_id, channel, sum(sent), sum(delivered), sum(opened), sum(cost_micros) "
        "FROM delivery_minute GROUP BY ALL ORDER BY ALL",
        "SELECT tenant_id, channel, countIf(event_type = 'SENT'), countIf(event_type = 'DELIVERED'), "
        "countIf(event_type = 'OPENED'), sum(ifNull(cost_micros, 0)) FROM events GROUP BY ALL ORDER BY ALL",
    ),
    "delivery_hour": (
        "SELECT tenant_id, sum(delivered), sum(opened) FROM delivery_hour GROUP BY ALL ORDER BY ALL",
        "SELECT tenant_id, countIf(event_type = 'DELIVERED'), countIf(event_type = 'OPENED') FROM events "
        "GROUP BY ALL ORDER BY ALL",
    ),
    "delivery_cohort_minute": (
        "SELECT tenant_id, sum(sent) FROM delivery_cohort_minute GROUP BY ALL ORDER BY ALL",
        "SELECT tenant_id, countIf(event_type = 'SENT') FROM events GROUP BY ALL ORDER BY ALL",
    ),
    "engagement_profiles": (
        "SELECT tenant_id, count(), sum(sent), sum(opened) FROM "
        "(SELECT tenant_id, recipient_id, sum(sent) AS sent, sum(opened) AS opened FROM engagement_profiles "
        "GROUP BY ALL) GROUP BY ALL ORDER BY ALL",
        "SELECT tenant_id, uniqExact(recipient_id), countIf(event_type = 'SENT'), "
        "countIf(event_type = 'OPENED') FROM events WHERE recipient_id != '' GROUP BY ALL ORDER BY ALL",
    ),
}


def rollups_against_recount(sql: Any) -> dict[str, tuple[Any, Any]]:
    """Each rollup next to the same numbers recounted from events; {} when they all agree."""
    out = {}
    for table, (rollup, recount) in ROLLUP_RECOUNTS.items():
        got, expected = sql(rollup), sql(recount)
        if got != expected:
            out[table] = (got, expected)
    return out


# ------------------------------------------------------------------------------- in process


class Letters:
    def __init__(self) -> None:
        self.sent: list[DeadLetter] = []

    def send(self, letters: list[DeadLetter]) -> None:
        self.sent.extend(letters)

    def close(self) -> None:
        return None


def messages(n: int, seed: int = 3, partitions: int = 2, first_offset: int = 0) -> list[SourceMessage]:
    codec = lifecycle_codec()
    events = list(generate(DEFAULT_MODEL, NOW - timedelta(hours=1), 20, 3600, seed=seed))[:n]
    log_ms = int(NOW.timestamp() * 1000)
    return [
        SourceMessage(TOPIC, i % partitions, first_offset + i // partitions, e["notification_id"].encode(),
                      codec.encode(e), log_ms + i)
        for i, e in enumerate(events)
    ]  # fmt: skip


class Giving:
    """Fails a retry loop fast in tests: the pipeline's sleep between attempts, raising after a few."""

    def __init__(self, attempts: int = 3) -> None:
        self.left = attempts

    def __call__(self, _seconds: float) -> None:
        self.left -= 1
        if self.left <= 0:
            raise RuntimeError("gave up retrying")


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    w = Warehouse(f"chdb://{tmp_path / 'warehouse'}")
    try:
        migrate(w)
        yield w
    finally:
        w.close()


def pipeline(
    warehouse: Warehouse, log: list[SourceMessage], letters: Letters | None = None
) -> IngestPipeline:
    """A pipeline over ``warehouse`` that reads ``log`` back when it repairs a batch."""

    def reread(tp: TopicPartition, first: int, last: int) -> list[SourceMessage]:
        return [m for m in log if (m.topic, m.partition) == tp and first <= m.offset <= last]

    return IngestPipeline(
        load_settings(data_dir=Path("/tmp")), IngestWriter(warehouse, "test", clock=lambda: NOW),
        lifecycle_codec(), letters or Letters(), clock=lambda: NOW, sleep=Giving(), reread=reread,  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_batch_half_applied_to_its_views_is_completed_when_its_partition_is_loaded(
    warehouse: Warehouse,
) -> None:
    """A view refuses a batch after events took it (a crash between the parts has the same shape): the
    next owner of the partition re-writes the batch from the log, the view gets its rows, nothing
    doubles. Before: the position came from events, the batch was skipped and the view stayed short."""
    log = messages(3000)
    first, second = log[:2000], log[2000:]
    pipeline(warehouse, log).apply(first)
    # One more derived table, fed by a view that fails on demand after events took the block (views are
    # run after the table, in the order they were created: this one last).
    warehouse.command("CREATE TABLE fault_switch (on UInt8) ENGINE = Memory")
    warehouse.command(
        "CREATE TABLE view_counts (tenant_id String, n UInt64) ENGINE = SummingMergeTree ORDER BY tenant_id "
        "SETTINGS non_replicated_deduplication_window = 1000"
    )
    warehouse.command(
        "CREATE MATERIALIZED VIEW view_counts_mv TO view_counts AS SELECT tenant_id, "
        "count() + throwIf((SELECT count() FROM fault_switch) > 0) AS n FROM events GROUP BY tenant_id"
    )
    warehouse.command("INSERT INTO view_counts SELECT tenant_id, count() FROM events GROUP BY tenant_id")
    warehouse.command("INSERT INTO fault_switch VALUES (1)")
    with pytest.raises(RuntimeError, match="gave up retrying"):
        pipeline(warehouse, log).apply(second)
    warehouse.command("TRUNCATE TABLE fault_switch")
    view = "SELECT tenant_id, sum(n) FROM view_counts GROUP BY ALL ORDER BY ALL"
    recount = "SELECT tenant_id, count() FROM events GROUP BY ALL ORDER BY ALL"
    assert warehouse.rows("SELECT count() FROM events") == [(2500,)]  # events took partition 0's run
    assert warehouse.rows(view) != warehouse.rows(recount)  # the view did not

    restarted = pipeline(warehouse, log)
    restarted.apply(second)  # loads both partitions: finishes the planned batch of each, then skips it
    assert restarted.status.repairs == 2  # partition 0's run reached events, partition 1's only its plan
    assert warehouse.rows("SELECT count(), uniqExact(event_id) FROM events") == [(3000, 3000)]
    assert warehouse.rows(view) == warehouse.rows(recount)
    assert rollups_against_recount(warehouse.rows) == {}


def test_a_partitions_first_batch_half_applied_is_completed_too(warehouse: Warehouse) -> None:
    """The same when the batch is the partition's first (it starts at offset 0): its dedup state is the
    empty one from before it, not its own rows, so its rows are not taken for duplicates of themselves."""
    log = messages(1000)
    warehouse.command("CREATE TABLE fault_switch (on UInt8) ENGINE = Memory")
    warehouse.command(
        "CREATE TABLE view_counts (tenant_id String, n UInt64) ENGINE = SummingMergeTree ORDER BY tenant_id "
        "SETTINGS non_replicated_deduplication_window = 1000"
    )
    warehouse.command(
        "CREATE MATERIALIZED VIEW view_counts_mv TO view_counts AS SELECT tenant_id, "
        "count() + throwIf((SELECT count() FROM fault_switch) > 0) AS n FROM events GROUP BY tenant_id"
    )
    warehouse.command("INSERT INTO fault_switch VALUES (1)")
    with pytest.raises(RuntimeError, match="gave up retrying"):
        pipeline(warehouse, log).apply(log)
    warehouse.command("TRUNCATE TABLE fault_switch")
    restarted = pipeline(warehouse, log)
    restarted.apply(log)
    view = "SELECT tenant_id, sum(n) FROM view_counts GROUP BY ALL ORDER BY ALL"
    recount = "SELECT tenant_id, count() FROM events GROUP BY ALL ORDER BY ALL"
    assert warehouse.rows("SELECT count(), uniqExact(event_id) FROM events") == [(1000, 1000)]
    assert warehouse.rows(view) == warehouse.rows(recount)
    assert rollups_against_recount(warehouse.rows) == {}


def test_a_run_the_engine_refuses_is_bisected_and_only_its_bad_rows_are_dead_lettered(
    warehouse: Warehouse,
) -> None:
    """Rows a table cannot hold (here a constraint stands in for a value out of a column's range) go to
    the dead-letter topic with the engine's reason; the rest of the run lands once; the batch does not
    retry forever. The same batch again changes nothing."""
    log = messages(400)
    codec = lifecycle_codec()
    ids = [codec.decode(log[i].value)["event_id"] for i in (37, 38, 201)]
    quoted = ", ".join(f"'{i}'" for i in ids)
    warehouse.command(f"ALTER TABLE events ADD CONSTRAINT no_poison CHECK event_id NOT IN ({quoted})")
    letters = Letters()
    applied = pipeline(warehouse, log, letters).apply(log)
    assert len(letters.sent) == 3
    for letter in letters.sent:
        headers = dict(letter.headers)
        assert headers["herald.stage"] == b"warehouse" and headers["herald.error.class"] == b"refused"
        assert b"no_poison" in headers["herald.error.message"]
    assert warehouse.rows("SELECT count(), uniqExact(event_id) FROM events") == [(397, 397)]
    assert applied.result.progress and rollups_against_recount(warehouse.rows) == {}
    warehouse.command("ALTER TABLE events DROP CONSTRAINT no_poison")
    pipeline(warehouse, log).apply(log)  # a redelivery: skipped by position
    assert warehouse.rows("SELECT count() FROM events") == [(397,)]


def test_a_future_dated_event_cannot_shrink_the_dedup_horizon(warehouse: Warehouse) -> None:
    """The horizon runs on the log's clock: an event dated a day ahead does not make the partition forget
    the ids it saw, so a retry that follows it is still dropped. Before: the horizon ran back from the
    newest event time, and that one event wiped it."""
    codec = lifecycle_codec()
    base = list(generate(DEFAULT_MODEL, NOW - timedelta(minutes=5), 5, 300, seed=9))[:20]
    future = {**base[1], "event_id": "far-ahead", "occurred_at": NOW + timedelta(hours=23)}
    stream = [*base[:10], future, base[3], base[4]]  # the last two are retries of earlier events
    log_ms = int(NOW.timestamp() * 1000)
    log = [SourceMessage(TOPIC, 0, i, b"k", codec.encode(e), log_ms + 1000 * i) for i, e in enumerate(stream)]
    applied = pipeline(warehouse, log).apply(log)
    assert applied.result.duplicates == 2
    assert warehouse.rows("SELECT count() FROM events") == [(11,)]


def test_a_worker_that_lost_the_race_for_its_first_run_resumes_after_the_winner(warehouse: Warehouse) -> None:
    """A paused worker planned and wrote its run first, other rows than the new owner's first run at the
    same offset: the owner sees the other plan stand, writes nothing of its own batch, and the next load
    finishes the paused worker's plan; the owner resumes after it."""
    log = messages(600, partitions=1)
    zombie_batch, owner_batch = log[:150], log[:400]  # both start where the warehouse stopped
    owner = pipeline(warehouse, log)
    owner._load({(TOPIC, 0)}, lambda: None)  # the owner takes the partition over first
    pipeline(warehouse, log).apply(zombie_batch)  # then the paused worker's run lands
    warehouse.command("TRUNCATE TABLE ingest_batches")  # without its marker: that write was fenced
    applied = owner.apply(owner_batch)
    assert applied.lost == {(TOPIC, 0): -1}  # resume at the other plan's start: the next load finishes it
    assert warehouse.rows("SELECT count(), uniqExact(event_id) FROM events") == [(150, 150)]
    assert rollups_against_recount(warehouse.rows) == {}
    owner.apply(log[150:])  # resumed after the stored run: the rest lands once
    assert warehouse.rows("SELECT count(), uniqExact(event_id) FROM events") == [(600, 600)]
    assert rollups_against_recount(warehouse.rows) == {}


# ------------------------------------------------------------------------------- real workers


def recount_sql(h: Herald) -> dict[str, tuple[Any, Any]]:
    return rollups_against_recount(h.sql)


def test_a_crash_after_a_run_before_its_marker_is_completed_on_restart(herald: Herald) -> None:
    """SIGKILL (by the writer's own fault point) after a run reached every table but before the batch's
    marker: the restarted worker completes the batch from the log; events and every rollup exact."""
    h = herald
    worker = h.start_worker(HERALD_FAULTS="after_run:kill@3")
    emit_exact(h.emitter(), 4000, 0, seed=5, start=datetime.now(UTC) - timedelta(minutes=30))
    wait_for(
        lambda: worker.proc is not None and worker.proc.poll() is not None, "the fault's kill", timeout=60
    )
    assert worker.proc is not None and worker.proc.returncode == -signal.SIGKILL
    h.workers.remove(worker)
    h.start_worker()
    h.wait_caught_up()
    assert h.sql("SELECT count(), uniqExact(event_id) FROM events") == [[4000, 4000]]
    assert recount_sql(h) == {}
    assert (
        h.scalar("SELECT count() FROM events WHERE _offset > (SELECT max(last_offset) FROM ingest_batches)")
        == 0
    )


def test_a_worker_paused_past_its_session_writes_nothing_twice(herald_factory: Any) -> None:
    """Worker A stops (SIGSTOP) right before an insert, past its group session; B takes its partitions and
    writes them; A resumes and sends its insert. Every table is exact: A's block starts where B's did
    (same token, dropped) and its next write is fenced. Before: 152 duplicate rows."""
    h: Herald = herald_factory()
    env = {"HERALD_SESSION_TIMEOUT_S": "6", "HERALD_BATCH_MAX_EVENTS": "500"}
    a = h.start_worker("worker-a", HERALD_FAULTS="before_insert:pause=4@12", **env)
    b = h.start_worker("worker-b", **env)
    wait_for(lambda: a.health()["partitions"] and b.health()["partitions"], "both workers to own partitions",
             [a, b], timeout=60)  # fmt: skip
    emit_exact(h.emitter(), 12_000, 0, seed=8, start=datetime.now(UTC) - timedelta(minutes=30))
    wait_for(
        lambda: "fault.paused" in a.log_path.read_text(), "worker A to reach the fault point", [a], timeout=90
    )
    assert a.proc is not None
    os.kill(a.proc.pid, signal.SIGSTOP)
    try:
        time.sleep(12)  # past A's 6 s session: the group moves A's partitions to B, which writes them
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    h.wait_caught_up(timeout=180)
    wait_for(lambda: sorted(a.health()["partitions"] + b.health()["partitions"]) == [0, 1, 2, 3], "rebalance",
             [a, b], timeout=60)  # fmt: skip
    h.wait_caught_up(timeout=120)
    assert h.sql("SELECT count(), uniqExact(event_id) FROM events") == [[12_000, 12_000]]
    assert recount_sql(h) == {}


def test_a_worker_sharing_the_embedded_warehouse_follows_its_owner_across_a_restart(herald: Herald) -> None:
    """The owner of the embedded warehouse dies: the other worker cannot write, says so on /health and
    retries; the owner comes back on a new port and secret, the other finds it, and every event lands
    once. Before: it kept the old address and retried forever while /health said ok."""
    h = herald
    env = {"HERALD_SESSION_TIMEOUT_S": "6", "HERALD_INGEST_STALL_S": "2"}
    owner = h.start_worker("worker-1", **env)
    other = h.start_worker("worker-2", **env)
    start = datetime.now(UTC) - timedelta(minutes=30)
    emit_exact(h.emitter(), 3000, 0, seed=11, start=start)
    h.wait_caught_up()
    assert owner.proc is not None
    owner.proc.kill()  # SIGKILL: no goodbye to the group, the run file stays behind
    owner.proc.wait()
    emit_exact(h.emitter(), 3000, 0, seed=12, start=start + timedelta(minutes=10))
    stalled = wait_for(
        lambda: [p for p in other.health()["problems"] if "ingest has retried" in p],
        "the other worker to report the stall",
        [other],
        timeout=90,
    )
    assert other.health()["status"] == "degraded" and stalled
    h.workers.remove(owner)
    h.start_worker("worker-1", **env)
    h.wait_caught_up(timeout=180)
    assert h.sql("SELECT count(), uniqExact(event_id) FROM events") == [[6000, 6000]]
    assert recount_sql(h) == {}
    wait_for(lambda: other.health()["status"] == "ok", "the other worker to recover", [other], timeout=60)
