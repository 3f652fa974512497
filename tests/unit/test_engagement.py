"""Engagement profiles: folded from lifecycle events, mergeable over any split, stored as plain dicts."""

from __future__ import annotations

import doctest
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

import policies.engagement
from herald.errors import DecodeError
from policies.engagement import EngagementProfile, epoch_ms, fold

TYPES = ["REQUESTED", "DISPATCHED", "SENT", "DELIVERED", "FAILED", "OPENED", "CLICKED", "REPLIED", "BOUNCED"]
TYPES += ["COMPLAINED", "UNSUBSCRIBED", "SUPPRESSED", "UNKNOWN"]


def event(event_type: str, at: Any = 1_000) -> dict[str, Any]:
    return {"event_id": f"{event_type}-{at}", "event_type": event_type, "occurred_at": at}


def random_stream(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [event(rng.choice(TYPES), rng.randrange(1_700_000_000_000, 1_700_100_000_000)) for _ in range(n)]


def test_each_counted_event_type_increments_its_count() -> None:
    """SENT..COMPLAINED each add one to their own count and nothing else."""
    fields = {
        "SENT": "sent",
        "DELIVERED": "delivered",
        "OPENED": "opened",
        "CLICKED": "clicked",
        "REPLIED": "replied",
        "BOUNCED": "bounced",
        "COMPLAINED": "complained",
    }
    for event_type, field in fields.items():
        profile = EngagementProfile().apply(event(event_type))
        counts = {f: getattr(profile, f) for f in fields.values()}
        assert counts == {f: int(f == field) for f in fields.values()}, event_type


def test_opens_clicks_and_replies_keep_the_latest_timestamp() -> None:
    """last_open/last_click/last_reply are the maximum occurred_at, whatever the arrival order."""
    profile = fold([event("OPENED", 5_000), event("OPENED", 3_000), event("CLICKED", 4_000)])
    profile = profile.apply(event("REPLIED", 7_000))
    assert (profile.last_open, profile.last_click, profile.last_reply) == (5_000, 4_000, 7_000)


def test_unsubscribe_is_a_sticky_flag() -> None:
    """One UNSUBSCRIBED sets the flag; later engagement does not clear it."""
    profile = fold([event("UNSUBSCRIBED"), event("OPENED"), event("UNSUBSCRIBED")])
    assert profile.unsubscribed and profile.opened == 1


def test_unrelated_and_unknown_event_types_leave_the_profile_unchanged() -> None:
    """REQUESTED, FAILED, SUPPRESSED, UNKNOWN and a missing type are no-ops."""
    events = [event(t) for t in ("REQUESTED", "DISPATCHED", "FAILED", "SUPPRESSED", "UNKNOWN")]
    assert fold([*events, {"occurred_at": 1}]) == EngagementProfile()


def test_occurred_at_may_be_a_datetime_or_epoch_ms() -> None:
    """Aware datetimes convert exactly; naive ones are taken as UTC; ints pass through."""
    at = datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert epoch_ms(at) == epoch_ms(at.replace(tzinfo=None)) == 1_714_564_800_000
    assert epoch_ms(at.astimezone(timezone(timedelta(hours=2)))) == 1_714_564_800_000
    assert EngagementProfile().apply(event("OPENED", at)).last_open == 1_714_564_800_000


def test_a_timestamped_event_without_a_valid_time_is_rejected() -> None:
    """An OPENED event without occurred_at raises DecodeError rather than guessing a time."""
    with pytest.raises(DecodeError, match="occurred_at"):
        EngagementProfile().apply({"event_type": "OPENED"})
    with pytest.raises(DecodeError, match="occurred_at"):
        EngagementProfile().apply(event("CLICKED", "yesterday"))


def test_rates_are_neutral_without_deliveries_and_capped_at_one() -> None:
    """No deliveries gives 0.0 rates; repeated opens of one message never exceed a rate of 1."""
    assert (EngagementProfile().open_rate, EngagementProfile().click_rate) == (0.0, 0.0)
    assert EngagementProfile(delivered=10, opened=4, clicked=1).click_rate == 0.1
    assert EngagementProfile(delivered=1, opened=3).open_rate == 1.0


def test_fold_of_a_stream_equals_the_merge_of_folds_over_any_split() -> None:
    """Seeded random splits into partitions, folded separately and merged in any order, agree."""
    rng = random.Random(20240501)
    for _ in range(50):
        stream = random_stream(rng, rng.randrange(0, 80))
        whole = fold(stream)
        parts: list[list[dict[str, Any]]] = [[] for _ in range(rng.randrange(1, 6))]
        for item in stream:
            rng.choice(parts).append(item)
        folds = [fold(part) for part in parts]
        rng.shuffle(folds)
        merged = EngagementProfile()
        for partial in folds:
            merged = merged.merge(partial)
        assert merged == whole


def test_merge_is_associative_and_commutative_with_the_empty_profile_as_identity() -> None:
    """(a+b)+c == a+(b+c), a+b == b+a and a+empty == a."""
    rng = random.Random(7)
    a, b, c = (fold(random_stream(rng, 30)) for _ in range(3))
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(b) == b.merge(a)
    assert a.merge(EngagementProfile()) == a == EngagementProfile().merge(a)


def test_dict_round_trip_preserves_the_profile() -> None:
    """from_dict(to_dict(p)) == p, and older stored dicts with missing fields still load."""
    profile = fold(random_stream(random.Random(3), 40))
    assert EngagementProfile.from_dict(profile.to_dict()) == profile
    assert EngagementProfile.from_dict({"sent": 2}) == EngagementProfile(sent=2)


@pytest.mark.parametrize(
    "stored",
    [{"opens": 1}, {"sent": -1}, {"sent": "3"}, {"sent": True}, {"last_open": 1.5}, {"unsubscribed": 1}],
)
def test_from_dict_rejects_unknown_fields_and_wrong_types(stored: dict[str, Any]) -> None:
    """Corrupt stored state is an error, not a silently wrong profile."""
    with pytest.raises(DecodeError):
        EngagementProfile.from_dict(stored)


def test_doctests_in_engagement_module_pass() -> None:
    """The docstring examples run."""
    assert doctest.testmod(policies.engagement).failed == 0
