"""The leader's experimentation jobs over a real embedded warehouse and the real broker.

Simulated traffic is exposed to the example YAML experiments as dispatch would expose it, lands in the
warehouse through the real ingest path, and:
- the experiments job stores per-variant statistics equal to the events, publishes the same report as
  the latest status on the compacted status topic, recomputes only when the statistics moved, and
  keeps a time series (effect over time);
- the engagement profiles the warehouse keeps equal the pure fold of each recipient's events, and the
  segment snapshot job's sizes and members equal the rules evaluated over those folds.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from experiments.definitions import LoadedExperiments, load_experiments
from herald.settings import load_settings
from policies.engagement import EngagementProfile, fold
from policies.segments import Segment, load_segments
from projections import experiment_queries
from projections.engagement import read_profiles
from projections.migrate import migrate
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from simulator.model import DEFAULT_MODEL, ExperimentSet, generate
from streams.experiments import ExperimentsJob, SegmentSnapshotJob
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline
from streams.replay import CountingDeadLetters
from streams.topics import Topics, ensure_topics

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[2] / "policies" / "examples"
START = datetime(2026, 12, 5, 12, tzinfo=UTC)
MINUTES = 20


@dataclass
class Filled:
    warehouse: Warehouse
    pipeline: IngestPipeline
    events: list[dict[str, Any]]
    loaded: LoadedExperiments
    segments: dict[str, Segment]
    offset: int = 0

    def apply(self, events: list[dict[str, Any]]) -> None:
        codec = lifecycle_codec()
        messages = [
            SourceMessage("lifecycle", 0, self.offset + i, e["notification_id"].encode(), codec.encode(e))
            for i, e in enumerate(events)
        ]
        self.offset += len(events)
        self.pipeline.apply(messages)
        self.events += events


def traffic(start: datetime, seconds: int, seed: int, experiments: ExperimentSet) -> list[dict[str, Any]]:
    """30 notifications/s of simulated traffic exposed to ``experiments`` as dispatch would."""
    return list(generate(DEFAULT_MODEL, start, 30, seconds, seed=seed, experiments=experiments))


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    root: Path = tmp_path_factory.mktemp("experiment-jobs")
    warehouse = Warehouse(f"chdb://{root / 'warehouse'}")
    try:
        migrate(warehouse)
        segments = load_segments(EXAMPLES / "segments.yaml")
        loaded = load_experiments(EXAMPLES / "experiments.yaml", segments)
        pipeline = IngestPipeline(
            load_settings(data_dir=root), IngestWriter(warehouse, "test"), lifecycle_codec(),
            CountingDeadLetters(),  # type: ignore[arg-type]  # same send/close surface as DeadLetterSink
            clock=lambda: START + timedelta(minutes=MINUTES),
        )  # fmt: skip
        state = Filled(warehouse, pipeline, [], loaded, segments)
        state.apply(traffic(START, MINUTES * 60, 5, (loaded, segments)))
        yield state
    finally:
        warehouse.close()


def _exposures(events: list[dict[str, Any]], tenant: str, experiment: str) -> dict[str, set[str]]:
    """Notifications exposed per variant (DISPATCHED carrying the experiment)."""
    found: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e["event_type"] == "DISPATCHED" and e["tenant_id"] == tenant and e["experiment_id"] == experiment:
            found[e["variant"]].add(e["notification_id"])
    return found


def test_exposure_follows_the_yaml_definition(filled: Filled) -> None:
    """Only acme-home's US customers on the template are exposed; a recipient keeps one variant."""
    variants_of: dict[str, set[str]] = defaultdict(set)
    for e in filled.events:
        if e["experiment_id"] == "subject-line-test":
            assert e["tenant_id"] == "acme-home" and e["template_id"] == "appointment-confirmation"
            assert e["recipient"]["country"] == "US" and e["recipient"]["kind"] == "CUSTOMER"
            assert e["template_version"] == {"control": 4, "short-subject": 5}[e["variant"]]
            variants_of[e["recipient"]["id"]].add(e["variant"])
    assert len(variants_of) > 200
    assert all(len(v) == 1 for v in variants_of.values())
    others = {e["tenant_id"] for e in filled.events if e["experiment_id"] == "push-copy-test"}
    assert others == {"brightfix"}


