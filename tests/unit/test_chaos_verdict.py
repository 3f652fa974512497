"""The chaos suite's pure parts (tests/chaos): how it counts a rollup off its recount, dead letters and
poison, and the verdict it draws from the numbers. The suite itself runs with `make chaos`."""

from __future__ import annotations

import doctest
from collections import Counter
from datetime import UTC, datetime

import tests.chaos.measure
import tests.chaos.poison
import tests.chaos.replayed
from projections.fingerprint import Difference
from schemas.codec import HEADER_LEN, MAGIC, lifecycle_codec
from tests.chaos.measure import DeadLetters, Measurement, TableCount, cells, count_dead_letters
from tests.chaos.poison import FOREIGN_KINDS, foreign, varint
from tests.chaos.report import verdict
from tests.chaos.scenario import Outcome

AT = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def measurement(*tables: TableCount, dead: DeadLetters | None = None, **extra: int) -> Measurement:
    return Measurement(
        list(tables),
        dead or DeadLetters(0, 0, 0, 0, 0, 0),
        extra.get("unexpected_rows", 0),
        [],
        extra.get("unmarked", 0),
        100,
        1.0,
    )


def judged(m: Measurement, **counts: int) -> list[str]:
    outcome = Outcome("kills", 1, measurement=m, minimums={"kills": 20})
    outcome.counts.update(counts)
    return verdict(outcome)


def test_the_chaos_modules_doctests_pass() -> None:
    """The examples in the suite's docstrings hold."""
    for module in (tests.chaos.measure, tests.chaos.poison, tests.chaos.replayed):
        assert doctest.testmod(module).failed == 0


def test_a_rollup_cell_below_its_recount_is_lost_and_one_above_is_duplicated() -> None:
    """Cells under the recount from events count as lost, cells over it as counted twice."""
    differences = (
        Difference(("acme", 1), "sent", 5, 4),
        Difference(("acme", 1), "delivered", 5, 3),
        Difference(("beta", 2), "sent", 2, 3),
    )
    counted = cells("delivery_minute", differences)
    assert (counted.lost, counted.duplicated, counted.recount) == (2, 1, "2 keys differ")


def test_each_bad_message_is_found_once_twice_or_missing_on_the_dead_letter_topic() -> None:
    """Dead letters are matched to the bad messages sent by their bytes; the rest is unexpected."""
    sent = Counter({b"a": 1, b"b": 1, b"c": 1})
    letters = [(b"a", {"herald.stage": "decode", "herald.error.class": "malformed"}),
               (b"b", {"herald.stage": "validate", "herald.error.class": "invalid"}),
               (b"b", {"herald.stage": "validate", "herald.error.class": "invalid"}),
               (b"valid", {"herald.stage": "warehouse", "herald.error.class": "refused"})]  # fmt: skip
    counted = count_dead_letters(letters, sent)
    assert (counted.expected, counted.once, counted.twice, counted.missing, counted.unexpected) == (
        3, 2, 1, 1, 1,
    )  # fmt: skip
    assert counted.by_stage == {"decode/malformed": 1, "validate/invalid": 2, "warehouse/refused": 1}


def test_a_scenario_with_every_count_exact_and_its_faults_made_passes() -> None:
    """Nothing lost, nothing twice, recounts and replay equal (sketch quantiles may move), all faults
    made: no failure."""
    m = measurement(
        TableCount("events", 10, 0, 0, "-", "equal"),
        TableCount("delivery_hour", 3, 0, 0, "equal", "equal* (2.6%)"),
        TableCount("ingest_batches", 4, None, None, "-", "equal"),
    )
    assert judged(m, kills=20) == []


def test_the_verdict_names_every_table_off_its_count_and_every_shortfall() -> None:
    """A lost row, a duplicate, a recount or replay that differs, poison as a row, an unmarked batch,
    a dead letter twice, too few kills: each is a failure of its own."""
    m = measurement(
        TableCount("events", 10, 1, 0, "-", "equal"),
        TableCount("delivery_hour", 3, 0, 2, "1 keys differ", "differs"),
        dead=DeadLetters(3, 4, 3, 1, 0, 0),
        unexpected_rows=1,
        unmarked=7,
    )
    assert judged(m, kills=19) == [
        "events: 1 lost",
        "delivery_hour: 2 duplicated",
        "delivery_hour: 1 keys differ from the recount",
        "delivery_hour: the replay's fingerprint differs",
        "dead letters: 1 dead-lettered twice",
        "events: 1 rows of messages sent as poison ()",
        "ingest_batches: 7 rows past their partition's last marker",
        "kills: 19 of the 20 planned",
    ]


def test_foreign_poison_keeps_the_contracts_framing_and_carries_its_value_in_the_body() -> None:
    """Every foreign-writer message is a single-object record of the lifecycle schema's own fingerprint:
    only a range check, the contract or the engine can catch it; the varint kinds carry their value."""
    codec = lifecycle_codec()
    poison = {kind: foreign(kind, i, 7, AT) for i, kind in enumerate(FOREIGN_KINDS)}
    for message in poison.values():
        assert message.value[:2] == MAGIC and message.value[2:HEADER_LEN] == codec.fingerprint
    assert varint(2**31) in poison["template_version_past_int32"].value[HEADER_LEN:]
    assert varint(2**32 + 5) in poison["template_version_past_uint32"].value[HEADER_LEN:]
    assert varint(7, padding=10) in poison["cost_in_11_byte_varint"].value[HEADER_LEN:]
