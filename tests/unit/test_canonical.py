"""Canonical forms of tables by engine, for fingerprints and recounts (the SQL, not its results)."""

from __future__ import annotations

import doctest

import pytest

import projections.canonical
from projections.canonical import (
    CanonicalError,
    Column,
    TableShape,
    canonical_select,
    checksum_select,
    recount_select,
)

PROFILES = TableShape(
    "profiles",
    "AggregatingMergeTree",
    "AggregatingMergeTree ORDER BY (tenant_id, recipient_id)",
    ("tenant_id", "recipient_id"),
    (
        Column("tenant_id", "LowCardinality(String)"),
        Column("recipient_id", "String"),
        Column("tier", "SimpleAggregateFunction(anyLast, LowCardinality(String))"),
        Column("sent", "SimpleAggregateFunction(sum, UInt64)"),
        Column("last_seen", "SimpleAggregateFunction(max, DateTime64(3, 'UTC'))"),
        Column("exposed", "AggregateFunction(uniqExact, String)"),
        Column("latency", "AggregateFunction(quantilesTDigest(0.5, 0.99), UInt64)"),
    ),
)


def test_module_doctests_pass() -> None:
    """The examples in the canonical module's docstrings hold."""
    assert doctest.testmod(projections.canonical).failed == 0


def test_an_aggregating_rollup_is_one_merged_row_per_sorting_key() -> None:
    """Simple aggregates by their function, picks by min, states merged, sketches by count and quantiles."""
    sql = canonical_select(PROFILES)
    assert sql.startswith(
        "SELECT tenant_id AS _k0, recipient_id AS _k1, min(tier) AS _v0, sum(sent) AS _v1, "
    )
    assert "max(last_seen) AS _v2, uniqExactMerge(exposed) AS _v3, " in sql
    assert (
        "quantilesTDigestMergeState(0.5, 0.99)(latency)" in sql
        and "quantilesTDigestMerge(0.5, 0.99)(latency)" in sql
    )
    assert sql.endswith("FROM profiles GROUP BY _k0, _k1")  # no HAVING: only SummingMergeTree drops zeros


def test_a_plain_table_hashes_every_row_without_the_excluded_columns() -> None:
    """MergeTree rows as they are, less the columns named as legitimately different."""
    events = TableShape(
        "events",
        "MergeTree",
        "MergeTree ORDER BY k",
        ("k",),
        (Column("k", "String"), Column("ingested_at", "DateTime")),
    )
    assert canonical_select(events, exclude=("ingested_at",)) == "SELECT k AS _v0 FROM events"
    assert checksum_select(events, exclude=("ingested_at",)) == (
        "SELECT count(), sum(cityHash64(tuple(_v0))) FROM (SELECT k AS _v0 FROM events)"
    )


def test_a_replacing_table_is_read_final() -> None:
    """ReplacingMergeTree rows as its merges will leave them."""
    alerts = TableShape("alerts", "ReplicatedReplacingMergeTree", "", ("id",), (Column("id", "String"),))
    assert canonical_select(alerts) == "SELECT id AS _v0 FROM alerts FINAL"


def test_a_regrouped_table_sums_its_other_numbers_per_given_key() -> None:
    """Rows that follow the consumer's batching become totals per topic and partition."""
    batches = TableShape(
        "ingest_batches",
        "MergeTree",
        "MergeTree ORDER BY (topic, partition, first_offset)",
        ("topic", "partition", "first_offset"),
        tuple(
            Column(n, t)
            for n, t in [
                ("topic", "String"),
                ("partition", "UInt16"),
                ("first_offset", "UInt64"),
                ("dead_letters", "UInt32"),
            ]
        ),
    )
    sql = canonical_select(batches, exclude=("first_offset",), group_by=("topic", "partition"))
    assert sql == (
        "SELECT topic AS _k0, partition AS _k1, sum(dead_letters) AS _v0 "
        "FROM ingest_batches GROUP BY _k0, _k1"
    )


def test_engines_without_a_known_form_are_refused() -> None:
    """A MergeTree variant this module does not know, or a view, has no canonical form."""
    for engine in ("GraphiteMergeTree", "MaterializedView"):
        with pytest.raises(CanonicalError):
            canonical_select(TableShape("x", engine, "", (), (Column("a", "UInt8"),)))


def test_a_recount_compares_the_exact_columns_and_skips_picks_and_sketches() -> None:
    """Counts, sums, maxima and exact sets are recounted; anyLast and t-digests are listed as skipped."""
    recount = recount_select(
        "SELECT tenant_id, recipient_id FROM events GROUP BY tenant_id, recipient_id", PROFILES
    )
    assert recount.keys == ("tenant_id", "recipient_id")
    assert recount.compared == ("sent", "last_seen", "exposed")
    assert recount.skipped == ("tier", "latency")
    assert (
        "FROM (SELECT tenant_id, recipient_id FROM events GROUP BY tenant_id, recipient_id) GROUP BY _k0, _k1"
        in recount.sql
    )
    assert "USING (_k0, _k1) WHERE _recount._v0 != _stored._v0 OR _recount._v1 != _stored._v1" in recount.sql
