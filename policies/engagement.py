"""Engagement profiles: a small, mergeable per-recipient summary folded from lifecycle events.

A profile is a monoid: counts add, ``last_*`` timestamps take the maximum and ``unsubscribed`` is a
logical or, so ``merge`` is associative and commutative and ``EngagementProfile()`` is its identity.
Folding a stream therefore gives the same profile in any order and over any split into partitions,
which is what lets several workers (or a replay) build the same profiles. ``apply`` is *not*
idempotent: the caller must dedup by ``event_id`` first (the ingest agent does, see streams/dedup.py).

Profiles are per (tenant, recipient id); the caller keys them so. Nothing here reads the clock.

>>> p = fold([
...     {"event_type": "DELIVERED", "occurred_at": 1_000},
...     {"event_type": "OPENED", "occurred_at": 2_000},
...     {"event_type": "CLICKED", "occurred_at": 3_000},
... ])
>>> p.delivered, p.opened, p.last_open, p.click_rate
(1, 1, 2000, 1.0)
>>> EngagementProfile.from_dict(p.to_dict()) == p
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from herald.errors import DecodeError

__all__ = ["COUNTED", "EngagementProfile", "epoch_ms", "fold"]

# event_type -> the count it increments; other types (REQUESTED, FAILED, ...) leave a profile unchanged.
COUNTED: Mapping[str, str] = {
    "SENT": "sent",
    "DELIVERED": "delivered",
    "OPENED": "opened",
    "CLICKED": "clicked",
    "REPLIED": "replied",
    "BOUNCED": "bounced",
    "COMPLAINED": "complained",
}
# event_type -> the timestamp it advances.
_STAMPED: Mapping[str, str] = {"OPENED": "last_open", "CLICKED": "last_click", "REPLIED": "last_reply"}
_STAMPS = ("last_open", "last_click", "last_reply")


def epoch_ms(value: object) -> int:
    """Milliseconds since the epoch of an Avro ``timestamp-millis`` value (int) or a datetime.

    Naive datetimes are taken as UTC, as fastavro returns aware UTC ones and the contract is UTC.

    >>> epoch_ms(datetime(2024, 1, 1, tzinfo=UTC)), epoch_ms(1_700_000_000_000)
    (1704067200000, 1700000000000)
    """
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return int(aware.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise DecodeError("invalid", f"occurred_at: expected epoch ms or a datetime, got {value!r}")


def _later(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _rate(numerator: int, denominator: int) -> float:
    # No deliveries means no evidence: 0.0 is the neutral value, never a ZeroDivisionError. Repeated
    # opens/clicks of one message can outnumber deliveries, so the rate is capped at 1.
    return min(numerator / denominator, 1.0) if denominator else 0.0


@dataclass(frozen=True, slots=True)
class EngagementProfile:
    """What one recipient did with the notifications sent to them (counts of lifecycle events).

    >>> EngagementProfile().open_rate, EngagementProfile(delivered=4, opened=1).open_rate
    (0.0, 0.25)
    """

    sent: int = 0
    delivered: int = 0
    opened: int = 0
    clicked: int = 0
    replied: int = 0
    bounced: int = 0
    complained: int = 0
    unsubscribed: bool = False  # sticky: the contract has no resubscribe event
    last_open: int | None = None
    last_click: int | None = None
    last_reply: int | None = None

    @property
    def open_rate(self) -> float:
        """Opens per delivered notification, in [0, 1]; 0.0 before anything was delivered."""
        return _rate(self.opened, self.delivered)

    @property
    def click_rate(self) -> float:
        """Clicks per delivered notification, in [0, 1]; 0.0 before anything was delivered."""
        return _rate(self.clicked, self.delivered)

    def apply(self, event: Mapping[str, Any]) -> EngagementProfile:
        """The profile after one lifecycle event (an Avro-decoded dict); unrelated types change nothing.

        >>> EngagementProfile().apply({"event_type": "REPLIED", "occurred_at": 5}).last_reply
        5
        >>> EngagementProfile().apply({"event_type": "FAILED", "occurred_at": 5}) == EngagementProfile()
        True
        """
        event_type = event.get("event_type")
        if not isinstance(event_type, str):
            return self
        if event_type == "UNSUBSCRIBED":
            return self if self.unsubscribed else replace(self, unsubscribed=True)
        count = COUNTED.get(event_type)
        if count is None:
            return self
        changes: dict[str, Any] = {count: getattr(self, count) + 1}
        stamp = _STAMPED.get(event_type)
        if stamp is not None:
            changes[stamp] = _later(getattr(self, stamp), epoch_ms(event.get("occurred_at")))
        return replace(self, **changes)

    def merge(self, other: EngagementProfile) -> EngagementProfile:
        """The profile of both event sets together: counts add, timestamps take the latest.

        >>> a = EngagementProfile(opened=1, last_open=10)
        >>> b = EngagementProfile(opened=2, last_open=7)
        >>> a.merge(b) == b.merge(a) == EngagementProfile(opened=3, last_open=10)
        True
        """
        return EngagementProfile(
            sent=self.sent + other.sent,
            delivered=self.delivered + other.delivered,
            opened=self.opened + other.opened,
            clicked=self.clicked + other.clicked,
            replied=self.replied + other.replied,
            bounced=self.bounced + other.bounced,
            complained=self.complained + other.complained,
            unsubscribed=self.unsubscribed or other.unsubscribed,
            last_open=_later(self.last_open, other.last_open),
            last_click=_later(self.last_click, other.last_click),
            last_reply=_later(self.last_reply, other.last_reply),
        )

    def to_dict(self) -> dict[str, int | bool | None]:
        """A plain JSON-able dict for a Faust table or the warehouse.

        >>> EngagementProfile(sent=1).to_dict()["sent"]
        1
        """
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngagementProfile:
        """The profile stored by ``to_dict``; missing fields default (older stored versions still load).

        Raises DecodeError (kind ``invalid``) on unknown fields or values of the wrong type.

        >>> EngagementProfile.from_dict({"opened": 2}).opened
        2
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DecodeError("invalid", f"engagement profile: unknown fields {unknown}")
        for name, value in data.items():
            if name == "unsubscribed":
                ok = isinstance(value, bool)
            elif name in _STAMPS:
                ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
            else:
                ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            if not ok:
                raise DecodeError("invalid", f"engagement profile: {name} has an invalid value {value!r}")
        return cls(**data)


def fold(events: Iterable[Mapping[str, Any]], start: EngagementProfile | None = None) -> EngagementProfile:
    """Apply ``events`` (already deduplicated by event_id) in order to ``start`` (default: empty).

    >>> fold([{"event_type": "BOUNCED", "occurred_at": 1}] * 2).bounced
    2
    """
    profile = start if start is not None else EngagementProfile()
    for event in events:
        profile = profile.apply(event)
    return profile
