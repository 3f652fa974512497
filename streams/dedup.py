"""Bounded-memory duplicate detection by event id over a horizon of the log's clock. Pure.

One ``EventDeduplicator`` serves one Kafka partition: the contract keys events by notification id,
so every retry of an event lands on the same partition as the original. Ids are grouped in
per-minute buckets of the message's log time (its Kafka timestamp, the broker's append time on
Herald's topics), not of the event's own ``occurred_at``: an event dated a day ahead cannot move the
horizon and make the deduplicator forget what it saw. A bucket is forgotten once it falls
``horizon`` behind the newest log time seen, or when the set holds more than ``max_ids`` (oldest
bucket first). A retry that reaches the log later than the horizon after the original cannot be
checked and is accepted: duplicates that late are out of contract.

The state is never the only copy: on partition assignment the worker rebuilds it from the
warehouse rows of that partition, which were written before their offsets were committed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

_MINUTE_MS = 60_000


class EventDeduplicator:
    """
    >>> d = EventDeduplicator(horizon_ms=3_600_000, max_ids=10)
    >>> d.is_duplicate("e1", 0), d.is_duplicate("e1", 5), d.is_duplicate("e2", 5)
    (False, True, False)
    >>> d.is_duplicate("e3", 2 * 3_600_000)  # two hours later: e1's minute is forgotten
    False
    >>> d.is_duplicate("e1", 2 * 3_600_000)
    False
    """

    __slots__ = ("_bucket_heap", "_buckets", "_ids", "horizon_ms", "max_ids", "newest_ms")

    def __init__(self, horizon_ms: int, max_ids: int) -> None:
        if horizon_ms <= 0 or max_ids <= 0:
            raise ValueError("horizon_ms and max_ids must be positive")
        self.horizon_ms = horizon_ms
        self.max_ids = max_ids
        self.newest_ms = 0
        self._ids: dict[str, int] = {}
        self._buckets: dict[int, list[str]] = {}
        self._bucket_heap: list[int] = []

    def __len__(self) -> int:
        return len(self._ids)

    def is_duplicate(self, event_id: str, log_ms: int) -> bool:
        """True when ``event_id`` was seen within the horizon; otherwise remember it (at ``log_ms``, the
        message's log time) and return False."""
        if event_id in self._ids:
            return True
        self.newest_ms = max(self.newest_ms, log_ms)
        if log_ms < self.newest_ms - self.horizon_ms:
            return False  # older than what we remember: accepted unchecked, and not worth storing
        self._remember(event_id, log_ms // _MINUTE_MS)
        self._evict()
        return False

    def load(self, seen: Iterable[tuple[str, int]]) -> None:
        """Rebuild from (event_id, log_ms) pairs already applied, e.g. read back from the warehouse."""
        for event_id, log_ms in seen:
            if event_id not in self._ids:
                self.newest_ms = max(self.newest_ms, log_ms)
                self._remember(event_id, log_ms // _MINUTE_MS)
        self._evict()

    def _remember(self, event_id: str, bucket: int) -> None:
        self._ids[event_id] = bucket
        ids = self._buckets.get(bucket)
        if ids is None:
            self._buckets[bucket] = [event_id]
            heapq.heappush(self._bucket_heap, bucket)
        else:
            ids.append(event_id)

    def _evict(self) -> None:
        oldest_kept = (self.newest_ms - self.horizon_ms) // _MINUTE_MS
        heap = self._bucket_heap
        while heap and (heap[0] < oldest_kept or len(self._ids) > self.max_ids):
            for event_id in self._buckets.pop(heapq.heappop(heap)):
                del self._ids[event_id]
