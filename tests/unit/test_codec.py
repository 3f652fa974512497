"""The Avro codec and the contract: round trips, evolution, and every kind of undecodable input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from herald.errors import DecodeError, EmitError
from schemas.codec import AVRO_DIR, MAGIC, AvroCodec, lifecycle_codec, load_schema, schema_fingerprint
from schemas.compatibility import check_all
from schemas.contract import EVENT_TYPES, contract_violations

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def full_event(**overrides: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "e-1",
        "event_type": "DELIVERED",
        "occurred_at": NOW,
        "tenant_id": "acme",
        "notification_id": "n-1",
        "channel": "EMAIL",
        "provider": "smtp-primary",
        "template_id": "welcome",
        "template_version": 2,
        "campaign_id": "c1",
        "campaign_step": 1,
        "experiment_id": "x1",
        "variant": "b",
        "recipient": {
            "id": "r-1",
            "kind": "TECHNICIAN",
            "tier": None,
            "role": "installer",
            "language": "es",
            "country": "ES",
        },
        "latency_ms": 1200,
        "cost_micros": 700,
        "currency": "USD",
        "error": None,
        "reason": None,
        "policy_version": None,
        "source": "notifier",
        "sent_at": NOW - timedelta(seconds=3),
    }
    event.update(overrides)
    return event


def test_every_event_type_round_trips_through_the_codec() -> None:
    """Encoding then decoding gives back the same record for each lifecycle event type."""
    codec = lifecycle_codec()
    for event_type in EVENT_TYPES:
        event = full_event(
            event_type=event_type,
            error={"error_class": "timeout", "code": "T1", "message": "slow", "retryable": True},
        )
        assert codec.decode(codec.encode(event)) == event


def test_records_carry_the_single_object_header_with_the_writer_fingerprint() -> None:
    """Each record starts with C3 01 and the CRC-64-AVRO fingerprint of the schema that wrote it."""
    codec = lifecycle_codec()
    data = codec.encode(full_event())
    assert data[:2] == MAGIC
    assert data[2:10] == schema_fingerprint(load_schema(AVRO_DIR / "lifecycle_event.avsc"))


def test_fingerprint_matches_the_avro_specification_example() -> None:
    """The fingerprint of the primitive schema "int" is the one the Avro spec's test vectors give."""
    # The spec's test vector: "int" -> 8247732601305521295, written as 8 little-endian bytes.
    assert schema_fingerprint({"type": "int"}) == (8247732601305521295).to_bytes(8, "little")


def test_garbage_bytes_are_not_single_object_records() -> None:
    """Bytes without the marker are refused with the not_single_object kind."""
    with pytest.raises(DecodeError) as err:
        lifecycle_codec().decode(b"hello world, not avro")
    assert err.value.kind == "not_single_object"


def test_unknown_writer_fingerprint_is_refused() -> None:
    """A record written with a schema the reader never saw is refused, naming the fingerprint."""
    data = lifecycle_codec().encode(full_event())
    forged = MAGIC + b"\x00" * 8 + data[10:]
    with pytest.raises(DecodeError) as err:
        lifecycle_codec().decode(forged)
    assert err.value.kind == "unknown_schema"
    assert "0000000000000000" in err.value.message


def test_truncated_and_padded_bodies_are_malformed() -> None:
    """A body cut short or followed by stray bytes is malformed, never half-read."""
    codec = lifecycle_codec()
    data = codec.encode(full_event())
    for bad in (data[:25], data + b"\x00\x01"):
        with pytest.raises(DecodeError) as err:
            codec.decode(bad)
        assert err.value.kind == "malformed"


def test_out_of_range_enum_index_is_malformed() -> None:
    """An event_type index past the enum's symbols fails decoding (the unknown-enum case)."""
    codec = lifecycle_codec()
    data = bytearray(codec.encode(full_event(event_id="e")))
    # Body: event_id = string (zigzag length 1 -> 0x02, 'e'), then the enum index (zigzag varint).
    assert data[10:12] == b"\x02e"
    data[12] = 0x7E  # index 63
    with pytest.raises(DecodeError) as err:
        codec.decode(bytes(data))
    assert err.value.kind == "malformed"


def test_encoding_a_record_that_breaks_the_types_raises_emit_error() -> None:
    """A missing required field is reported at encode time, naming the problem."""
    event = full_event()
    del event["tenant_id"]
    with pytest.raises(EmitError, match=r"tenant_id|does not match"):
        lifecycle_codec().encode(event)


def test_old_writer_records_are_read_into_the_current_shape(tmp_path: Path) -> None:
    """A record from an older schema version without an optional field decodes with its default."""
    current = load_schema(AVRO_DIR / "lifecycle_event.avsc")
    old = json.loads(json.dumps(current))
    old["fields"] = [f for f in old["fields"] if f["name"] != "source"]
    old_codec = AvroCodec(old)
    reader = AvroCodec(current, history=[old])
    event = full_event()
    del event["source"]
    decoded = reader.decode(old_codec.encode(event))
    assert decoded["source"] is None and decoded["tenant_id"] == "acme"