def _status_messages(bootstrap: str, topic: str) -> dict[str, dict[str, Any]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    latest: dict[str, dict[str, Any]] = {}
    idle = 0
    while idle < 10:
        message = consumer.poll(0.5)
        if message is None or message.error() is not None:
            idle += 1 if latest else 0
            continue
        idle = 0
        latest[message.key().decode()] = json.loads(message.value())
    consumer.close()
    return latest


def test_experiments_job_stores_and_publishes_the_statistics(filled: Filled, kafka_bootstrap: str) -> None:
    topics = Topics(namespace=f"t{uuid.uuid4().hex[:8]}")
    ensure_topics(kafka_bootstrap, 1, 1, topics)
    now = [(START + timedelta(minutes=MINUTES)).timestamp()]
    job = ExperimentsJob(
        filled.warehouse, kafka_bootstrap, topics.experiment_status, lambda: filled.loaded, 10.0,
        clock=lambda: now[0],
    )  # fmt: skip
    try:
        assert job.run() == 4  # every experiment running at START: two of them have no traffic yet
        assert job.run() == 0  # nothing moved: no new computation
        rows = experiment_queries.latest_results(filled.warehouse, "acme-home", "subject-line-test")
        exposed = _exposures(filled.events, "acme-home", "subject-line-test")
        opened = {e["notification_id"] for e in filled.events if e["event_type"] == "OPENED"}
        by = {(r["metric"], r["variant"]): r for r in rows}
        assert set(by) == {
            (m, v)
            for m in ("open_rate", "delivery_rate", "unsubscribe_rate", "latency_mean")
            for v in ("control", "short-subject")
        }
        for variant, ids in exposed.items():
            row = by[("open_rate", variant)]
            assert row["n"] == len(ids)
            assert row["conversions"] == len(ids & opened)
        treatment = by[("open_rate", "short-subject")]
        assert treatment["relative_effect"] == pytest.approx(
            (treatment["mean"] / by[("open_rate", "control")]["mean"]) - 1, rel=1e-9
        )
        assert treatment["seq_ci_low"] <= treatment["ci_low"] <= treatment["relative_effect"]
        assert by[("open_rate", "control")]["relative_effect"] is None

        status = _status_messages(kafka_bootstrap, topics.experiment_status)
        assert set(status) == {
            "acme-home/subject-line-test", "brightfix/push-copy-test", "acme-home/welcome-subject-v2",
            "brightfix/install-reminder-sms-timing",
        }  # fmt: skip
        assert status["acme-home/welcome-subject-v2"]["summary"]["primary_status"] == "waiting"
        published = status["acme-home/subject-line-test"]
        assert published["format"] == "herald.experiments.status/1"
        assert published["summary"]["primary_metric"] == "open_rate"
        result = published["metrics"]["open_rate"]["results"][0]
        assert result["p_value"] == pytest.approx(treatment["p_value"], rel=1e-12)
        assert published["summary"]["decisions"] == {"short-subject": treatment["seq_decision"]}

        # More traffic: the statistics move, a second point joins the time series.
        later = START + timedelta(minutes=MINUTES)
        filled.apply(traffic(later, 300, 6, (filled.loaded, filled.segments)))
        now[0] += 300
        assert job.run() == 2  # only the two with traffic moved
        history = experiment_queries.results_history(
            filled.warehouse, "acme-home", "subject-line-test", metric="open_rate"
        )
        points = Counter(r["computed_at_ms"] for r in history)
        assert len(points) == 2 and set(points.values()) == {2}
        grown = [r["n"] for r in history if r["variant"] == "control"]
        assert grown[1] > grown[0]
    finally:
        job.close()


def _folded(events: list[dict[str, Any]]) -> dict[tuple[str, str], tuple[dict[str, Any], EngagementProfile]]:
    by_recipient: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["recipient"]:
            by_recipient[(e["tenant_id"], e["recipient"]["id"])].append(e)
    return {
        key: ({**evs[-1]["recipient"]}, fold(sorted(evs, key=lambda e: e["occurred_at"])))
        for key, evs in by_recipient.items()
    }


def test_profiles_and_segment_snapshots_equal_the_pure_fold(filled: Filled) -> None:
    expected = _folded(filled.events)
    stored = {("acme-home", rid): profile for rid, _, profile in read_profiles(filled.warehouse, "acme-home")}
    acme = {k: v for k, v in expected.items() if k[0] == "acme-home"}
    assert len(stored) == len(acme) > 1000
    for key, (_, profile) in acme.items():
        assert stored[key] == profile

    at = START + timedelta(minutes=MINUTES + 10)
    job = SegmentSnapshotJob(filled.warehouse, lambda: filled.segments, 300.0, clock=at.timestamp)
    assert job.run() == len(filled.segments) * 4  # every segment in each of the four tenants
    now_ms = int(at.timestamp() * 1000)
    for (tenant, name), size in job.last_sizes.items():
        segment = filled.segments[name]
        want = sum(
            1
            for (t, _), (recipient, profile) in expected.items()
            if t == tenant and segment.matches(recipient, profile, now_ms)
        )
        assert size == want, (tenant, name)
    members = filled.warehouse.rows(
        "SELECT count() FROM segment_members WHERE tenant_id = 'acme-home' AND segment = 'us_customers'"
    )[0][0]
    assert members == job.last_sizes[("acme-home", "us_customers")] > 0
