"""The span of time Herald accepts from callers: every date a request or a definition gives.

Outside it a date is a mistake (year 0001, 9999), and it would reach code that cannot represent it:
``astimezone`` overflows near the ends of Python's range, and the warehouse's ``DateTime64`` clamps
what it cannot store. One check, reported as the field's problem, keeps such a date a 4xx.

>>> from datetime import UTC, datetime
>>> in_range(datetime(2026, 1, 1, tzinfo=UTC)), in_range(datetime(1, 1, 1, tzinfo=UTC))
(True, False)
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["EARLIEST", "LATEST", "OUT_OF_RANGE", "in_range"]

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)
OUT_OF_RANGE = f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}"


def in_range(value: datetime) -> bool:
    """Whether ``value`` (naive means UTC) lies in ``[EARLIEST, LATEST]``.

    Aware datetimes are compared as such, never converted: converting 9999-12-31T23:00-05:00 to UTC
    overflows.

    >>> from datetime import timedelta, timezone
    >>> in_range(datetime(9999, 12, 31, 23, tzinfo=timezone(timedelta(hours=-5))))
    False
    >>> in_range(datetime(2100, 1, 1))
    True
    """
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return EARLIEST <= aware <= LATEST