def test_schema_history_is_backward_and_forward_compatible() -> None:
    """Every stored schema version can be read by the current reader and vice versa."""
    assert check_all() == []


def test_an_incompatible_change_is_reported(tmp_path: Path) -> None:
    """Adding a required field without a default breaks backward compatibility and is caught."""
    (tmp_path / "history").mkdir()
    current = load_schema(AVRO_DIR / "lifecycle_event.avsc")
    (tmp_path / "history" / "lifecycle_event.v1.avsc").write_text(json.dumps(current))
    changed = json.loads(json.dumps(current))
    changed["fields"].append({"name": "region", "type": "string"})
    (tmp_path / "lifecycle_event.avsc").write_text(json.dumps(changed))
    problems = check_all(tmp_path)
    assert any("not backward compatible" in p for p in problems)


def test_contract_accepts_a_full_event() -> None:
    """A well-formed event has no violations."""
    assert contract_violations(full_event(), NOW) == []


def test_sent_at_is_optional_and_may_equal_occurred_at() -> None:
    """sent_at absent (older writers, events before a send) or equal to occurred_at is fine."""
    assert contract_violations(full_event(sent_at=None), NOW) == []
    no_field = full_event()
    del no_field["sent_at"]
    assert contract_violations(no_field, NOW) == []
    assert contract_violations(full_event(event_type="SENT", sent_at=NOW), NOW) == []


def test_a_v1_record_without_sent_at_decodes_with_sent_at_none() -> None:
    """A record of history/lifecycle_event.v1 (before sent_at) is read into the current shape."""
    v1 = AvroCodec(load_schema(AVRO_DIR / "history" / "lifecycle_event.v1.avsc"))
    event = full_event()
    del event["sent_at"]
    decoded = lifecycle_codec().decode(v1.encode(event))
    assert decoded == {**event, "sent_at": None}


def test_an_older_writers_out_of_range_int_is_malformed_naming_the_field() -> None:
    """A v1 record (read through fastavro) with template_version past the Avro int range is refused
    like a current one, although fastavro alone would read it as 4294967301."""
    v1 = AvroCodec(load_schema(AVRO_DIR / "history" / "lifecycle_event.v1.avsc"))
    event = full_event(template_version=123_456_789)
    del event["sent_at"]
    data = v1.encode(event)
    sentinel = b"\xaa\xb4\xde\x75"  # zig-zag varint of 123456789
    patched = data.replace(sentinel, b"\x8a\x80\x80\x80\x20")  # 2**32 + 5
    assert data.count(sentinel) == 1 and len(patched) == len(data) + 1
    assert lifecycle_codec().decode(data)["template_version"] == 123_456_789
    with pytest.raises(DecodeError) as err:
        lifecycle_codec().decode(patched)
    assert err.value.kind == "malformed"
    assert err.value.message.startswith("template_version: 4294967301 is outside the Avro int range")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"event_type": "UNKNOWN"}, "event_type"),
        ({"channel": "UNKNOWN"}, "channel"),
        ({"tenant_id": "Acme Corp"}, "tenant_id"),
        ({"event_id": ""}, "event_id"),
        ({"occurred_at": datetime(1999, 1, 1, tzinfo=UTC)}, "occurred_at"),
        ({"occurred_at": datetime(2026, 12, 5, tzinfo=UTC)}, "occurred_at"),
        ({"latency_ms": -5}, "latency_ms"),
        ({"event_type": "BOUNCED", "error": None}, "error"),
        ({"sent_at": NOW + timedelta(milliseconds=1)}, "sent_at"),
        ({"sent_at": 1_700_000_000_000}, "sent_at"),
        ({"sent_at": datetime(1970, 1, 1, tzinfo=UTC)}, "sent_at"),
    ],
)
def test_contract_names_the_field_that_is_wrong(overrides: dict[str, object], field: str) -> None:
    """Each semantic violation is reported as 'field: problem'."""
    problems = contract_violations(full_event(**overrides), NOW)
    assert len(problems) == 1 and problems[0].startswith(f"{field}:")


@pytest.mark.parametrize("path", sorted(AVRO_DIR.glob("*.avsc")), ids=lambda p: p.stem)
def test_every_contract_round_trips_a_record_with_every_optional_field_set(path: Path) -> None:
    """Each contract (lifecycle events, alerts, dispatch requests) encodes and decodes losslessly."""
    from schemas.compatibility import _example

    codec = AvroCodec.for_contract(path.stem)
    record = _example(load_schema(path))
    decoded = codec.decode(codec.encode(record))
    assert set(decoded) == set(record)
    assert codec.decode(codec.encode(decoded)) == decoded
