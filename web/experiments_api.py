"""Experiments and segments under ``/api/v1/tenants/{tenant}``: definitions (read, and changed through the
API), live results, the effect over time and each object's change events.

Definitions come from experiments/registry.py: the YAML files, read-only here (changing one of their
objects answers 409 naming the file), plus the changes made through this API, each stored as an event
in ``definition_changes``. The checks are the YAML loader's; a running experiment's allocation is
frozen (409 naming what changed; move its stop, ``POST …/stop``, to end it early).

Access, as the rest of /api/v1 (web/auth.py): a key reads only its own tenant (403 for another, before
anything is looked up); viewers read, analysts create and change experiments and segments, operators
stop and delete experiments. Another tenant's object is a 404 even for a global key. Errors: 422 with
``detail`` a list of ``field: reason`` (``variants[1].weight: Input should be greater than 0``; a rule
error gives its column and a caret), 409 and 404 with ``detail`` a sentence.
"""

# No ``from __future__ import annotations``: FastAPI reads the dependency aliases defined inside
# experiments_router from the annotations, and string annotations could not see those locals.
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from fastapi import Path as PathParam

from experiments.definitions import METRICS, ExperimentDefinition
from experiments.registry import (
    MAX_NOTE_CHARS,
    Change,
    ConflictError,
    Entry,
    InvalidDefinitionError,
    Kind,
    Registry,
    RegistryError,
    RegistrySnapshot,
    create_experiment,
    create_segment,
    delete_experiment,
    delete_segment,
    experiment_state,
    stop_experiment,
    update_experiment,
    update_segment,
)
from herald.dates import OUT_OF_RANGE, in_range
from policies.segments import Segment
from projections import experiment_queries
from projections.warehouse import Warehouse
from web.auth import TENANT_PATTERN, ApiAuth, Principal, Role, forbid

ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
EXPERIMENT_BODY = """The whole definition, as in an experiments YAML file (docs/experiments.md): ``id``,
``template``, ``variants`` (the first is ``control``), ``start``, ``stop``, ``primary_metric``, ``mde`` and
optionally ``description``, ``segment`` (a segment of the policies file or one of the tenant's own),
``guardrail_metrics``, ``alpha``, ``layer``, ``holdout``. ``tenant`` may be left out (the path's)."""
SEGMENT_BODY = """``name``, ``rule`` (docs/segments.md) and optionally ``description``; the segment is the
tenant's own: only its experiments see and target it."""


