"""Is ingest moving? Per lifecycle partition: the warehouse sink's consumer lag and the time the
partition last made progress in, a verdict and the ingest alerts it opens or resolves out. Pure.

Verdicts, per partition (the overall one is the worst):

* ``stalled``  lag > 0 and no progress for longer than ``stall_after_ms``, counted from the later of
               the last progress and the first sample of the current run of lag > 0 (a partition idle
               for an hour that just got a message is behind, not stalled)
* ``lagging``  lag > ``lag_alert`` and larger than it was ``growth_window_ms`` ago
* ``ok``       anything else, e.g. a partition with no traffic and no lag

Alerts are global (tenant ``*``, metric ``ingest``), one per kind: ``stall`` (critical) is open while any
partition is stalled and resolves once every partition moves again; ``lag`` (major) opens when a partition
is lagging and stays open while some partition is above ``lag_alert`` and not shrinking over the window.

Lag samples are kept per partition, at least ``growth_window_ms / (max_samples - 2)`` apart and no older
than the one that anchors the window, so the state stays small whatever the sampling rate. The state is a
value: :meth:`IngestHealth.to_dict` gives plain JSON-able data, :meth:`IngestHealth.from_dict` reads it back.

>>> config = IngestHealthConfig(stall_after_ms=120_000)
>>> state = IngestHealth()
>>> report = judge_ingest(state, config, lag={0: 0}, progress={0: 1_000}, now_ms=1_000)
>>> report.verdict, report.changes
('ok', ())
>>> report = judge_ingest(report.state, config, lag={0: 40}, progress={0: 1_000}, now_ms=10_000)
>>> report.verdict  # behind, but for 0 s
'ok'
>>> report = judge_ingest(report.state, config, lag={0: 900}, progress={}, now_ms=131_000)
>>> report.verdict, [(c.status, c.metric, c.kind, c.severity) for c in report.changes]
('stalled', [('OPENED', 'ingest', 'stall', 'critical')])
>>> report = judge_ingest(report.state, config, lag={0: 850}, progress={0: 132_000}, now_ms=133_000)
>>> report.verdict, [(c.status, c.kind) for c in report.changes]
('ok', [('RESOLVED', 'stall')])
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from analytics.alerting import AlertChange, SeriesKey

Verdict = Literal["ok", "lagging", "stalled"]
VERDICTS: tuple[Verdict, ...] = ("ok", "lagging", "stalled")  # worst last
INGEST_SERIES = SeriesKey("*", "", "")
"""Ingest alerts concern every tenant: tenant ``*``, no channel, no provider."""
STATE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class IngestHealthConfig:
    stall_after_ms: int = 120_000  # behind without progress this long: stalled
    lag_alert: int = 50_000  # messages behind on one partition above which growth is an alert
    growth_window_ms: int = 300_000  # "growing" = larger than this long ago
    max_samples: int = 32  # lag samples kept per partition

    def __post_init__(self) -> None:
        if self.stall_after_ms < 0 or self.lag_alert < 0 or self.growth_window_ms < 1 or self.max_samples < 3:
            raise ValueError(
                "stall_after_ms and lag_alert must be >= 0, growth_window_ms >= 1 and max_samples >= 3"
            )

    @property
    def sample_every_ms(self) -> int:
        """The closest two kept samples may be: the window then holds at most ``max_samples - 1``."""
        return max(1, self.growth_window_ms // (self.max_samples - 2))

    @property
    def version(self) -> str:
        """Content hash of the rules, carried by every ingest alert as its policy_version."""
        text = json.dumps(asdict(self), sort_keys=True)
        return "ingest-" + hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class PartitionState:
    last_progress_ms: int | None = None  # the newest progress ever seen (kept while the warehouse is away)
    behind_since_ms: int | None = None  # first sample of the current run of lag > 0
    samples: tuple[tuple[int, int], ...] = ()  # (at_ms, lag), oldest first


@dataclass(frozen=True, slots=True)
class PartitionHealth:
    """One partition's verdict at one evaluation."""

    partition: int
    verdict: Verdict
    lag: int
    growth: int | None  # lag now minus lag a window ago; None until the samples span the window
    idle_ms: int  # how long it has been behind without progress (0 when not behind)
    last_progress_ms: int | None


