"""The replay check: every table derived from the log fingerprinted (projections/fingerprint.py), the
log replayed into it (streams/replay.py), fingerprinted again; where a fingerprint differs, the table's
canonical form before and after says which columns and keys."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from herald.settings import Settings
from projections.canonical import aggregate_type, canonical_select
from projections.fingerprint import EXCLUDED as FINGERPRINT_EXCLUDED
from projections.fingerprint import REGROUPED, Fingerprint, fingerprints, table_shapes
from projections.warehouse import Warehouse
from streams.replay import replay

SHOWN = 5
TDIGEST = re.compile(r"^quantiles?TDigest")
# ingest_batches' newest event and log time per batch (migration 0007) depend on where batches were cut,
# like its offsets and row counts, which projections/fingerprint.py leaves out already; it misses these
# two, so no run with other batch boundaries than its replay's can have the same fingerprint.
EXCLUDED = {
    **FINGERPRINT_EXCLUDED,
    "ingest_batches": (*FINGERPRINT_EXCLUDED["ingest_batches"], "max_occurred_at", "max_log_time"),
}


@dataclass(frozen=True)
class Replayed:
    tables: dict[str, tuple[int, str, list[str]]]  # table -> (rows, "equal"/"equal* (x %)"/"differs", notes)
    messages: int
    seconds: float


@dataclass(frozen=True)
class Canonical:
    """A table's canonical form (projections/canonical.py) as {key: values}, with the names of its value
    columns and which of them are t-digest sketches (a value ``(count, [quantiles])``)."""

    columns: tuple[str, ...]
    digests: frozenset[str]
    rows: dict[tuple[Any, ...], tuple[Any, ...]]


@dataclass(frozen=True)
class ReplayComparison:
    exact: bool  # same keys, and every exact column and every sketch's count equal
    notes: list[str]  # what differs, column by column
    moved: float = 0.0  # the largest relative move of a sketch's quantile (merge order moves them)


def canonical_rows(warehouse: Warehouse, names: Sequence[str]) -> dict[str, Canonical]:
    """Each table's canonical form: what a differing fingerprint is made of, to say what differs."""
    out = {}
    for name, shape in table_shapes(warehouse, names).items():
        excluded = EXCLUDED.get(name, ())
        keys = [k for k in REGROUPED.get(name, shape.sorting_key) if k not in excluded]
        values = [c for c in shape.columns if c.name not in keys and c.name not in excluded]
        digests = frozenset(
            c.name for c in values if TDIGEST.match(getattr(aggregate_type(c.type), "function", ""))
        )
        rows = warehouse.rows(canonical_select(shape, excluded, REGROUPED.get(name)))
        out[name] = Canonical(
            tuple(c.name for c in values),
            digests,
            {tuple(r[: len(keys)]): tuple(r[len(keys) :]) for r in rows},
        )
    return out


def compare_replay(live: Canonical, again: Canonical) -> ReplayComparison:
    """What the replay changed, column by column. A t-digest's quantiles depend on the order its parts
    were merged in (the live run's parts are not the replay's), so a sketch whose count is equal and
    whose quantiles moved is a note, not a difference; its count is what says each value went in once.

    >>> live = Canonical(("sent", "latency"), frozenset({"latency"}), {("a",): (3, (3.0, [10.0, 20.0]))})
    >>> moved = Canonical(live.columns, live.digests, {("a",): (3, (3.0, [11.0, 20.0]))})
    >>> compare_replay(live, moved).exact, round(compare_replay(live, moved).moved, 3)
    (True, 0.1)
    >>> compare_replay(live, Canonical(live.columns, live.digests, {("a",): (4, (4.0, [10.0, 20.0]))})).exact
    False
    """
    notes, exact, moved = [], True, 0.0
    only_live, only_replay = set(live.rows) - set(again.rows), set(again.rows) - set(live.rows)
    if only_live or only_replay:
        exact = False
        notes.append(f"keys only live: {len(only_live)}, only in the replay: {len(only_replay)}")
    both = [k for k in live.rows if k in again.rows]
    for i, column in enumerate(live.columns):
        keys = [k for k in both if live.rows[k][i] != again.rows[k][i]]
        if not keys:
            continue
        k = keys[0]
        if column in live.digests and all(live.rows[k][i][0] == again.rows[k][i][0] for k in keys):
            for key in keys:
                for a, b in zip(live.rows[key][i][1], again.rows[key][i][1], strict=True):
                    if a is not None and b is not None and a != b:
                        moved = max(moved, abs(b - a) / abs(a)) if a else moved
            notes.append(f"{column}: quantiles moved at {len(keys)} keys, counts equal, e.g. {k}: "
                         f"live {live.rows[k][i]}, replay {again.rows[k][i]}")  # fmt: skip
            continue
        exact = False
        notes.append(f"{column} differs at {len(keys)} keys, e.g. {k}: live {live.rows[k][i]}, "
                     f"replay {again.rows[k][i]}")  # fmt: skip
    return ReplayComparison(exact, notes, moved)


def replay_and_compare(
    settings: Settings, bootstrap: str, warehouse: Warehouse, drop: Sequence[str] = ()
) -> Replayed:
    """Fingerprint, drop the objects ``drop`` names (views and tables outside the migrations' lineage
    that would feed on the replay), replay, fingerprint again, and compare table by table."""
    live = fingerprints(warehouse, excluded=EXCLUDED)
    before = canonical_rows(warehouse, [t for t in live if t != "events"])  # events: by id, elsewhere
    for name in drop:
        warehouse.command(f"DROP TABLE IF EXISTS {name}")
    began = time.monotonic()
    report = replay(settings, bootstrap, warehouse)
    seconds = time.monotonic() - began
    again = fingerprints(warehouse, excluded=EXCLUDED)
    after = canonical_rows(warehouse, [t for t in live if again.get(t) != live[t] and t in before])
    tables: dict[str, tuple[int, str, list[str]]] = {}
    for name, fingerprint in live.items():
        if again.get(name) == fingerprint:
            tables[name] = (fingerprint.rows, "equal", [])
            continue
        notes = [f"replay {fingerprint_text(fingerprint)} -> {fingerprint_text(again.get(name))}"]
        status = "differs"
        if name in after:
            comparison = compare_replay(before[name], after[name])
            notes += comparison.notes[:SHOWN]
            if comparison.exact:
                status = f"equal* ({comparison.moved:.1%})"
        tables[name] = (fingerprint.rows, status, notes)
    return Replayed(tables, report.messages, seconds)


def fingerprint_text(f: Fingerprint | None) -> str:
    return "none" if f is None else f"{f.rows} rows #{f.checksum:x}"
