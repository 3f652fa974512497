"""Bad input from the simulator: every kind is really rejected, the way its label says."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from herald.errors import DecodeError
from schemas.bounds import ERROR_MESSAGE_MAX_CHARS
from schemas.codec import HEADER_LEN, MAGIC, lifecycle_codec
from schemas.contract import contract_violations
from simulator.badinput import (
    BAD_KINDS,
    INVALID_VALUES,
    bad_message,
    bad_messages,
    base_event,
    garbage,
)
from streams.ingest import SourceMessage, ingest

NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
UNDECODABLE = ("garbage", "wrong_schema", "missing_required_field", "unknown_enum")


def test_base_event_is_valid() -> None:
    """Each bad kind spoils a base event that is itself valid, so only the spoiled part is wrong."""
    codec = lifecycle_codec()
    event = base_event(0, seed=1, occurred_at=NOW)
    assert contract_violations(codec.decode(codec.encode(event)), NOW) == []


@pytest.mark.parametrize("kind", UNDECODABLE)
def test_undecodable_kinds_raise_decode_error_of_their_expected_kind(kind: str) -> None:
    """garbage, wrong_schema, missing_required_field and unknown_enum fail decoding, as labelled."""
    codec = lifecycle_codec()
    for index in range(12):
        message = bad_message(kind, index, seed=2, max_bytes=65_536, occurred_at=NOW)
        with pytest.raises(DecodeError) as raised:
            codec.decode(message.value)
        assert raised.value.kind == message.expected_error


def test_wrong_schema_and_unknown_enum_keep_a_well_formed_header() -> None:
    """They fail on the fingerprint or the body, not on the marker."""
    codec = lifecycle_codec()
    wrong = bad_message("wrong_schema", 0, seed=3, max_bytes=65_536, occurred_at=NOW)
    enum = bad_message("unknown_enum", 0, seed=3, max_bytes=65_536, occurred_at=NOW)
    missing = bad_message("missing_required_field", 0, seed=3, max_bytes=65_536, occurred_at=NOW)
    assert wrong.value[:2] == enum.value[:2] == MAGIC
    assert wrong.value[2:HEADER_LEN] not in codec.known_fingerprints
    assert enum.value[2:HEADER_LEN] == missing.value[2:HEADER_LEN] == codec.fingerprint


def test_garbage_never_looks_like_a_single_object_record() -> None:
    """Random bytes never start with the C3 01 marker."""
    for seed in range(500):
        assert garbage(random.Random(seed)).value[:2] != MAGIC


@pytest.mark.parametrize("variant", range(len(INVALID_VALUES)))
def test_invalid_value_decodes_but_breaks_the_contract(variant: int) -> None:
    """An empty tenant, an UNKNOWN type or a negative latency is caught by contract_violations."""
    message = bad_message(
        "invalid_value", variant * len(BAD_KINDS), seed=4, max_bytes=65_536, occurred_at=NOW
    )
    decoded = lifecycle_codec().decode(message.value)
    assert contract_violations(decoded, NOW) != []
    assert message.expected_error == "invalid"


@pytest.mark.parametrize("max_bytes", [512, 65_536, 1_000_000])
def test_oversized_is_an_event_larger_than_max_bytes_wrong_only_in_its_error_message(max_bytes: int) -> None:
    """It decodes and is over the limit, which ingest checks first; past the contract's error message
    bound (a limit of 4096 bytes or more) that message is the only other thing wrong."""
    message = bad_message("oversized", 0, seed=5, max_bytes=max_bytes, occurred_at=NOW)
    assert len(message.value) > max_bytes
    problems = contract_violations(lifecycle_codec().decode(message.value), NOW)
    if max_bytes < ERROR_MESSAGE_MAX_CHARS:
        assert problems == []
    else:
        assert problems == [
            f"error.message: {max_bytes + 1} characters is above 4096 (a reply, not a transcript)"
        ]
    result = ingest([SourceMessage("t", 0, 0, message.key, message.value)], lifecycle_codec().decode, {}, {},
                    NOW, max_bytes)  # fmt: skip
    assert [dict(d.headers)["herald.error.class"] for d in result.dead_letters] == [b"oversized"]


def test_bad_messages_cycle_through_every_kind_deterministically() -> None:
    """n messages hold every kind about n/6 times, and the same seed gives the same bytes."""
    messages = bad_messages(60, seed=6, max_bytes=1024, occurred_at=NOW)
    assert [m.kind for m in messages[:6]] == list(BAD_KINDS)
    assert {kind: sum(m.kind == kind for m in messages) for kind in BAD_KINDS} == dict.fromkeys(BAD_KINDS, 10)
    assert messages == bad_messages(60, seed=6, max_bytes=1024, occurred_at=NOW)
    assert messages != bad_messages(60, seed=7, max_bytes=1024, occurred_at=NOW)


def test_unknown_kind_names_the_valid_ones() -> None:
    """A typo in a kind is a clear error."""
    with pytest.raises(ValueError, match="valid: garbage, wrong_schema"):
        bad_message("nonsense", 0, seed=1, max_bytes=1024, occurred_at=NOW)
