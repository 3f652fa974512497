"""What a local provider accepted, per idempotency key, and what it answered: the drill's ground truth.

The record never de-duplicates by itself: a key accepted twice has ``sends == 2`` (an SMTP server
cannot tell a retry from a new message). An HTTP provider that honours ``Idempotency-Key`` answers a
repeated key with the original message instead; that is a ``replay``, not a send.

A message is ``delivered`` ``deliver_after_s`` after its first send that was not dropped; a message
whose every send was dropped stays ``sent`` forever.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

__all__ = ["MessageLog", "MessageRecord"]


@dataclass(slots=True)
class MessageRecord:
    """One idempotency key at one provider."""

    key: str
    message_id: str
    recipient: str
    tenant: str | None
    fingerprint: str
    first_at: float  # epoch seconds of the first accepted send
    last_at: float  # of the last accepted send or replay
    sends: int = 1
    replays: int = 0
    dropped_sends: int = 0
    deliver_from: float | None = None  # first send that was not dropped

    def status(self, now: float, deliver_after_s: float) -> str:
        if self.deliver_from is not None and now >= self.deliver_from + deliver_after_s:
            return "delivered"
        return "sent"

    def delivered_at(self, deliver_after_s: float) -> float | None:
        return None if self.deliver_from is None else self.deliver_from + deliver_after_s

    def to_dict(self, now: float, deliver_after_s: float) -> dict[str, Any]:
        status = self.status(now, deliver_after_s)
        return {
            "key": self.key,
            "message_id": self.message_id,
            "recipient": self.recipient,
            "tenant": self.tenant,
            "sends": self.sends,
            "replays": self.replays,
            "dropped_sends": self.dropped_sends,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "status": status,
            "delivered_at": self.delivered_at(deliver_after_s) if status == "delivered" else None,
        }


class MessageLog:
    """Accepted messages by key and by message id, and counters of every answer."""

    def __init__(self) -> None:
        self.by_key: dict[str, MessageRecord] = {}
        self.by_id: dict[str, MessageRecord] = {}
        self.requests = 0  # every request that reached the provider
        self.failed: Counter[str] = Counter()  # error answers by kind
        self.hung = 0
        self.conflicts = 0  # a known key with a different content (refused)

    def accept(
        self,
        key: str,
        message_id: str,
        recipient: str,
        tenant: str | None,
        fingerprint: str,
        now: float,
        dropped: bool = False,
    ) -> MessageRecord:
        """Record one accepted send of ``key`` (a second send of a known key counts as a send)."""
        record = self.by_key.get(key)
        if record is None:
            record = MessageRecord(key, message_id, recipient, tenant, fingerprint, now, now, sends=0)
            self.by_key[key] = record
            self.by_id[message_id] = record
        record.sends += 1
        record.last_at = now
        if dropped:
            record.dropped_sends += 1
        elif record.deliver_from is None:
            record.deliver_from = now
        return record

    def replay(self, record: MessageRecord, now: float) -> None:
        record.replays += 1
        record.last_at = now

    def stats(self, now: float, deliver_after_s: float) -> dict[str, Any]:
        records = self.by_key.values()
        accepted = sum(r.sends for r in records)
        delivered = sum(1 for r in records if r.status(now, deliver_after_s) == "delivered")
        return {
            "requests": self.requests,
            "accepted": accepted,  # accepted sends, a key sent twice counts twice
            "unique": len(self.by_key),  # distinct keys accepted
            "duplicates": accepted - len(self.by_key),  # sends beyond the first of their key
            "replays": sum(r.replays for r in records),  # repeated keys answered with the original
            "dropped": sum(r.dropped_sends for r in records),
            "delivered": delivered,  # keys delivered by now
            "failed": dict(sorted(self.failed.items())),
            "hung": self.hung,
            "conflicts": self.conflicts,
        }

    def messages(self, now: float, deliver_after_s: float) -> list[dict[str, Any]]:
        return [r.to_dict(now, deliver_after_s) for r in self.by_key.values()]