@dataclass(frozen=True, slots=True)
class IngestHealth:
    """The state between evaluations: per partition, and the open ingest alerts by kind."""

    partitions: Mapping[int, PartitionState] = field(default_factory=dict)
    open: Mapping[str, AlertChange] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (partition numbers become string keys).

        >>> state = IngestHealth({3: PartitionState(5, None, ((0, 7),))})
        >>> IngestHealth.from_dict(json.loads(json.dumps(state.to_dict()))) == state
        True
        """
        return {
            "format": STATE_FORMAT,
            "partitions": {
                str(p): {
                    "last_progress_ms": s.last_progress_ms,
                    "behind_since_ms": s.behind_since_ms,
                    "samples": [list(sample) for sample in s.samples],
                }
                for p, s in sorted(self.partitions.items())
            },
            "open": {kind: asdict(change) for kind, change in sorted(self.open.items())},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IngestHealth:
        """The state :meth:`to_dict` gave; data of another format gives a fresh state."""
        if data.get("format") != STATE_FORMAT:
            return cls()
        partitions = {
            int(p): PartitionState(
                _opt_int(s.get("last_progress_ms")),
                _opt_int(s.get("behind_since_ms")),
                tuple((int(at), int(lag)) for at, lag in s.get("samples", ())),
            )
            for p, s in data.get("partitions", {}).items()
        }
        opened = {
            str(kind): AlertChange(**{**change, "series": SeriesKey(**change["series"])})
            for kind, change in data.get("open", {}).items()
        }
        return cls(partitions, opened)


@dataclass(frozen=True, slots=True)
class IngestReport:
    """One evaluation: the next state, every partition's verdict and the alert changes to publish."""

    state: IngestHealth
    partitions: tuple[PartitionHealth, ...]
    changes: tuple[AlertChange, ...]

    @property
    def verdict(self) -> Verdict:
        return worst(p.verdict for p in self.partitions)


def worst(verdicts: Iterable[Verdict]) -> Verdict:
    return max(verdicts, key=VERDICTS.index, default="ok")


def unproven(
    state: IngestHealth,
    config: IngestHealthConfig,
    lag: Mapping[int, int],
    progress: Mapping[int, int],
    now_ms: int,
) -> list[int]:
    """Partitions behind whose newest known progress (``progress`` or remembered) is older than the
    stall threshold: the only ones worth a costlier look for progress elsewhere.

    >>> unproven(IngestHealth(), IngestHealthConfig(stall_after_ms=10), {0: 5, 1: 0, 2: 5}, {2: 95}, 100)
    [0]
    """
    empty = PartitionState()
    known = {p: _newest(state.partitions.get(p, empty).last_progress_ms, progress.get(p)) for p in lag}
    return [
        p
        for p, behind in sorted(lag.items())
        if behind > 0 and ((last := known[p]) is None or now_ms - last > config.stall_after_ms)
    ]


def judge_ingest(
    state: IngestHealth,
    config: IngestHealthConfig,
    lag: Mapping[int, int],
    progress: Mapping[int, int],
    now_ms: int,
) -> IngestReport:
    """Fold one evaluation: ``lag`` per partition (messages behind the log end, every partition of the
    topic), ``progress`` the newest progress time per partition the warehouse shows (missing when it
    cannot say: the remembered one holds), ``now_ms`` the evaluation time. Partitions missing from
    ``lag`` are forgotten."""
    partitions: dict[int, PartitionState] = {}
    health: list[PartitionHealth] = []
    for p, behind in sorted(lag.items()):
        before = state.partitions.get(p, PartitionState())
        partitions[p], verdict = _advance(p, before, config, max(0, behind), progress.get(p), now_ms)
        health.append(verdict)
    opened = dict(state.open)
    changes = [
        change
        for change in (
            _stall_change(opened, health, config, now_ms),
            _lag_change(opened, health, config, now_ms),
        )
        if change is not None
    ]
    return IngestReport(IngestHealth(partitions, opened), tuple(health), tuple(changes))


def _advance(
    partition: int,
    before: PartitionState,
    config: IngestHealthConfig,
    lag: int,
    progress: int | None,
    now_ms: int,
) -> tuple[PartitionState, PartitionHealth]:
    last = _newest(before.last_progress_ms, progress)
    behind_since = (
        None if lag == 0 else (before.behind_since_ms if before.behind_since_ms is not None else now_ms)
    )
    growth = _growth(before.samples, config, lag, now_ms)
    # The stall clock starts at the later of the last progress and the start of this run of lag > 0.
    idle = 0 if behind_since is None else max(0, now_ms - (_newest(last, behind_since) or behind_since))
    if lag > 0 and idle > config.stall_after_ms:
        verdict: Verdict = "stalled"
    elif lag > config.lag_alert and growth is not None and growth > 0:
        verdict = "lagging"
    else:
        verdict = "ok"
    after = PartitionState(last, behind_since, _remember(before.samples, config, lag, now_ms))
    return after, PartitionHealth(partition, verdict, lag, growth, idle, last)


