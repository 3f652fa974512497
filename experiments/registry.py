"""The definitions registry: experiments and segments from the YAML files plus those changed through the API.

The YAML files (``HERALD_EXPERIMENTS_FILE``, ``HERALD_SEGMENTS_FILE``) are the base and read-only here.
Every change made through the API is an event in the warehouse table ``definition_changes`` (migration
0006): ``created``, ``updated``, ``stopped`` or ``deleted``, with the object's version (1, 2, 3 … per
object), the whole definition after the change as JSON ('' once deleted), who made it (the API key's
name) and a note. The current state is the newest event of each object on top of the files; nothing
is changed in place, so an object's events are its whole history.

- One validator. An experiment change is checked by
  :func:`experiments.definitions.check_experiments` (what the YAML loader runs on a file's entries)
  over the tenant's experiments with the change applied: the field checks and the checks across
  experiments (unknown segment, overlapping layers), reported as ``field: reason``
  (``variants[1].weight: Input should be greater than 0``). A segment is checked by
  :meth:`policies.segments.Segment.from_data`, the YAML loader's checks (``rule: segment vip: unknown
  attribute … at column 5``). Both models bound every field; a tenant holds at most
  MAX_EXPERIMENTS_PER_TENANT experiments and MAX_SEGMENTS_PER_TENANT segments through the API.
- Frozen allocation. A running experiment's allocation (what :func:`allocation_fingerprint` covers:
  id, variants and weights, layer, holdout, segment) cannot change: :func:`allocation_changes` decides,
  the refusal names the fields. Its ``stop`` may move, which ends it early; ``stopped`` sets it to now.
  One that has started cannot be deleted (its exposures and results refer to it). A segment's rule
  cannot change while a running experiment targets it, and a targeted segment cannot be deleted.
- Tenant segments. A segment created through the API belongs to its tenant: the tenant's experiments
  name it as written, other tenants can neither see nor target it and may use the same name. In the
  snapshot it is keyed :func:`segment_key` (``tenant/name``) and the tenant's experiments refer to it
  by that key, so :func:`experiments.definitions.variant_for` finds it in ``snapshot.segments``. File
  segments are shared by every tenant and keep their names; a tenant segment may not take one.
- Ids. Experiment ids are unique across tenants (the id is the assignment salt and the key of
  :class:`LoadedExperiments`); segment names only within a tenant.
- Pure core, thin shell. :func:`fold` builds a :class:`RegistrySnapshot` from the files and the newest
  events, and the ``create_*`` / ``update_*`` / ``stop_experiment`` / ``delete_*`` functions turn a
  snapshot, a request and ``now_ms`` into the :class:`Change` to append, or raise. :class:`Registry`
  reads and appends the events; one lock serialises a process's read-check-append.
- Drift. The files may change after API objects were written (a segment removed, an overlapping layer
  or the same id added). The snapshot then leaves out the API objects that no longer validate and says
  why in ``problems``: the files win.

>>> from policies.segments import Segment
>>> files = FileDefinitions(segments={"gold": Segment.parse("gold", 'tier == "gold"')})
>>> snapshot = fold(files, [])
>>> body = {"id": "subject-v2", "template": "welcome", "segment": "vip", "variants": [
...     {"name": "control", "template_version": 1, "weight": 1},
...     {"name": "v2", "template_version": 2, "weight": 1}], "start": "2026-12-01T00:00:00Z",
...     "stop": "2026-12-21T00:00:00Z", "primary_metric": "open_rate", "mde": 0.05}
>>> create_experiment(snapshot, "acme", body, 0, "ana")
Traceback (most recent call last):
...
experiments.registry.InvalidDefinitionError: segment: unknown segment 'vip'
>>> vip = create_segment(snapshot, "acme", {"name": "vip", "rule": "opened > 3"}, 0, "ana")
>>> snapshot = fold(files, [vip])
>>> change = create_experiment(snapshot, "acme", body, 0, "ana")
>>> change.action, change.version
('created', 1)
>>> fold(files, [vip, change]).experiments.definitions["subject-v2"].segment
'acme/vip'
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import ValidationError

from experiments.definitions import (
    ExperimentDefinition,
    LoadedExperiments,
    allocation_changes,
    allocation_fingerprint,
    check_experiments,
)
from herald.errors import ConfigError
from policies.loader import PolicyError, PolicyProblem
from policies.segments import Segment

__all__ = [
    "CHANGE_COLUMNS",
    "MAX_EXPERIMENTS_PER_TENANT",
    "MAX_NOTE_CHARS",
    "MAX_SEGMENTS_PER_TENANT",
    "Change",
    "ConflictError",
    "Entry",
    "FileDefinitions",
    "InvalidDefinitionError",
    "Kind",
    "NotFoundError",
    "Registry",
    "RegistryError",
    "RegistrySnapshot",
    "create_experiment",
    "create_segment",
    "delete_experiment",
    "delete_segment",
    "experiment_state",
    "fold",
    "load_snapshot",
    "segment_key",
    "stop_experiment",
    "update_experiment",
    "update_segment",
]

Kind = Literal["experiment", "segment"]
Action = Literal["created", "updated", "stopped", "deleted"]
Source = Literal["file", "api"]
State = Literal["scheduled", "running", "ended"]

TABLE = "definition_changes"
CHANGE_COLUMNS = (
    "changed_at", "tenant_id", "kind", "object_id", "version", "action", "body", "actor", "note",
)  # fmt: skip
_CHECKED = "<api>"  # the source name of the validation run: never shown, problems are re-worded
# What one tenant may hold through the API. Each write checks the new definition against the tenant's
# others, and every snapshot validates every object, so these bound what one tenant adds to the cost of
# everyone's writes. Objects of the files do not count; deleted ones do not either.
MAX_EXPERIMENTS_PER_TENANT = 500
MAX_SEGMENTS_PER_TENANT = 200
MAX_NOTE_CHARS = 500


class RegistryError(ConfigError):
    """A change was refused; the message says why."""


class InvalidDefinitionError(RegistryError):
    """The definition is invalid; ``problems`` lists every ``field: reason``."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ConflictError(RegistryError):
    """The change is valid but conflicts with the current state: a running experiment's allocation,
    an object of a policies file, a name in use."""


