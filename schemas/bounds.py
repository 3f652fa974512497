"""How large each lifecycle field may be: the range of the warehouse column it lands in, narrowed to
what the domain allows. Pure: values only.

Avro decoding proves an ``int`` fits 32 bits and a ``long`` 64 (schemas/varints.py); the ``events``
columns are narrower (``template_version Nullable(UInt32)``) and a value they cannot hold fails the
whole insert of its batch, so the contract (schemas/contract.py) holds every field to the bound here
and dead-letters the event instead. Each numeric and time bound lies inside its column's type, as
:func:`column_range` reads it from the type's name; tests/integration/test_bounds_engine.py checks
that against the real engine's ``system.columns`` and that every numeric column fed from the contract
has a bound.

Strings have no range in the engine (``String`` holds any bytes), but a row should hold what a person
can read: free text is bounded in characters (``len`` of the decoded str), ids by the contract's
patterns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Generic, NamedTuple, TypeVar

__all__ = [
    "COST_MICROS_MAX",
    "DATETIME64_MAX",
    "DATETIME64_MIN",
    "EARLIEST",
    "EVENT_COLUMN",
    "LATENCY_MS_MAX",
    "NUMBER_BOUNDS",
    "TEXT_BOUNDS",
    "TIME_BOUNDS",
    "Bound",
    "column_range",
]

T = TypeVar("T", int, datetime)


class Bound(NamedTuple, Generic[T]):
    """The least and greatest value a field may take, and why that greatest (for messages)."""

    minimum: T
    maximum: T
    why: str


# Column types (ClickHouse): the ranges the engine can store.
DATETIME64_MIN: Final = datetime(1900, 1, 1, tzinfo=UTC)
DATETIME64_MAX: Final = datetime(2299, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)  # DateTime64(3)
DATETIME_MIN: Final = datetime(1970, 1, 1, tzinfo=UTC)
DATETIME_MAX: Final = datetime(2106, 2, 7, 6, 28, 15, tzinfo=UTC)

# Domain bounds: what a mature product accepts for one notification's step.
AVRO_INT_MAX: Final = 2**31 - 1  # template_version, campaign_step: Avro ints, inside UInt32
LATENCY_MS_MAX: Final = 30 * 24 * 60 * 60 * 1000  # 30 days between two steps of one notification
COST_MICROS_MAX: Final = 10**12  # a million currency units for one provider step
EARLIEST: Final = datetime(2000, 1, 1, tzinfo=UTC)  # older is a clock or unit error (seconds as ms)

NUMBER_BOUNDS: Final[Mapping[str, Bound[int]]] = {
    "template_version": Bound(0, AVRO_INT_MAX, "the Avro int maximum"),
    "campaign_step": Bound(0, AVRO_INT_MAX, "the Avro int maximum"),
    "latency_ms": Bound(0, LATENCY_MS_MAX, "30 days"),
    "cost_micros": Bound(0, COST_MICROS_MAX, "a million currency units"),
}
"""Integer fields: (minimum, maximum) within the column type (UInt32, UInt64) and the domain."""

# The contract adds occurred_at <= now + 1 day and sent_at <= occurred_at, which keep both inside
# the rollups' DateTime minute columns (1970 to 2106) as well.
TIME_BOUNDS: Final[Mapping[str, Bound[datetime]]] = {
    "occurred_at": Bound(EARLIEST, DATETIME64_MAX, "DateTime64(3)"),
    "sent_at": Bound(EARLIEST, DATETIME64_MAX, "DateTime64(3)"),
}
"""Timestamp fields: (earliest, latest) within DateTime64(3, 'UTC') and after 2000-01-01."""

# Free text, in characters.
PROVIDER_MAX_CHARS: Final = 64
NAME_MAX_CHARS: Final = 128  # template, campaign and experiment ids, as long as the contract's ids
VARIANT_MAX_CHARS: Final = 64
RECIPIENT_ID_MAX_CHARS: Final = 128
RECIPIENT_ATTRIBUTE_MAX_CHARS: Final = 64  # tier, role
LANGUAGE_TAG_MAX_CHARS: Final = 35  # BCP 47: RFC 5646 4.4.1 asks readers to hold tags of 35 characters
COUNTRY_CODE_MAX_CHARS: Final = 2  # ISO 3166-1 alpha-2
CURRENCY_CODE_MAX_CHARS: Final = 3  # ISO 4217
ERROR_CLASS_MAX_CHARS: Final = 64
ERROR_CODE_MAX_CHARS: Final = 64
ERROR_MESSAGE_MAX_CHARS: Final = 4096  # a provider's reply, not its whole transcript
REASON_MAX_CHARS: Final = 256
POLICY_VERSION_MAX_CHARS: Final = 128  # a content hash
SOURCE_MAX_CHARS: Final = 128  # a service name

TEXT_BOUNDS: Final[Mapping[str, Bound[int]]] = {
    "provider": Bound(0, PROVIDER_MAX_CHARS, ""),
    "template_id": Bound(0, NAME_MAX_CHARS, ""),
    "campaign_id": Bound(0, NAME_MAX_CHARS, ""),
    "experiment_id": Bound(0, NAME_MAX_CHARS, ""),
    "variant": Bound(0, VARIANT_MAX_CHARS, ""),
    "recipient.id": Bound(0, RECIPIENT_ID_MAX_CHARS, ""),
    "recipient.tier": Bound(0, RECIPIENT_ATTRIBUTE_MAX_CHARS, ""),
    "recipient.role": Bound(0, RECIPIENT_ATTRIBUTE_MAX_CHARS, ""),
    "recipient.language": Bound(0, LANGUAGE_TAG_MAX_CHARS, "a BCP 47 tag"),
    "recipient.country": Bound(0, COUNTRY_CODE_MAX_CHARS, "ISO 3166-1 alpha-2"),
    "currency": Bound(0, CURRENCY_CODE_MAX_CHARS, "ISO 4217"),
    "error.error_class": Bound(0, ERROR_CLASS_MAX_CHARS, ""),
    "error.code": Bound(0, ERROR_CODE_MAX_CHARS, ""),
    "error.message": Bound(0, ERROR_MESSAGE_MAX_CHARS, "a reply, not a transcript"),
    "reason": Bound(0, REASON_MAX_CHARS, ""),
    "policy_version": Bound(0, POLICY_VERSION_MAX_CHARS, ""),
    "source": Bound(0, SOURCE_MAX_CHARS, ""),
}
"""Optional strings, by their path in the record: at most ``maximum`` characters (``why``: the
standard that sets it, when one does)."""

EVENT_COLUMN: Final[Mapping[str, str]] = {
    **{field: field for field in (*NUMBER_BOUNDS, *TIME_BOUNDS)},
    **{path: path.replace(".", "_") for path in TEXT_BOUNDS},
    "error.error_class": "error_class",
}
"""The ``events`` column each bounded field lands in (projections/rows.py: event_row)."""


_WRAPPER = re.compile(r"^(?:Nullable|LowCardinality)\((.*)\)$")
_INTEGER = re.compile(r"^(U?)Int(8|16|32|64|128|256)$")
_DATETIME64 = re.compile(r"^DateTime64\((\d)(?:\s*,\s*'[^']*')?\)$")
_DATETIME = re.compile(r"^DateTime(?:\('[^']*'\))?$")
_NO_RANGE = frozenset({"String", "Bool"})


def column_range(column_type: str) -> Bound[int] | Bound[datetime] | None:
    """The values a ClickHouse column of ``column_type`` can hold; None for a type without a range
    (String, Bool). Raises ValueError for a type it does not know, so a new column type is noticed.

    >>> column_range("Nullable(UInt32)")
    Bound(minimum=0, maximum=4294967295, why='UInt32')
    >>> column_range("Int8")[:2], column_range("UInt64").maximum == 2**64 - 1
    ((-128, 127), True)
    >>> column_range("DateTime64(3, 'UTC')")[1]
    datetime.datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=datetime.timezone.utc)
    >>> column_range("Nullable(DateTime64(3, 'UTC'))").minimum.year
    1900
    >>> column_range("DateTime('UTC')").maximum.year
    2106
    >>> column_range("LowCardinality(String)") is None, column_range("Bool") is None
    (True, True)
    >>> column_range("Float64")
    Traceback (most recent call last):
    ...
    ValueError: unknown column type 'Float64'
    """
    inner = column_type.strip()
    while wrapped := _WRAPPER.match(inner):
        inner = wrapped.group(1).strip()
    if inner in _NO_RANGE:
        return None
    if integer := _INTEGER.match(inner):
        bits = int(integer.group(2))
        if integer.group(1):
            return Bound(0, 2**bits - 1, inner)
        return Bound(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1, inner)
    if precision := _DATETIME64.match(inner):
        digits = int(precision.group(1))
        if digits == 9:  # nanoseconds in an Int64 end earlier
            return Bound(DATETIME64_MIN, datetime(2262, 4, 11, 23, 47, 16, 854_775, tzinfo=UTC), inner)
        fraction = 10**6 - 10 ** (6 - min(digits, 6))  # the last tick that fits, in microseconds
        return Bound(DATETIME64_MIN, DATETIME64_MAX.replace(microsecond=fraction), inner)
    if _DATETIME.match(inner):
        return Bound(DATETIME_MIN, DATETIME_MAX, inner)
    raise ValueError(f"unknown column type {column_type!r}")
