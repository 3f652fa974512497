"""Fingerprints and recounts on the real warehouse engine: they do not move when the engine merges parts,
and they catch a rollup that counted events twice."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import pytest

from projections.canonical import digest_count
from projections.fingerprint import UNCOMPARED, derived_tables, fingerprints, recount_rollups
from projections.lineage import catalog, statements_of
from projections.migrate import discover, migrate
from projections.warehouse import Warehouse
from simulator.model import generate
from simulator.profiles import DEFAULT_MODEL
from tests.integration.helpers import ingest

pytestmark = pytest.mark.integration

START = datetime(2026, 3, 1, tzinfo=UTC)
NOW = datetime(2026, 3, 2, tzinfo=UTC)
EVENTS, BATCH = 6000, 500


@pytest.fixture
def warehouse(tmp_path: Path) -> Iterator[Warehouse]:
    """A migrated warehouse holding simulated traffic written through the ingest path in many inserts."""
    opened = Warehouse(f"chdb://{tmp_path / 'warehouse'}")
    try:
        migrate(opened)
        events = list(islice(generate(DEFAULT_MODEL, START, 50.0, float("inf"), 3), EVENTS))
        for first in range(0, EVENTS, BATCH):  # offsets go on across calls, four partitions
            ingest(opened, events[first : first + BATCH], tmp_path, NOW, offset=first // 4)
        yield opened
    finally:
        opened.close()


def test_fingerprints_do_not_change_when_the_engine_merges_every_part(warehouse: Warehouse) -> None:
    """OPTIMIZE … FINAL folds every rollup's rows and parts; no fingerprint moves."""
    parts = warehouse.rows(
        "SELECT count() FROM system.parts WHERE database = currentDatabase() AND active "
        "AND table = 'delivery_minute'"
    )
    assert parts[0][0] > 1  # really unmerged before
    before = fingerprints(warehouse)
    for table in derived_tables():
        warehouse.command(f"OPTIMIZE TABLE {table} FINAL")
    assert fingerprints(warehouse) == before


def test_a_rollup_that_counted_events_twice_changes_its_fingerprint_and_fails_its_recount(
    warehouse: Warehouse,
) -> None:
    """Feeding engagement_profiles its view's rows again is seen by its fingerprint and its recount only."""
    before = fingerprints(warehouse)
    view = catalog(statements_of(discover()))["engagement_profiles_mv"]
    warehouse.command(f"INSERT INTO engagement_profiles {view.select}")
    after = fingerprints(warehouse)
    assert [t for t in before if before[t] != after[t]] == ["engagement_profiles"]
    failed = {r.table: r for r in recount_rollups(warehouse) if not r.agrees}
    assert list(failed) == ["engagement_profiles"]
    assert {d.column for d in failed["engagement_profiles"].differences} >= {"sent", "delivered"}
    assert all(
        d.stored == 2 * d.recounted for d in failed["engagement_profiles"].differences if d.column == "sent"
    )


def test_every_rollup_agrees_with_its_recount_and_skips_only_sketches_and_picks(warehouse: Warehouse) -> None:
    """Counts and sums recount exactly; t-digests and anyLast attributes are listed as not recounted."""
    recounts = {r.table: r for r in recount_rollups(warehouse)}
    assert all(r.agrees for r in recounts.values())
    assert recounts["delivery_minute"].skipped == (
        "send_latency_digest",
        "delivery_latency_digest",
        "response_latency_digest",
    )
    assert recounts["engagement_profiles"].skipped == ("kind", "tier", "role", "language", "country")
    assert recounts["experiment_variant_minute"].skipped == ()


def test_the_count_read_from_a_t_digest_state_is_the_number_of_values_in_it(warehouse: Warehouse) -> None:
    """The weights of a merged sketch's centroids add up to the latency count kept beside it."""
    rows = warehouse.rows(
        f"SELECT sum(send_latency_count), sum({digest_count('digest')}), count() FROM ("
        "SELECT sum(send_latency_count) AS send_latency_count, "
        "quantilesTDigestMergeState(0.5, 0.95, 0.99)(send_latency_digest) AS digest "
        "FROM delivery_hour GROUP BY tenant_id, hour, channel, provider, template_id, template_version)"
    )
    ((counted, in_sketches, keys),) = rows
    assert counted > 0 and in_sketches == counted and keys > 1


def test_a_table_passed_in_is_fingerprinted_beside_the_derived_ones(warehouse: Warehouse) -> None:
    """A table another component writes can be fingerprinted on request (alerts, read FINAL)."""
    found = fingerprints(warehouse, ["alerts"])
    assert set(found) == {*derived_tables(), "alerts"} - UNCOMPARED
    assert found["alerts"].rows == 0