class NotFoundError(RegistryError):
    """No such object for this tenant (another tenant's objects are not found either)."""


@dataclass(frozen=True, slots=True)
class Change:
    """One event of ``definition_changes``: the whole definition after the change (JSON, '' once
    deleted), its version (1, 2, 3 … per tenant, kind and object), who made it and why."""

    changed_at_ms: int
    tenant: str
    kind: Kind
    object_id: str
    version: int
    action: Action
    body: str
    actor: str
    note: str = ""

    def row(self) -> tuple[Any, ...]:
        """The table row, in CHANGE_COLUMNS order."""
        at = datetime.fromtimestamp(self.changed_at_ms / 1000, tz=UTC)
        return (at, self.tenant, self.kind, self.object_id, self.version, self.action, self.body, self.actor,
                self.note)  # fmt: skip

    def definition(self) -> dict[str, Any] | None:
        """The definition after the change, None once deleted."""
        return json.loads(self.body) if self.body else None


@dataclass(frozen=True, slots=True)
class FileDefinitions:
    """The read-only base: the experiments file (None without one) and the segments file."""

    experiments: LoadedExperiments | None = None
    segments: Mapping[str, Segment] = field(default_factory=dict)
    segments_source: str = "the segments file"

    @property
    def experiments_source(self) -> str:
        return self.experiments.source if self.experiments is not None else "the experiments file"


T = TypeVar("T", ExperimentDefinition, Segment)


@dataclass(frozen=True, slots=True)
class Entry(Generic[T]):
    """A current object with where it comes from. ``value`` is as written (an experiment names a tenant
    segment as the tenant does); ``tenant`` is None for a file segment (shared by every tenant);
    ``version`` is the newest change's, 0 for an object of a file."""

    value: T
    tenant: str | None
    source: Source
    version: int = 0
    changed_at_ms: int | None = None
    actor: str = ""