def experiments_router(  # noqa: PLR0915 - one short nested function per endpoint
    warehouse: Warehouse,
    auth: ApiAuth,
    registry: Registry,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> APIRouter:
    """The experiment and segment endpoints over ``registry`` (definitions) and ``warehouse`` (results)."""
    router = APIRouter(prefix="/api/v1/tenants/{tenant}", tags=["experiments"])
    Caller = Annotated[Principal, Depends(auth.principal)]  # noqa: N806 - a type alias, named as one

    def access(role: Role) -> Callable[..., Principal]:
        def dependency(
            caller: Caller,
            tenant: Annotated[str, PathParam(pattern=TENANT_PATTERN, description="Tenant id")],
        ) -> Principal:
            forbid(caller, role, tenant)  # before anything is looked up: another tenant sees nothing
            return caller

        return dependency

    Viewer = Annotated[Principal, Depends(access(Role.VIEWER))]  # noqa: N806 - a type alias
    Analyst = Annotated[Principal, Depends(access(Role.ANALYST))]  # noqa: N806 - a type alias
    Operator = Annotated[Principal, Depends(access(Role.OPERATOR))]  # noqa: N806 - a type alias
    ExperimentId = Annotated[str, PathParam(pattern=ID_PATTERN)]  # noqa: N806 - a type alias
    SegmentName = Annotated[str, PathParam(pattern=ID_PATTERN)]  # noqa: N806 - a type alias
    Note = Annotated[  # noqa: N806 - a type alias, named as one
        str, Query(max_length=MAX_NOTE_CHARS, description="Why: kept with the change event")
    ]
    ExperimentBody = Annotated[Any, Body(description=EXPERIMENT_BODY)]  # noqa: N806 - a type alias
    SegmentBody = Annotated[Any, Body(description=SEGMENT_BODY)]  # noqa: N806 - a type alias

    def now_ms() -> int:
        return int(clock().timestamp() * 1000)

    def apply(plan: Callable[[RegistrySnapshot], Change]) -> Change:
        try:
            return registry.apply(plan)
        except RegistryError as exc:
            raise _http_error(exc) from None

    def experiment_entry(tenant: str, experiment_id: str) -> Entry[ExperimentDefinition]:
        entry = registry.snapshot().experiment(tenant, experiment_id)
        if entry is None:
            raise HTTPException(404, detail=f"no experiment {experiment_id!r} for tenant {tenant!r}")
        return entry

    def experiment_written(change: Change) -> dict[str, Any]:
        entry = registry.snapshot().experiment(change.tenant, change.object_id)
        shown = None if entry is None else experiment_summary(entry, now_ms())
        return {"change": change_payload(change), "experiment": shown}

    def segment_written(change: Change) -> dict[str, Any]:
        current = registry.snapshot()
        entry = current.segment(change.tenant, change.object_id)
        shown = None if entry is None else segment_payload(current, change.tenant, entry)
        return {"change": change_payload(change), "segment": shown}

    # ---------------------------------------------------------------------------------- experiments

    @router.get("/experiments", summary="The tenant's experiments: the policies file's and the API's")
    def list_experiments(tenant: str, _: Viewer) -> dict[str, Any]:
        """``version`` changes whenever any definition changes; per experiment ``source`` (file or api),
        ``version`` (of its newest change; 0 for the file's), ``state`` (scheduled, running, ended)."""
        current, now = registry.snapshot(), now_ms()
        return {
            "tenant": tenant,
            "version": current.version,
            "experiments": [experiment_summary(e, now) for e in current.tenant_experiments(tenant)],
        }

    @router.post("/experiments", status_code=201, summary="Create an experiment (analyst)")
    def create(tenant: str, caller: Analyst, body: ExperimentBody, note: Note = "") -> dict[str, Any]:
        now = now_ms()
        return experiment_written(apply(lambda s: create_experiment(s, tenant, body, now, caller.name, note)))

    @router.get(
        "/experiments/{experiment_id}",
        summary="An experiment's live results: exposures and conversions per variant, effects, CIs",
        description="Per variant the notifications exposed at dispatch (DISPATCHED carrying the "
        "experiment) and how many of them were delivered, opened, clicked, replied to, unsubscribed; per "
        "metric (primary, then guardrails) every variant against the control with the relative effect, "
        "p-value, always-valid sequential CI, chance to beat control, the sample-ratio-mismatch check and "
        "the sample still needed for the MDE (experiments/analyze.py). Intent to treat: the unit is the "
        "exposed notification. Also ``state`` (scheduled, running, ended), the definition as written, its "
        "``source`` and ``version``. 404 for "
        "another tenant's or an unknown experiment.",
    )
    def experiment(tenant: str, experiment_id: ExperimentId, _: Viewer) -> dict[str, Any]:
        entry = experiment_entry(tenant, experiment_id)
        key = (tenant, experiment_id)
        stats = experiment_queries.variant_stats(warehouse, [key])[key]
        now = now_ms()
        report = experiment_queries.experiment_report(entry.value, stats, now)
        return {**report, "state": experiment_state(entry.value, now), **definition_payload(entry)}

    @router.put("/experiments/{experiment_id}", summary="Replace an API experiment's definition (analyst)")
    def update(
        tenant: str, experiment_id: ExperimentId, caller: Analyst, body: ExperimentBody, note: Note = ""
    ) -> dict[str, Any]:
        """A running experiment keeps its allocation (id, variants and weights, layer, holdout,
        segment): 409 naming what changed. Its other fields, and ``stop``, may change."""
        now = now_ms()
        return experiment_written(
            apply(lambda s: update_experiment(s, tenant, experiment_id, body, now, caller.name, note))
        )

    @router.post("/experiments/{experiment_id}/stop", summary="End a running experiment now (operator)")
    def stop(tenant: str, experiment_id: ExperimentId, caller: Operator, note: Note = "") -> dict[str, Any]:
        """Sets ``stop`` to now; who was in keeps their variant in the results."""
        now = now_ms()
        return experiment_written(
            apply(lambda s: stop_experiment(s, tenant, experiment_id, now, caller.name, note))
        )

    @router.delete("/experiments/{experiment_id}", summary="Delete an experiment before it starts (operator)")
    def delete(tenant: str, experiment_id: ExperimentId, caller: Operator, note: Note = "") -> dict[str, Any]:
        """Only before its start: once started, its exposures and results refer to it (409: stop it)."""
        now = now_ms()
        change = apply(lambda s: delete_experiment(s, tenant, experiment_id, now, caller.name, note))
        return {"change": change_payload(change)}

    @router.get("/experiments/{experiment_id}/changes", summary="An experiment's change events, oldest first")
    def experiment_changes(tenant: str, experiment_id: ExperimentId, _: Viewer) -> dict[str, Any]:
        """Every change made through the API (a deleted experiment's too); none for the file's."""
        return changes_payload(
            tenant, "experiment", experiment_id, registry.snapshot().experiment(tenant, experiment_id)
        )

    @router.get(
        "/experiments/{experiment_id}/history",
        summary="The effect over time: the stored statistics of every computation",
        description="One point per computation (the experiments job, every few seconds while the "
        "statistics move) x metric x variant from ``experiment_results``, oldest first: ``n``, "
        "``conversions``, ``mean``; for a treatment against the control ``relative_effect`` with its CI "
        "(``ci_low``/``ci_high``) and always-valid sequential CI (``seq_ci_low``/``seq_ci_high``), "
        "``significant``, ``p_value``, ``power``, ``remaining_sample_size``; ``srm_p_value``/``srm_flag`` "
        "of the split. The control's points have null effects. Empty before the first computation.",
    )
    def history(
        tenant: str,
        experiment_id: ExperimentId,
        _: Viewer,
        metric: Annotated[str, Query(description="One metric; every metric when left out")] = "",
        since: Annotated[datetime | None, Query(description="ISO time: computations from then on")] = None,
    ) -> dict[str, Any]:
        if since is not None and not in_range(since):
            raise HTTPException(422, detail=[f"since: {OUT_OF_RANGE}"])
        defn = experiment_entry(tenant, experiment_id).value
        if metric and metric not in METRICS:
            raise HTTPException(
                422, detail=[f"metric: unknown metric {metric!r}; one of {', '.join(METRICS)}"]
            )
        since_ms = 0 if since is None else int(since.timestamp() * 1000)
        rows = experiment_queries.results_history(warehouse, tenant, experiment_id, metric, since_ms)
        return {
            "experiment_id": experiment_id,
            "tenant": tenant,
            "metric": metric or None,
            "primary_metric": defn.primary_metric,
            "control": defn.variants[0].name,
            "points": [{"computed_at": _iso(row["computed_at_ms"]), **row} for row in rows],
        }

    # ---------------------------------------------------------------------------------- segments

    @router.get("/segments", summary="The segments the tenant sees: the policies file's and its own")
    def list_segments(tenant: str, _: Viewer) -> dict[str, Any]:
        current = registry.snapshot()
        return {
            "tenant": tenant,
            "version": current.version,
            "segments": [segment_payload(current, tenant, e) for e in current.tenant_segments(tenant)],
        }

    @router.post("/segments", status_code=201, summary="Create one of the tenant's own segments (analyst)")
    def create_tenant_segment(
        tenant: str, caller: Analyst, body: SegmentBody, note: Note = ""
    ) -> dict[str, Any]:
        """409 when the policies file defines the name (shared by every tenant) or the tenant has it."""
        now = now_ms()
        return segment_written(apply(lambda s: create_segment(s, tenant, body, now, caller.name, note)))

    @router.get("/segments/{name}", summary="One segment, with the tenant's experiments that target it")
    def segment(tenant: str, name: SegmentName, _: Viewer) -> dict[str, Any]:
        current = registry.snapshot()
        entry = current.segment(tenant, name)
        if entry is None:
            raise HTTPException(404, detail=f"no segment {name!r} for tenant {tenant!r}")
        return segment_payload(current, tenant, entry)

    @router.put("/segments/{name}", summary="Replace one of the tenant's segments (analyst)")
    def update_tenant_segment(
        tenant: str, name: SegmentName, caller: Analyst, body: SegmentBody, note: Note = ""
    ) -> dict[str, Any]:
        """The rule cannot change while a running experiment targets the segment (409)."""
        now = now_ms()
        return segment_written(apply(lambda s: update_segment(s, tenant, name, body, now, caller.name, note)))

    @router.delete("/segments/{name}", summary="Delete one of the tenant's segments (analyst)")
    def delete_tenant_segment(
        tenant: str, name: SegmentName, caller: Analyst, note: Note = ""
    ) -> dict[str, Any]:
        """409 while an experiment of the tenant targets it."""
        now = now_ms()
        change = apply(lambda s: delete_segment(s, tenant, name, now, caller.name, note))
        return {"change": change_payload(change)}

    @router.get("/segments/{name}/changes", summary="A segment's change events, oldest first")
    def segment_changes(tenant: str, name: SegmentName, _: Viewer) -> dict[str, Any]:
        return changes_payload(tenant, "segment", name, registry.snapshot().segment(tenant, name))

    def changes_payload(tenant: str, kind: Kind, object_id: str, entry: Entry[Any] | None) -> dict[str, Any]:
        events = registry.changes(tenant, kind, object_id)
        if entry is None and not events:
            raise HTTPException(404, detail=f"no {kind} {object_id!r} for tenant {tenant!r}")
        return {
            "tenant": tenant,
            "kind": kind,
            "id": object_id,
            "source": entry.source if entry is not None else "api",
            "changes": [change_payload(c) for c in events],
        }

    return router


def _http_error(exc: RegistryError) -> HTTPException:
    if isinstance(exc, InvalidDefinitionError):
        return HTTPException(422, detail=exc.problems)
    return HTTPException(409 if isinstance(exc, ConflictError) else 404, detail=str(exc))


def _iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat()


def change_payload(change: Change) -> dict[str, Any]:
    """One change event as the API shows it."""
    return {
        "changed_at": _iso(change.changed_at_ms),
        "version": change.version,
        "action": change.action,
        "actor": change.actor,
        "note": change.note,
        "definition": change.definition(),
    }


def definition_payload(entry: Entry[Any]) -> dict[str, Any]:
    """Where an object comes from: ``source`` (file or api), ``version`` (of its newest change, 0 for the
    file's), when and by whom it last changed, and the definition as written."""
    value = entry.value.definition if isinstance(entry.value, Segment) else entry.value
    return {
        "source": entry.source,
        "version": entry.version,
        "changed_at": _iso(entry.changed_at_ms),
        "changed_by": entry.actor or None,
        "definition": value.model_dump(mode="json"),
    }


def experiment_summary(entry: Entry[ExperimentDefinition], now_ms: int) -> dict[str, Any]:
    """A list entry: what the list always showed, the state and where the definition comes from."""
    d = entry.value
    return {
        "experiment_id": d.id,
        "template": d.template,
        "description": d.description,
        "running": d.running_at(now_ms),
        "state": experiment_state(d, now_ms),
        "start": d.start.isoformat(),
        "stop": d.stop.isoformat(),
        "primary_metric": d.primary_metric,
        "guardrail_metrics": list(d.guardrail_metrics),
        "segment": d.segment,
        "variants": [v.name for v in d.variants],
        "dashboard_url": f"/dashboard/experiments/{d.id}?tenant={d.tenant}",
        **definition_payload(entry),
    }


def segment_payload(snapshot: RegistrySnapshot, tenant: str, entry: Entry[Segment]) -> dict[str, Any]:
    """A segment the tenant sees: ``shared`` when it comes from the policies file (every tenant's)."""
    definition = entry.value.definition
    return {
        "name": definition.name,
        "description": definition.description,
        "rule": definition.rule,
        "shared": entry.tenant is None,
        "targeted_by": [d.id for d in snapshot.targeting(tenant, definition.name)],
        **definition_payload(entry),
    }
