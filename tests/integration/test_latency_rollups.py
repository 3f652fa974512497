"""Latency sketches and the send-minute cohort rollup (migration 0005) over a real embedded warehouse.

The warehouse is upgraded the way a running installation is: migrated to 0004, given rows by the writer
of that version (no ``sent_at``), migrated to the head, then filled with simulated traffic through the
real ingest path (Avro encode, decode, contract, writer). Recomputing from the raw events must give the
rollups: counters exactly, percentiles of the t-digest sketches within TOLERANCE of the exact quantiles.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from herald.settings import load_settings
from projections.migrate import MIGRATIONS_DIR, discover, migrate
from projections.rows import EVENT_COLUMNS, event_row
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from simulator.model import DEFAULT_MODEL, generate
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline
from streams.replay import CountingDeadLetters

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 7, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
LEGACY = "legacy-home"  # rows written by the previous version's writer, before migration 0005
LATE = "late-home"  # the hand-made late bounce and late open
# Merged t-digest sketches are approximate. Measured on this data (300 to 2,900 latencies per check),
# against the exact interpolated quantiles: p50 within 0.2 %, p95 within 0.6 %, p99 within 1.8 %.
# The test allows 5 % at p50/p95 and 10 % at p99.
TOLERANCE = {0.5: 0.05, 0.95: 0.05, 0.99: 0.10}
LEVELS = (0.5, 0.95, 0.99)
STAGES = {  # stage -> (sketch column, event types whose latency_ms it holds)
    "send": ("send_latency_digest", "'SENT'"),
    "delivery": ("delivery_latency_digest", "'DELIVERED'"),
    "response": ("response_latency_digest", "'OPENED', 'REPLIED'"),
}
SIMULATED = [t.tenant_id for t in DEFAULT_MODEL.tenants]
IN_SIMULATION = "tenant_id IN {simulated:Array(String)}"
COHORT_COUNTS = ("sent", "delivered", "bounced", "opened", "clicked", "replied", "unsubscribed", "complained")
KEY = "tenant_id, channel, provider, template_id, template_version"


@dataclass
class Filled:
    warehouse: Warehouse
    pipeline: IngestPipeline

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        return self.warehouse.rows(sql, {"simulated": SIMULATED, **params})

    def apply(self, topic: str, first_offset: int, events: list[dict[str, Any]]) -> None:
        codec = lifecycle_codec()
        messages = [
            SourceMessage(topic, 0, first_offset + i, e["notification_id"].encode(), codec.encode(e))
            for i, e in enumerate(events)
        ]
        result = self.pipeline.apply(messages).result
        assert len(result.accepted) == len(events) and not result.dead_letters


def _legacy_rows() -> tuple[list[list[Any]], list[str]]:
    """Rows as the writer before sent_at wrote them (its column list had no sent_at, nor the later
    _log_time)."""
    columns = [c for c in EVENT_COLUMNS if c not in ("sent_at", "_log_time")]
    events = []
    for i in range(30):
        at = T0 - timedelta(hours=1) + timedelta(seconds=10 * i)
        common = {
            "tenant_id": LEGACY,
            "notification_id": f"legacy-{i}",
            "channel": "SMS",
            "provider": "sms-x",
        }
        events.append({**common, "event_id": f"legacy-{i}-s", "event_type": "SENT", "occurred_at": at})
        delivered_at = at + timedelta(seconds=2)
        delivered = {"event_id": f"legacy-{i}-d", "event_type": "DELIVERED", "occurred_at": delivered_at}
        events.append({**common, **delivered, "latency_ms": 2000})
    rows = []
    for offset, event in enumerate(events):
        row = dict(zip(EVENT_COLUMNS, event_row(event, "legacy", 0, offset, NOW), strict=True))
        rows.append([row[c] for c in columns])
    return rows, columns


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    """One chDB warehouse for the module (chDB opens one path per process at a time)."""
    root: Path = tmp_path_factory.mktemp("latency")
    before = root / "migrations-0004"
    before.mkdir()
    for migration in sorted(MIGRATIONS_DIR.glob("*.sql")):
        if int(migration.name[:4]) <= 4:
            shutil.copy(migration, before)
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        assert len(migrate(warehouse, before)) == 4
        rows, columns = _legacy_rows()
        warehouse.insert("events", rows, columns)
        assert migrate(warehouse)[0] == "0005_latency_sketches_and_cohorts"
        pipeline = IngestPipeline(
            load_settings(data_dir=root),
            IngestWriter(warehouse, "latency-test"),
            lifecycle_codec(),
            CountingDeadLetters(),  # type: ignore[arg-type]  # same send/close surface as DeadLetterSink
            clock=lambda: NOW,
        )
        filled = Filled(warehouse, pipeline)
        # 3,000 notifications over five minutes: about 12,500 events, their outcomes up to hours later
        filled.apply("sim", 0, list(generate(DEFAULT_MODEL, T0, 10, 300, seed=23)))
        yield filled
    finally:
        warehouse.close()


def _no_nan(value: Any) -> Any:
    """NaN (a quantile of no values) as None, so that rows compare equal."""
    return None if isinstance(value, float) and math.isnan(value) else value


def exact_and_sketch(
    filled: Filled, stage: str, table: str, where: str
) -> tuple[int, list[float], list[float]]:
    """(latencies, their exact quantiles in events, quantiles of the table's merged sketches) over all
    time for the simulated tenants."""
    column, types = STAGES[stage]
    ((count, exact),) = filled.rows(
        f"SELECT count(), quantilesExactInclusive{LEVELS}(latency_ms) FROM events "
        f"WHERE event_type IN ({types}) AND latency_ms IS NOT NULL AND {IN_SIMULATION} AND {where}"
    )
    ((sketch,),) = filled.rows(
        f"SELECT quantilesTDigestMerge{LEVELS}({column}) FROM {table} WHERE {IN_SIMULATION} AND {where}"
    )
    return int(count), [float(q) for q in exact], [float(q) for q in sketch]


def test_follow_up_events_carry_their_send_time_into_the_events_table(filled: Filled) -> None:
    """sent_at survives Avro and the writer: every follow-up of a send holds that SENT's occurred_at."""
    ((with_sent_at, wrong),) = filled.rows(
        "SELECT count(), countIf(e.sent_at != s.occurred_at) FROM events AS e "
        "INNER JOIN (SELECT notification_id, occurred_at FROM events WHERE event_type = 'SENT') AS s "
        "USING notification_id WHERE e.sent_at IS NOT NULL AND e._topic = 'sim'"
    )
    follow_ups = "('DELIVERED', 'BOUNCED', 'OPENED', 'CLICKED', 'REPLIED', 'UNSUBSCRIBED', 'COMPLAINED')"
    expected = filled.rows(f"SELECT count() FROM events WHERE _topic = 'sim' AND event_type IN {follow_ups}")
    assert wrong == 0 and with_sent_at == expected[0][0] > 1000


def test_cohort_rollup_equals_a_group_by_send_minute_over_the_raw_events(filled: Filled) -> None:
    """delivery_cohort_minute = GROUP BY toStartOfMinute(ifNull(sent_at, occurred_at)) over events, every
    counter exactly, per key (events from before migration 0005 are not in it: see docs/warehouse.md)."""
    types = ", ".join(f"'{c.upper()}'" for c in COHORT_COUNTS)
    counts = ", ".join(f"countIf(event_type = '{c.upper()}')" for c in COHORT_COUNTS)
    from_raw = filled.rows(
        "SELECT toStartOfMinute(ifNull(sent_at, occurred_at)) AS m, tenant_id, channel, provider, "
        f"template_id, ifNull(template_version, 0) AS v, {counts} FROM events "
        f"WHERE {IN_SIMULATION} AND event_type IN ({types}) "
        "GROUP BY m, tenant_id, channel, provider, template_id, v ORDER BY ALL"
    )
    sums = ", ".join(f"sum({c})" for c in COHORT_COUNTS)
    from_rollup = filled.rows(
        f"SELECT send_minute, {KEY}, {sums} FROM delivery_cohort_minute WHERE {IN_SIMULATION} "
        f"GROUP BY send_minute, {KEY} ORDER BY ALL"
    )
    assert from_raw == from_rollup and len(from_raw) > 100
    # The attribution differs from delivery_minute's: most opens land in a later minute than their send.
    ((late_opens, opens),) = filled.rows(
        "SELECT countIf(toStartOfMinute(occurred_at) != toStartOfMinute(sent_at)), count() FROM events "
        "WHERE event_type = 'OPENED'"
    )
    assert late_opens > opens / 2 > 0


def test_cohort_view_rates_divide_its_own_sums(filled: Filled) -> None:
    """engagement_by_send_minute re-aggregates the cohort rollup; rates are NULL on a zero denominator."""
    view = filled.rows(
        "SELECT send_minute, tenant_id, channel, provider, sent, delivered, opened, clicked, "
        "delivery_rate, open_rate, click_rate FROM engagement_by_send_minute WHERE tenant_id = 'acme-home' "
        "ORDER BY ALL"
    )
    rollup = filled.rows(
        "SELECT send_minute, tenant_id, channel, provider, sum(sent), sum(delivered), sum(opened), "
        "sum(clicked) FROM delivery_cohort_minute WHERE tenant_id = 'acme-home' "
        "GROUP BY send_minute, tenant_id, channel, provider ORDER BY ALL"
    )
    assert [r[:8] for r in view] == rollup and len(view) > 10
    for *_, sent, delivered, opened, clicked, delivery_rate, open_rate, click_rate in view:
        assert delivery_rate == (pytest.approx(delivered / sent) if sent else None)
        assert open_rate == (pytest.approx(opened / delivered) if delivered else None)
        assert click_rate == (pytest.approx(clicked / delivered) if delivered else None)


@pytest.mark.parametrize(
    ("stage", "table"),
    [
        ("send", "delivery_minute"),
        ("delivery", "delivery_minute"),
        ("response", "delivery_minute"),
        ("send", "delivery_hour"),
        ("delivery", "delivery_hour"),
        ("response", "delivery_hour"),
        ("response", "delivery_cohort_minute"),
    ],
)
def test_sketch_percentiles_agree_with_exact_quantiles_of_the_raw_events(
    filled: Filled, stage: str, table: str
) -> None:
    """Merging every minute's (or hour's) sketch gives p50/p95/p99 within TOLERANCE of the exact quantiles
    of the same latencies in events: over everything, one channel and one tenant (300 to 2,900 values)."""
    for where in ("1", "channel = 'EMAIL'", "tenant_id = 'acme-home'"):
        count, exact, sketch = exact_and_sketch(filled, stage, table, where)
        assert count >= 300, (stage, where)
        for level, e, s in zip(LEVELS, exact, sketch, strict=True):
            assert s == pytest.approx(e, rel=TOLERANCE[level]), (stage, table, where, level)


def test_latency_minute_view_gives_each_minutes_counts_and_percentiles(filled: Filled) -> None:
    """latency_minute, per minute x tenant x channel x provider: counts equal the raw events exactly,
    p50/p95/p99 of each stage are its sketches merged in that order, and on the busiest minutes the median
    is within TOLERANCE of the exact one (a p95 of 60 values hangs on its interpolation)."""
    group = "minute, tenant_id, channel, provider"
    stages = ("send", "delivery", "response")
    view = filled.rows(
        f"SELECT {group}, send_count, delivery_count, "
        + ", ".join(f"{st}_p{n}" for st in stages for n in (50, 95, 99))
        + f" FROM latency_minute WHERE {IN_SIMULATION} ORDER BY ALL"
    )
    direct = filled.rows(
        f"SELECT {group}, sum(send_latency_count), sum(delivery_latency_count), "
        + ", ".join(f"quantilesTDigestMerge{LEVELS}({STAGES[st][0]})" for st in stages)
        + f" FROM delivery_minute WHERE {IN_SIMULATION} GROUP BY {group} ORDER BY ALL"
    )
    flat = [(*r[:6], *(q for qs in r[6:] for q in qs)) for r in direct]
    assert len(view) > 100
    assert [tuple(map(_no_nan, r)) for r in view] == [tuple(map(_no_nan, r)) for r in flat]
    raw = filled.rows(
        "SELECT toStartOfMinute(occurred_at) AS minute, tenant_id, channel, provider, "
        "countIf(event_type = 'SENT' AND latency_ms IS NOT NULL), "
        "countIf(event_type = 'DELIVERED' AND latency_ms IS NOT NULL) "
        f"FROM events WHERE {IN_SIMULATION} GROUP BY {group} ORDER BY ALL"
    )
    assert [r[:6] for r in view] == raw
    busiest = [r for r in view if r[5] >= 40]
    assert len(busiest) >= 3
    for minute, tenant, channel, provider, _, _, _, _, _, p50, *_ in busiest:
        e50 = filled.rows(
            "SELECT quantileExactInclusive(0.5)(latency_ms) FROM events "
            "WHERE event_type = 'DELIVERED' AND latency_ms IS NOT NULL "
            "AND toStartOfMinute(occurred_at) = {m:DateTime('UTC')} "
            "AND tenant_id = {t:String} AND channel = {c:String} AND provider = {p:String}",
            m=minute,
            t=tenant,
            c=channel,
            p=provider,
        )[0][0]
        assert p50 == pytest.approx(e50, rel=TOLERANCE[0.5])


def test_a_late_bounce_and_a_late_open_update_their_send_minute(filled: Filled) -> None:
    """A SENT at 10:00 and, in a later batch, its BOUNCED at 13:00 (sent_at 10:00): the cohort row of
    10:00 counts the bounce and no cohort row exists at 13:00, while delivery_minute (occurred_at) counts
    it at 13:00. A late OPENED likewise raises the 10:00 open rate and lands in its response sketch."""
    ten, one_pm = datetime(2026, 4, 7, 10, 0), datetime(2026, 4, 7, 13, 0)  # as the engine returns them
    common = {"tenant_id": LATE, "channel": "EMAIL", "provider": "smtp-late", "template_id": "late-t"}
    a, b = {**common, "notification_id": "late-a"}, {**common, "notification_id": "late-b"}
    sent_a, sent_b = T0.replace(hour=10, second=5), T0.replace(hour=10, second=20)
    delivered_b, bounced_a, opened_b = (
        sent_b + timedelta(seconds=5),
        T0.replace(hour=13, second=10),
        T0.replace(hour=13, second=40),
    )
    open_ms = (opened_b - delivered_b) // timedelta(milliseconds=1)
    filled.apply(
        "late",
        0,
        [
            {**a, "event_id": "late-a-sent", "event_type": "SENT", "occurred_at": sent_a, "latency_ms": 40},
            {**b, "event_id": "late-b-sent", "event_type": "SENT", "occurred_at": sent_b, "latency_ms": 60},
            {**b, "event_id": "late-b-delivered", "event_type": "DELIVERED", "occurred_at": delivered_b}
            | {"sent_at": sent_b, "latency_ms": 5000},
        ],
    )
    cohort = (
        "SELECT send_minute, sum(sent), sum(delivered), sum(bounced), sum(opened) "
        "FROM delivery_cohort_minute WHERE tenant_id = {t:String} GROUP BY send_minute ORDER BY send_minute"
    )
    assert filled.rows(cohort, t=LATE) == [(ten, 2, 1, 0, 0)]

    bounce = {"error_class": "mailbox_full", "code": "552", "message": "full", "retryable": True}
    filled.apply(
        "late",
        3,
        [
            {**a, "event_id": "late-a-bounced", "event_type": "BOUNCED", "occurred_at": bounced_a}
            | {"sent_at": sent_a, "error": bounce},
            {**b, "event_id": "late-b-opened", "event_type": "OPENED", "occurred_at": opened_b}
            | {"sent_at": sent_b, "latency_ms": open_ms},
        ],
    )
    assert filled.rows(cohort, t=LATE) == [(ten, 2, 1, 1, 1)]  # nothing at 13:00
    by_occurrence = filled.rows(
        "SELECT minute, sum(sent), sum(delivered), sum(bounced), sum(opened) FROM delivery_minute "
        "WHERE tenant_id = {t:String} GROUP BY minute ORDER BY minute",
        t=LATE,
    )
    assert by_occurrence == [(ten, 2, 1, 0, 0), (one_pm, 0, 0, 1, 1)]
    ((send_minute, open_rate, bounce_rate, response_p50),) = filled.rows(
        "SELECT send_minute, open_rate, bounce_rate, response_p50 FROM engagement_by_send_minute "
        "WHERE tenant_id = {t:String}",
        t=LATE,
    )
    assert (send_minute, open_rate, bounce_rate, response_p50) == (ten, 1.0, 0.5, open_ms)


def test_rows_from_before_the_migration_keep_their_counts_and_have_no_sketch(filled: Filled) -> None:
    """The previous version's rows: sent_at NULL, counted in delivery_minute (also after a merge with
    the new sketch columns), no sketch, and absent from the cohort rollup."""
    filled.warehouse.command("OPTIMIZE TABLE delivery_minute FINAL")
    ((sent, delivered, latency_sum, sketch),) = filled.rows(
        "SELECT sum(sent), sum(delivered), sum(delivery_latency_ms_sum), "
        "quantilesTDigestMerge(0.5, 0.95, 0.99)(delivery_latency_digest) FROM delivery_minute "
        "WHERE tenant_id = {t:String}",
        t=LEGACY,
    )
    assert (sent, delivered, latency_sum) == (30, 30, 30 * 2000)
    assert all(math.isnan(q) for q in sketch)
    assert filled.rows(
        "SELECT countIf(sent_at IS NOT NULL) FROM events WHERE tenant_id = {t:String}", t=LEGACY
    ) == [(0,)]
    assert filled.rows(
        "SELECT count() FROM delivery_cohort_minute WHERE tenant_id = {t:String}", t=LEGACY
    ) == [(0,)]
    # and the merged table still equals the raw events for everyone
    raw = filled.rows(
        "SELECT tenant_id, countIf(event_type = 'SENT'), countIf(event_type = 'DELIVERED') FROM events "
        "GROUP BY tenant_id ORDER BY tenant_id"
    )
    assert raw == filled.rows(
        "SELECT tenant_id, sum(sent), sum(delivered) FROM delivery_minute "
        "GROUP BY tenant_id ORDER BY tenant_id"
    )


def test_migrations_run_again_change_nothing_and_every_rollup_keeps_one_view(filled: Filled) -> None:
    """migrate() finds nothing to do; running every statement again (a crash before the ledger row, or
    replay's rebuild) leaves the data as it was, and a new event reaches each rollup exactly once."""
    snapshot = (
        "SELECT (SELECT sum(sent) + sum(delivered) FROM delivery_minute), "
        "(SELECT sum(sent) + sum(delivered) FROM delivery_hour), "
        "(SELECT sum(sent) + sum(delivered) FROM delivery_cohort_minute)"
    )
    before = filled.rows(snapshot)[0]
    assert migrate(filled.warehouse) == []
    for migration in discover():
        for statement in migration.statements():
            filled.warehouse.command(statement)
    assert filled.rows(snapshot)[0] == before
    event = {
        "event_id": "again-sent",
        "event_type": "SENT",
        "occurred_at": T0,
        "tenant_id": "again-home",
        "notification_id": "again",
        "channel": "PUSH",
        "latency_ms": 7,
    }
    filled.apply("again", 0, [event])
    assert filled.rows(snapshot)[0] == tuple(v + 1 for v in before)
    views = filled.rows(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine = 'MaterializedView' "
        "ORDER BY name"
    )
    assert views == [
        ("delivery_cohort_minute_mv",), ("delivery_hour_mv",), ("delivery_minute_mv",),
        ("engagement_profiles_mv",), ("experiment_variant_minute_mv",),
    ]  # fmt: skip