def segment_key(tenant: str, name: str) -> str:
    """The key of a tenant's own segment in ``RegistrySnapshot.segments``.

    >>> segment_key("acme-home", "vip")
    'acme-home/vip'
    """
    return f"{tenant}/{name}"


@dataclass(frozen=True)
class RegistrySnapshot:
    """The current definitions of every tenant.

    ``experiments`` and ``segments`` are what dispatch and the experiments job use: every tenant's
    experiments, a tenant segment's reference resolved to its :func:`segment_key`, and the segments by
    that key (file segments by their name), so ``variant_for(defn, …, snapshot.segments)`` works for
    every experiment. ``version`` changes whenever a file or any API object changes. The entries keep
    each object as written with its source, for the API.
    """

    experiments: LoadedExperiments
    segments: Mapping[str, Segment]
    version: str
    files: FileDefinitions
    experiment_entries: Mapping[str, Entry[ExperimentDefinition]]
    segment_entries: Mapping[str, Entry[Segment]]
    latest: Mapping[tuple[str, str, str], Change]
    problems: tuple[str, ...] = ()

    def experiment(self, tenant: str, experiment_id: str) -> Entry[ExperimentDefinition] | None:
        """The tenant's experiment, None when unknown or another tenant's."""
        entry = self.experiment_entries.get(experiment_id)
        return entry if entry is not None and entry.tenant == tenant else None

    def tenant_experiments(self, tenant: str) -> list[Entry[ExperimentDefinition]]:
        """The tenant's experiments, by id."""
        mine = (e for e in self.experiment_entries.values() if e.tenant == tenant)
        return sorted(mine, key=lambda e: e.value.id)

    def segment(self, tenant: str, name: str) -> Entry[Segment] | None:
        """The segment ``name`` as ``tenant`` sees it: its own, else a file's; None otherwise."""
        return self.segment_entries.get(segment_key(tenant, name)) or self.segment_entries.get(name)

    def tenant_segments(self, tenant: str) -> list[Entry[Segment]]:
        """The segments ``tenant`` sees (the files', then its own), by name."""
        return _tenant_segments(self.segment_entries, tenant)

    def segments_for(self, tenant: str) -> dict[str, Segment]:
        """The segments ``tenant``'s experiments may target, by the name they write (its own first)."""
        return _visible(self.segment_entries, tenant)

    def targeting(self, tenant: str, segment: str) -> list[ExperimentDefinition]:
        """The tenant's experiments that target ``segment`` (a name as the tenant writes it)."""
        return [e.value for e in self.tenant_experiments(tenant) if e.value.segment == segment]

    def next_version(self, tenant: str, kind: Kind, object_id: str) -> int:
        latest = self.latest.get((tenant, kind, object_id))
        return 1 if latest is None else latest.version + 1


# ------------------------------------------------------------------------------------------ snapshot


