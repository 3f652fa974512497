"""Engagement profiles and segment snapshots in the warehouse.

``engagement_profiles`` is kept by a materialized view over ``events`` (migration 0006): per tenant and
recipient the counts, flags and latest times of :class:`policies.engagement.EngagementProfile`, merged
the way the profile's own ``merge`` does (counts add, times take the latest), plus the recipient's
latest attributes. :func:`read_profiles` turns the rows back into ``(recipient, profile)`` pairs that
``Segment.matches`` evaluates; :func:`snapshot_segments` writes one snapshot of every segment's size and
members; :func:`segment_sizes` reads the sizes back.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from policies.engagement import EngagementProfile
from policies.segments import Segment
from projections.warehouse import Warehouse

_ATTRIBUTES = ("kind", "tier", "role", "language", "country")
_COUNTS = ("sent", "delivered", "opened", "clicked", "replied", "bounced", "complained")
_STAMPS = ("last_open", "last_click", "last_reply")
_PROFILES_SQL = f"""
SELECT recipient_id,
       {", ".join(f"anyLast({a})" for a in _ATTRIBUTES)},
       {", ".join(f"sum({c})" for c in _COUNTS)},
       max(unsubscribed),
       {", ".join(f"toUnixTimestamp64Milli(max({s}))" for s in _STAMPS)}
FROM engagement_profiles
WHERE tenant_id = {{tenant:String}}
  AND (length({{ids:Array(String)}}) = 0 OR has({{ids:Array(String)}}, recipient_id))
GROUP BY recipient_id
ORDER BY recipient_id
"""


def read_profiles(
    warehouse: Warehouse, tenant: str, recipient_ids: Sequence[str] = ()
) -> Iterator[tuple[str, dict[str, Any], EngagementProfile]]:
    """(recipient id, attributes, profile) of the tenant's recipients (all, or the ids given).

    Attributes are as the contract spells them (``kind`` CUSTOMER, ...); a time never reached is None.
    """
    rows = warehouse.rows(_PROFILES_SQL, {"tenant": tenant, "ids": list(recipient_ids)})
    for row in rows:
        recipient_id = str(row[0])
        attributes = {a: (str(v) or None) for a, v in zip(_ATTRIBUTES, row[1:6], strict=True)}
        counts = dict(zip(_COUNTS, (int(v) for v in row[6:13]), strict=True))
        last_open, last_click, last_reply = ((int(v) or None) for v in row[14:17])
        profile = EngagementProfile(
            **counts, unsubscribed=bool(row[13]), last_open=last_open, last_click=last_click,
            last_reply=last_reply,
        )  # fmt: skip
        yield recipient_id, {"id": recipient_id, **attributes}, profile


_MEMBER_COLUMNS = ("snapshot_at", "tenant_id", "segment", "recipient_id")
_SIZE_COLUMNS = ("snapshot_at", "tenant_id", "segment", "rule", "members", "evaluated")
_TENANTS_SQL = "SELECT DISTINCT tenant_id FROM engagement_profiles ORDER BY tenant_id"


def snapshot_segments(
    warehouse: Warehouse, segments: Mapping[str, Segment], at: datetime
) -> dict[tuple[str, str], int]:
    """Evaluate every segment over every tenant's profiles at ``at``; write ``segment_sizes`` and
    ``segment_members``. A key ``tenant/name`` is a segment of that tenant only, a bare name applies to
    every tenant. Returns the sizes by (tenant, segment name)."""
    now_ms = int(at.timestamp() * 1000)
    sizes: dict[tuple[str, str], int] = {}
    size_rows: list[tuple[Any, ...]] = []
    for (tenant,) in warehouse.rows(_TENANTS_SQL):
        scoped = [
            (key.rpartition("/")[2], segment)
            for key, segment in segments.items()
            if key.rpartition("/")[0] in ("", tenant)
        ]
        members: list[tuple[Any, ...]] = []
        counts = dict.fromkeys((name for name, _ in scoped), 0)
        evaluated = 0
        for recipient_id, recipient, profile in read_profiles(warehouse, tenant):
            evaluated += 1
            for name, segment in scoped:
                if segment.matches(recipient, profile, now_ms):
                    counts[name] += 1
                    members.append((at, tenant, name, recipient_id))
        if members:
            warehouse.insert("segment_members", members, _MEMBER_COLUMNS)
        for name, segment in scoped:
            sizes[(tenant, name)] = counts[name]
            size_rows.append((at, tenant, name, segment.definition.rule, counts[name], evaluated))
    if size_rows:
        warehouse.insert("segment_sizes", size_rows, _SIZE_COLUMNS)
    return sizes


_SIZES_SQL = """
SELECT segment, toUnixTimestamp64Milli(snapshot_at), members, evaluated, rule
FROM segment_sizes
WHERE tenant_id = {tenant:String} AND snapshot_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
ORDER BY segment, snapshot_at
"""


def segment_sizes(warehouse: Warehouse, tenant: str, since_ms: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Per segment, its snapshots since ``since_ms``: time, members, recipients evaluated, rule."""
    found: dict[str, list[dict[str, Any]]] = {}
    for segment, at_ms, members, evaluated, rule in warehouse.rows(
        _SIZES_SQL, {"tenant": tenant, "since": since_ms}
    ):
        found.setdefault(str(segment), []).append(
            {"snapshot_at": datetime.fromtimestamp(int(at_ms) / 1000, tz=UTC).isoformat(),
             "members": int(members), "evaluated": int(evaluated), "rule": str(rule)}
        )  # fmt: skip
    return found