def _growth(
    samples: tuple[tuple[int, int], ...], config: IngestHealthConfig, lag: int, now_ms: int
) -> int | None:
    """Lag now minus the lag of the newest sample a window ago or earlier; None when there is none, or
    when it is older than two windows (a gap in the samples says nothing about the last window)."""
    anchor = next((s for s in reversed(samples) if s[0] <= now_ms - config.growth_window_ms), None)
    if anchor is None or anchor[0] < now_ms - 2 * config.growth_window_ms:
        return None
    return lag - anchor[1]


def _remember(
    samples: tuple[tuple[int, int], ...], config: IngestHealthConfig, lag: int, now_ms: int
) -> tuple[tuple[int, int], ...]:
    kept = list(samples)
    if not kept or now_ms - kept[-1][0] >= config.sample_every_ms:
        kept.append((now_ms, lag))
    start = now_ms - config.growth_window_ms
    anchors = [i for i, (at, _) in enumerate(kept) if at <= start]
    if anchors:
        kept = kept[anchors[-1] :]  # the newest sample a window ago anchors the window; older ones go
    kept = [s for s in kept if s[0] >= now_ms - 2 * config.growth_window_ms]
    return tuple(kept[-config.max_samples :])


def _stall_change(
    opened: dict[str, AlertChange], health: list[PartitionHealth], config: IngestHealthConfig, now_ms: int
) -> AlertChange | None:
    stalled = [p for p in health if p.verdict == "stalled"]
    current = opened.get("stall")
    if stalled and current is None:
        since = min(now_ms - p.idle_ms for p in stalled)
        detail = "; ".join(
            f"partition {p.partition}: {p.lag} behind, no progress for {p.idle_ms // 1000} s" for p in stalled
        )
        opened["stall"] = _opened(
            "stall", "critical", sum(p.lag for p in stalled), 0.0, 1.0, since, now_ms,
            f"{detail} (stalled after {config.stall_after_ms // 1000} s)",
        )  # fmt: skip
        return opened["stall"]
    if not stalled and current is not None:
        del opened["stall"]
        behind = sum(p.lag for p in health)
        return _resolved(current, behind, now_ms, f"every partition moves again; {behind} behind in all")
    return None


def _lag_change(
    opened: dict[str, AlertChange], health: list[PartitionHealth], config: IngestHealthConfig, now_ms: int
) -> AlertChange | None:
    current = opened.get("lag")
    if current is None:
        lagging = [p for p in health if p.verdict == "lagging"]
        if not lagging:
            return None
        top = max(p.lag for p in lagging)
        window_s = config.growth_window_ms // 1000
        detail = "; ".join(
            f"partition {p.partition}: {p.lag} behind, +{p.growth} in {window_s} s" for p in lagging
        )
        score = min(1.0, top / (2 * max(1, config.lag_alert)))  # 0.5 at the threshold, as detectors score
        opened["lag"] = _opened(
            "lag", "major", float(top), float(config.lag_alert), score, now_ms - config.growth_window_ms,
            now_ms, f"{detail} (alert above {config.lag_alert})",
        )  # fmt: skip
        return opened["lag"]
    holding = [p for p in health if p.lag > config.lag_alert and (p.growth is None or p.growth >= 0)]
    if holding:
        return None
    del opened["lag"]
    top = max((p.lag for p in health), default=0)
    return _resolved(current, float(top), now_ms, f"lag at most {top}, under {config.lag_alert} or shrinking")


def _opened(
    kind: str,
    severity: str,
    observed: float,
    expected: float,
    score: float,
    since_ms: int,
    now_ms: int,
    detail: str,
) -> AlertChange:
    return AlertChange(
        alert_id=ingest_alert_id(kind, since_ms),
        status="OPENED",
        series=INGEST_SERIES,
        metric="ingest",
        kind=kind,
        severity=severity,
        observed=observed,
        expected=expected,
        score=score,
        window_start_ms=since_ms,
        window_end_ms=now_ms,
        first_seen_ms=since_ms,
        at_ms=now_ms,
        detail=detail,
    )


def _resolved(change: AlertChange, observed: float, now_ms: int, detail: str) -> AlertChange:
    return replace(
        change, status="RESOLVED", observed=observed, window_end_ms=now_ms, at_ms=now_ms, detail=detail
    )


def ingest_alert_id(kind: str, since_ms: int) -> str:
    """Deterministic in the kind and the time the condition began, so a re-decision gives the same id."""
    return hashlib.sha256(f"ingest|{kind}|{since_ms}".encode()).hexdigest()[:20]


def _newest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)