def fold(files: FileDefinitions, latest: Iterable[Change]) -> RegistrySnapshot:
    """The snapshot of the files plus the newest change of each API object. Pure."""
    newest: dict[tuple[str, str, str], Change] = {}
    for change in latest:
        key = (change.tenant, change.kind, change.object_id)
        if key not in newest or change.version > newest[key].version:
            newest[key] = change
    problems: list[str] = []
    live = (c for c in newest.values() if c.action != "deleted")
    current = sorted(live, key=lambda c: (c.kind, c.tenant, c.object_id))
    segments: dict[str, Entry[Segment]] = {
        name: Entry(segment, None, "file") for name, segment in files.segments.items()
    }
    for change in (c for c in current if c.kind == "segment"):
        try:
            segment = Segment.from_data(json.loads(change.body))
        except (ConfigError, ValueError) as exc:
            problems.append(f"{_where(change)}: left out: {exc}")
            continue
        if segment.name in files.segments:
            problems.append(
                f"{_where(change)}: {files.segments_source} now defines the same name; the tenant's own "
                "is used for its experiments"
            )
        segments[segment_key(change.tenant, segment.name)] = _entry(segment, change)
    experiments: dict[str, Entry[ExperimentDefinition]] = {}
    for defn in files.experiments.definitions.values() if files.experiments else ():
        experiments[defn.id] = Entry(defn, defn.tenant, "file")
    for change in (c for c in current if c.kind == "experiment"):
        try:
            defn = ExperimentDefinition.model_validate_json(change.body)
        except ValidationError as exc:
            problems.append(f"{_where(change)}: left out: {exc.errors()[0]['msg']}")
            continue
        if defn.id in experiments:
            owner = experiments[defn.id]
            where = files.experiments_source if owner.source == "file" else "another tenant"
            problems.append(f"{_where(change)}: left out: {where} defines the same id")
            continue
        experiments[defn.id] = _entry(defn, change)
    for tenant in sorted({c.tenant for c in current if c.kind == "experiment"}):
        own = [e for e in experiments.values() if e.tenant == tenant]
        for experiment_id, reason in _drifted(own, _visible(segments, tenant)):
            problems.append(f"{tenant}/experiment/{experiment_id}: left out: {reason}")
            del experiments[experiment_id]
    resolved = {key: _resolved(entry.value, segments) for key, entry in experiments.items()}
    version = _version(files, newest.values())
    source = f"{files.experiments_source} + {TABLE}"
    return RegistrySnapshot(
        experiments=LoadedExperiments(resolved, version, source),
        segments={key: entry.value for key, entry in segments.items()},
        version=version,
        files=files,
        experiment_entries=experiments,
        segment_entries=segments,
        latest=newest,
        problems=tuple(problems),
    )


def _where(change: Change) -> str:
    return f"{change.tenant}/{change.kind}/{change.object_id} v{change.version}"


def _entry(value: T, change: Change) -> Entry[T]:
    return Entry(value, change.tenant, "api", change.version, change.changed_at_ms, change.actor)


def _tenant_segments(entries: Mapping[str, Entry[Segment]], tenant: str) -> list[Entry[Segment]]:
    return sorted(
        (e for e in entries.values() if e.tenant in (None, tenant)),
        key=lambda e: (e.tenant is not None, e.value.name),
    )


def _visible(entries: Mapping[str, Entry[Segment]], tenant: str) -> dict[str, Segment]:
    return {e.value.name: e.value for e in _tenant_segments(entries, tenant)}


def _drifted(
    tenant_experiments: list[Entry[ExperimentDefinition]], segments: Mapping[str, Segment]
) -> list[tuple[str, str]]:
    """The tenant's API experiments that no longer validate with the rest, and why. Problems of file
    experiments are not theirs (the file was checked against its own segments when loaded)."""
    # Files first: a problem across two experiments is reported on the later one.
    entries = sorted(tenant_experiments, key=lambda e: (e.source != "file", e.value.id))
    dropped: dict[str, str] = {}
    while True:
        kept = [e for e in entries if e.value.id not in dropped]
        blamed: dict[str, list[str]] = {}
        for i, reason in _problems([_json(e.value) for e in kept], segments):
            if i is not None and kept[i].source == "api":
                blamed.setdefault(kept[i].value.id, []).append(reason)
        if not blamed:
            return sorted(dropped.items())
        dropped |= {experiment_id: "; ".join(reasons) for experiment_id, reasons in blamed.items()}


def _resolved(defn: ExperimentDefinition, segments: Mapping[str, Entry[Segment]]) -> ExperimentDefinition:
    """``defn`` naming its tenant's own segment by :func:`segment_key`, as ``segments`` holds it."""
    if defn.segment is None or segment_key(defn.tenant, defn.segment) not in segments:
        return defn
    return defn.model_copy(update={"segment": segment_key(defn.tenant, defn.segment)})


def _version(files: FileDefinitions, changes: Iterable[Change]) -> str:
    state = {
        "experiments": files.experiments.version if files.experiments else "",
        "segments": {name: s.definition.model_dump() for name, s in files.segments.items()},
        "changes": sorted([c.tenant, c.kind, c.object_id, c.version] for c in changes),
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------------ checks


def _json(defn: ExperimentDefinition) -> dict[str, Any]:
    return defn.model_dump(mode="json")


def _problems(entries: list[dict[str, Any]], segments: Mapping[str, Segment]) -> list[tuple[int | None, str]]:
    """Every problem of ``entries`` as an experiments file, by entry index (None: the whole file),
    worded for the API: ``field: reason`` with other entries named by id."""
    try:
        check_experiments(entries, segments, source=_CHECKED)
    except PolicyError as exc:
        return [_worded(problem, entries) for problem in exc.problems]
    return []


_ENTRY = re.compile(r"^experiments\[(\d+)\]\.?")
_OTHER = re.compile(r"experiments\[(\d+)\](?: \('[^']*'\))?")


def _worded(problem: PolicyProblem, entries: list[dict[str, Any]]) -> tuple[int | None, str]:
    """(entry index, "field: reason"): ``experiments[3].variants[1].weight`` -> ``variants[1].weight``,
    ``overlaps experiments[0] ('a') …`` -> ``overlaps experiment 'a' …``."""
    found = _ENTRY.match(problem.field)
    reason = _OTHER.sub(lambda m: f"experiment {entries[int(m[1])].get('id')!r}", problem.reason)
    if found is None:
        return None, f"{problem.field or 'body'}: {reason}"
    return int(found[1]), f"{problem.field[found.end() :] or 'body'}: {reason}"


def _body(body: Any, key: str, expected: str) -> dict[str, Any]:
    """A copy of the JSON object ``body`` whose ``key`` is ``expected``: filled in when absent, a 422
    when it names something else (the path decides)."""
    if not isinstance(body, Mapping):
        raise InvalidDefinitionError(["body: must be a JSON object"])
    found = body.get(key, expected)
    if found != expected:
        raise InvalidDefinitionError([f"{key}: must be {expected!r} as in the path, got {found!r}"])
    return {**body, key: expected}


def _checked_experiment(
    snapshot: RegistrySnapshot, tenant: str, candidate: dict[str, Any], replacing: str | None
) -> ExperimentDefinition:
    """``candidate`` validated as the last entry of the tenant's experiments (``replacing`` left out)."""
    others = [_json(e.value) for e in snapshot.tenant_experiments(tenant) if e.value.id != replacing]
    found = _problems([*others, candidate], snapshot.segments_for(tenant))
    mine = [reason for i, reason in found if i == len(others)]
    if mine:
        raise InvalidDefinitionError(mine)
    return ExperimentDefinition.model_validate(candidate)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")


def experiment_state(defn: ExperimentDefinition, now_ms: int) -> State:
    """``scheduled`` before start, ``running`` in ``[start, stop)``, ``ended`` from stop on."""
    if now_ms < defn.start_ms:
        return "scheduled"
    return "running" if now_ms < defn.stop_ms else "ended"


def _change(
    snapshot: RegistrySnapshot,
    tenant: str,
    kind: Kind,
    object_id: str,
    action: Action,
    value: dict[str, Any] | None,
    now_ms: int,
    actor: str,
    note: str,
) -> Change:
    if len(note) > MAX_NOTE_CHARS:
        raise InvalidDefinitionError([f"note: at most {MAX_NOTE_CHARS} characters, got {len(note)}"])
    body = "" if value is None else json.dumps(value, separators=(",", ":"))
    version = snapshot.next_version(tenant, kind, object_id)
    return Change(now_ms, tenant, kind, object_id, version, action, body, actor, note)


# ------------------------------------------------------------------------------------------ experiments


def create_experiment(
    snapshot: RegistrySnapshot, tenant: str, body: Any, now_ms: int, actor: str, note: str = ""
) -> Change:
    """A new experiment of ``tenant`` (``tenant`` in the body is filled in or must match)."""
    candidate = _body(body, "tenant", tenant)
    experiment_id = candidate.get("id")
    existing = snapshot.experiment_entries.get(experiment_id) if isinstance(experiment_id, str) else None
    if existing is not None and existing.tenant == tenant:
        raise ConflictError(f"experiment {experiment_id!r} already exists ({_origin(snapshot, existing)})")
    if existing is not None:
        raise ConflictError(
            f"experiment id {experiment_id!r} is used by another tenant; ids are unique "
            "across tenants, choose another"
        )
    _within_count(snapshot, tenant, "experiment", MAX_EXPERIMENTS_PER_TENANT)
    defn = _checked_experiment(snapshot, tenant, candidate, None)
    return _change(snapshot, tenant, "experiment", defn.id, "created", _json(defn), now_ms, actor, note)


def update_experiment(
    snapshot: RegistrySnapshot,
    tenant: str,
    experiment_id: str,
    body: Any,
    now_ms: int,
    actor: str,
    note: str = "",
) -> Change:
    """The whole new definition of an API experiment; a running one keeps its allocation."""
    before = _api_experiment(snapshot, tenant, experiment_id).value
    candidate = _body(_body(body, "tenant", tenant), "id", experiment_id)
    after = _checked_experiment(snapshot, tenant, candidate, experiment_id)
    old = LoadedExperiments({experiment_id: before}, "")
    if allocation_changes(old, LoadedExperiments({experiment_id: after}, ""), now_ms):
        fields = [
            name
            for name in ExperimentDefinition.model_fields
            if allocation_fingerprint(before.model_copy(update={name: getattr(after, name)}))
            != allocation_fingerprint(before)
        ]
        raise ConflictError(
            f"experiment {experiment_id!r} is running: its allocation cannot change ({', '.join(fields)} "
            "changed), it would reshuffle who gets which variant mid-flight; move stop to end it early "
            "(POST …/stop), then create a new experiment"
        )
    return _change(
        snapshot, tenant, "experiment", experiment_id, "updated", _json(after), now_ms, actor, note
    )


def stop_experiment(
    snapshot: RegistrySnapshot, tenant: str, experiment_id: str, now_ms: int, actor: str, note: str = ""
) -> Change:
    """End a running API experiment now (``stop`` = now; its allocation is kept)."""
    defn = _api_experiment(snapshot, tenant, experiment_id).value
    state = experiment_state(defn, now_ms)
    if state == "scheduled":
        raise ConflictError(
            f"experiment {experiment_id!r} has not started (start {_iso(defn.start_ms)}); "
            "DELETE it instead, or PUT another start"
        )
    if state == "ended":
        raise ConflictError(f"experiment {experiment_id!r} already ended at {_iso(defn.stop_ms)}")
    stopped = {**_json(defn), "stop": _iso(now_ms)}
    after = _checked_experiment(snapshot, tenant, stopped, experiment_id)
    return _change(
        snapshot, tenant, "experiment", experiment_id, "stopped", _json(after), now_ms, actor, note
    )


def delete_experiment(
    snapshot: RegistrySnapshot, tenant: str, experiment_id: str, now_ms: int, actor: str, note: str = ""
) -> Change:
    """Delete an API experiment that has not started yet."""
    defn = _api_experiment(snapshot, tenant, experiment_id).value
    state = experiment_state(defn, now_ms)
    if state != "scheduled":
        what = "stop it instead (POST …/stop)" if state == "running" else "it stays for its results"
        raise ConflictError(
            f"experiment {experiment_id!r} is {state} (started {_iso(defn.start_ms)}): its "
            f"exposures and results refer to it, so it cannot be deleted; {what}"
        )
    return _change(snapshot, tenant, "experiment", experiment_id, "deleted", None, now_ms, actor, note)


def _within_count(snapshot: RegistrySnapshot, tenant: str, kind: Kind, limit: int) -> None:
    """Refuse one more object of ``kind`` when the tenant has ``limit`` through the API (those a changed
    file leaves out of the snapshot count: they come back when the file does)."""
    latest = snapshot.latest.items()
    held = sum(1 for (t, k, _), c in latest if t == tenant and k == kind and c.action != "deleted")
    if held >= limit:
        raise InvalidDefinitionError(
            [f"{kind}s: at most {limit} per tenant through the API ({tenant} has {held})"]
        )


def _origin(snapshot: RegistrySnapshot, entry: Entry[Any]) -> str:
    if entry.source == "file":
        segment = isinstance(entry.value, Segment)
        where = snapshot.files.segments_source if segment else snapshot.files.experiments_source
        return f"defined in policies file {where}; edit the file"
    return "created through the API; PUT to change it"


def _api_experiment(
    snapshot: RegistrySnapshot, tenant: str, experiment_id: str
) -> Entry[ExperimentDefinition]:
    entry = snapshot.experiment(tenant, experiment_id)
    if entry is None:
        raise NotFoundError(f"no experiment {experiment_id!r} for tenant {tenant!r}")
    if entry.source == "file":
        raise ConflictError(f"experiment {experiment_id!r} is {_origin(snapshot, entry)}")
    return entry


# ------------------------------------------------------------------------------------------ segments


def create_segment(
    snapshot: RegistrySnapshot, tenant: str, body: Any, now_ms: int, actor: str, note: str = ""
) -> Change:
    """A new segment of ``tenant``, seen and targeted by its experiments only."""
    candidate = _body(body, "tenant", tenant)
    del candidate["tenant"]
    name = candidate.get("name")
    existing = snapshot.segment(tenant, name) if isinstance(name, str) else None
    if existing is not None and existing.tenant is None:
        raise ConflictError(
            f"segment {name!r} is defined in policies file {snapshot.files.segments_source} "
            "and shared by every tenant; a tenant segment cannot take its name"
        )
    if existing is not None:
        raise ConflictError(f"segment {name!r} already exists ({_origin(snapshot, existing)})")
    _within_count(snapshot, tenant, "segment", MAX_SEGMENTS_PER_TENANT)
    segment = _checked_segment(candidate)
    value = segment.definition.model_dump()
    return _change(snapshot, tenant, "segment", segment.name, "created", value, now_ms, actor, note)


def update_segment(
    snapshot: RegistrySnapshot, tenant: str, name: str, body: Any, now_ms: int, actor: str, note: str = ""
) -> Change:
    """The whole new definition of a tenant segment; its rule is frozen while a running experiment
    targets it (it decides who is in the experiment)."""
    before = _api_segment(snapshot, tenant, name).value
    candidate = _body(_body(body, "tenant", tenant), "name", name)
    del candidate["tenant"]
    segment = _checked_segment(candidate)
    running = [d.id for d in snapshot.targeting(tenant, name) if d.running_at(now_ms)]
    if running and segment.definition.rule != before.definition.rule:
        named = ", ".join(map(repr, running))
        raise ConflictError(
            f"segment {name!r} is targeted by running experiment {named}: "
            "its rule cannot change, it would change who is in the experiment mid-flight; "
            "create a new segment instead"
        )
    value = segment.definition.model_dump()
    return _change(snapshot, tenant, "segment", name, "updated", value, now_ms, actor, note)


def delete_segment(
    snapshot: RegistrySnapshot, tenant: str, name: str, now_ms: int, actor: str, note: str = ""
) -> Change:
    """Delete a tenant segment no experiment of the tenant targets."""
    _api_segment(snapshot, tenant, name)
    users = snapshot.targeting(tenant, name)
    if users:
        named = ", ".join(f"{d.id!r} ({experiment_state(d, now_ms)})" for d in users)
        raise ConflictError(
            f"segment {name!r} is targeted by experiment {named}; a running experiment keeps "
            "its segment, point the others at another segment first"
        )
    return _change(snapshot, tenant, "segment", name, "deleted", None, now_ms, actor, note)


def _checked_segment(candidate: dict[str, Any]) -> Segment:
    try:
        return Segment.from_data(candidate)
    except ConfigError as exc:
        raise InvalidDefinitionError([str(exc)]) from None


def _api_segment(snapshot: RegistrySnapshot, tenant: str, name: str) -> Entry[Segment]:
    entry = snapshot.segment(tenant, name)
    if entry is None:
        raise NotFoundError(f"no segment {name!r} for tenant {tenant!r}")
    if entry.tenant is None:
        raise ConflictError(f"segment {name!r} is {_origin(snapshot, entry)}")
    return entry


# ------------------------------------------------------------------------------------------ storage


class ChangeStore(Protocol):
    """What the registry needs of the warehouse (projections.warehouse.Warehouse)."""

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def insert(
        self,
        table: str,
        rows: Sequence[Sequence[Any]],
        columns: Sequence[str],
        dedup_token: str | None = None,
    ) -> None: ...


_SELECT = f"""
SELECT toUnixTimestamp64Milli(changed_at), tenant_id, kind, object_id, version, action, body, actor, note
FROM {TABLE}
"""
# The newest event of each object without sorting the history's bodies: the subquery reads the key
# columns only; the primary key then narrows the read to the granules holding those versions, and
# PREWHERE drops their other rows before ``body`` is read, so the sort and the result hold one body
# per object. Two events of one version (two processes writing at once): the later wins.
_LATEST_SQL = f"""{_SELECT}
PREWHERE (tenant_id, kind, object_id, version) IN (
    SELECT tenant_id, kind, object_id, max(version) FROM {TABLE} GROUP BY tenant_id, kind, object_id
)
ORDER BY tenant_id, kind, object_id, changed_at DESC
LIMIT 1 BY tenant_id, kind, object_id
"""
_HISTORY_SQL = (
    _SELECT
    + "WHERE tenant_id = {tenant:String} AND kind = {kind:String} AND object_id = {object_id:String}\n"
    + "ORDER BY version, changed_at"
)
_PROBE_SQL = f"SELECT count(), max(version), toUnixTimestamp64Milli(max(changed_at)) FROM {TABLE}"
Probe = tuple[int, int, int]


def _probe(store: ChangeStore) -> Probe:
    count, version, at = store.rows(_PROBE_SQL)[0]
    return int(count), int(version), int(at)


def _probe_after(probe: Probe, change: Change) -> Probe:
    """What the probe shows once ``change`` is appended, if nothing else was."""
    count, version, at = probe
    return count + 1, max(version, change.version), max(at, change.changed_at_ms)


def _changes(rows: Iterable[tuple[Any, ...]]) -> list[Change]:
    return [
        Change(int(at), str(tenant), kind, str(object_id), int(version), action, str(body), str(actor),
               str(note))
        for at, tenant, kind, object_id, version, action, body, actor, note in rows
    ]  # fmt: skip


def load_snapshot(store: ChangeStore, files: FileDefinitions) -> RegistrySnapshot:
    """The current definitions: ``files`` plus the newest event of each object in the warehouse."""
    return fold(files, _changes(store.rows(_LATEST_SQL)))


class Registry:
    """Reads and appends definition changes in the warehouse; the snapshot is cached until the table
    changes (a cheap count probe), so dispatch may ask for it often.

    A write costs the same whatever the history's length: the snapshot after it is the one before
    with the appended change folded in, nothing is read back. It is cached under the probe the table
    will show if nothing else is appended meanwhile; a write by another process (or a lost insert)
    makes the next probe differ, and that snapshot reads the newest events again (only theirs).
    """

    def __init__(self, store: ChangeStore, files: FileDefinitions) -> None:
        self.store = store
        self.files = files
        self._lock = threading.Lock()
        self._cached: tuple[Probe, RegistrySnapshot] | None = None

    def snapshot(self) -> RegistrySnapshot:
        """The current definitions (see :class:`RegistrySnapshot`)."""
        return self._current()[1]

    def _current(self) -> tuple[Probe, RegistrySnapshot]:
        probe = _probe(self.store)
        cached = self._cached
        if cached is not None and cached[0] == probe:
            return cached
        current = (probe, load_snapshot(self.store, self.files))
        self._cached = current
        return current

    def apply(self, plan: Callable[[RegistrySnapshot], Change]) -> Change:
        """Check a change against the current state and append it: ``plan`` (e.g. ``lambda s:
        create_experiment(s, tenant, body, now_ms, actor)``) returns it or raises RegistryError."""
        with self._lock:
            probe, before = self._current()
            change = plan(before)
            self.store.insert(TABLE, [change.row()], CHANGE_COLUMNS)
            after = fold(self.files, [*before.latest.values(), change])
            self._cached = (_probe_after(probe, change), after)
        return change

    def changes(self, tenant: str, kind: Kind, object_id: str) -> list[Change]:
        """Every event of one object, oldest first."""
        parameters = {"tenant": tenant, "kind": kind, "object_id": object_id}
        return _changes(self.store.rows(_HISTORY_SQL, parameters))
