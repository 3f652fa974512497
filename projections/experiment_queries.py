"""Experiment reads: sufficient statistics per variant, the report computed from them, stored results.

Sufficient statistics come from ``experiment_variant_minute`` (kept by a materialized view as events
are inserted, migration 0006): per variant the exact number of notifications exposed (DISPATCHED
carrying the experiment) and, of those, converted per proportion metric, plus count / sum / sum of
squares of the delivery latency for the latency mean. :func:`experiment_report` turns them into
comparisons with the control (intent to treat: the unit is the exposed notification) through
experiments/analyze.py, the same code as ``cli.py experiments analyze``. The experiments job
(streams/experiments.py) stores each report in ``experiment_results``; :func:`latest_results` and
:func:`results_history` read them back for the API and the dashboard.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from experiments.analyze import analyze
from experiments.definitions import ExperimentDefinition
from projections.warehouse import Warehouse

PROPORTION_EVENTS = {
    "delivery_rate": "delivered",
    "open_rate": "opened",
    "click_rate": "clicked",
    "reply_rate": "replied",
    "unsubscribe_rate": "unsubscribed",
    "complaint_rate": "complained",
    "bounce_rate": "bounced",
}
"""Proportion metrics and the count of exposed notifications they convert on."""
LOWER_IS_BETTER = frozenset({"unsubscribe_rate", "complaint_rate", "bounce_rate", "latency_mean"})
COUNTS = ("exposed", "delivered", "opened", "clicked", "replied", "unsubscribed", "complained", "bounced")
LATENCY = ("latency_n", "latency_sum", "latency_sum_squares")

_STATS_SQL = f"""
SELECT tenant_id, experiment_id, variant,
       {", ".join(f"uniqExactMerge({c})" for c in COUNTS)},
       sum(latency_n), sum(latency_sum), sum(latency_sum_squares),
       toUnixTimestamp(max(minute)) * 1000 + 60000
FROM experiment_variant_minute
WHERE (tenant_id, experiment_id) IN {{keys:Array(Tuple(String, String))}}
GROUP BY tenant_id, experiment_id, variant
"""

Stats = dict[str, dict[str, float]]  # variant -> COUNTS + LATENCY + data_through_ms


def variant_stats(warehouse: Warehouse, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], Stats]:
    """Sufficient statistics per (tenant, experiment) and variant, exact, as of now."""
    wanted = sorted(set(keys))
    found: dict[tuple[str, str], Stats] = {key: {} for key in wanted}
    if not wanted:
        return found
    names = (*COUNTS, *LATENCY, "data_through_ms")
    for tenant, experiment, variant, *values in warehouse.rows(_STATS_SQL, {"keys": wanted}):
        found[(str(tenant), str(experiment))][str(variant)] = dict(
            zip(names, (float(v) for v in values), strict=True)
        )
    return found


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _metric_payload(
    defn: ExperimentDefinition, metric: str, per_variant: list[dict[str, Any]]
) -> dict[str, Any]:
    base = {
        "alpha": defn.alpha,
        "sequential": True,
        "mde": defn.mde,
        "weights": [v.weight for v in defn.variants],
    }
    if metric in PROPORTION_EVENTS:
        field = PROPORTION_EVENTS[metric]
        variants = [
            {"name": v["name"], "n": int(v["exposed"]), "conversions": int(v[field])} for v in per_variant
        ]
        return {**base, "metric": "proportion", "variants": variants}
    variants = [
        {"name": v["name"], "n": int(v["latency_n"]), "sum": v["latency_sum"],
         "sum_squares": v["latency_sum_squares"]}
        for v in per_variant
    ]  # fmt: skip
    return {**base, "metric": "mean", "variants": variants}


def experiment_report(defn: ExperimentDefinition, stats: Stats, now_ms: int) -> dict[str, Any]:
    """An experiment's definition, per-variant counts and, for each metric it names (primary first,
    then guardrails), every variant compared with the control (the first variant). Sequential
    (always-valid) CIs, so the numbers may be watched continuously; holm correction across variants.
    ``better`` says which direction of the effect is good. Pure.
    """
    empty = dict.fromkeys((*COUNTS, *LATENCY), 0.0)
    per_variant: list[dict[str, Any]] = [
        {"name": v.name, **empty, **stats.get(v.name, {})} for v in defn.variants
    ]
    metrics: dict[str, Any] = {}
    srm_p_value = None
    for metric in (defn.primary_metric, *defn.guardrail_metrics):
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        payload = _metric_payload(defn, metric, per_variant)
        if any(v["n"] == 0 for v in payload["variants"]):
            metrics[metric] = {"status": "waiting", "better": better, "reason": "a variant has no data yet"}
            continue
        result = analyze(payload)
        if payload["metric"] == "proportion":
            srm_p_value = result["srm_p_value"]
        else:  # the split check belongs to exposures, not to the delivered subset the mean is over
            result["srm_p_value"] = srm_p_value
            result["srm_flag"] = None if srm_p_value is None else result["srm_flag"]
        metrics[metric] = {"status": "ok", "better": better, **result}
    through = max((v.get("data_through_ms", 0.0) for v in stats.values()), default=0.0)
    return {
        "experiment_id": defn.id,
        "tenant": defn.tenant,
        "template": defn.template,
        "running": defn.running_at(now_ms),
        "start": defn.start.isoformat(),
        "stop": defn.stop.isoformat(),
        "primary_metric": defn.primary_metric,
        "data_through_ms": int(through) or None,
        "variants": [
            {
                "name": v["name"],
                **{c: int(v[c]) for c in COUNTS},
                "latency_n": int(v["latency_n"]),
                "latency_mean_ms": _clean(v["latency_sum"] / v["latency_n"]) if v["latency_n"] else None,
                "template_version": spec.template_version,
                "weight": spec.weight,
            }
            for v, spec in zip(per_variant, defn.variants, strict=True)
        ],
        "metrics": metrics,
    }


RESULT_COLUMNS = (
    "computed_at", "data_through", "tenant_id", "experiment_id", "definition_version", "metric",
    "metric_kind", "status", "variant", "is_control", "n", "conversions", "mean", "absolute_effect",
    "relative_effect", "p_value", "adjusted_p_value", "ci_low", "ci_high", "seq_ci_low", "seq_ci_high",
    "seq_decision", "chance_to_win", "power", "remaining_sample_size", "significant", "srm_p_value",
    "srm_flag",
)  # fmt: skip


def _sample(variant: dict[str, Any], field: str | None) -> tuple[int, float, float]:
    """(n, conversions or sum, rate or mean) of one report variant for a proportion ``field`` or,
    with None, the latency mean."""
    if field is not None:
        n, conversions = variant["exposed"], float(variant[field])
        return n, conversions, (conversions / n if n else 0.0)
    mean = variant["latency_mean_ms"] or 0.0
    return variant["latency_n"], mean * variant["latency_n"], mean


def result_rows(
    report: dict[str, Any], computed_at: datetime, definition_version: str
) -> list[tuple[Any, ...]]:
    """The ``experiment_results`` rows of one report (columns RESULT_COLUMNS): per metric, the
    control's row then one per treatment. Metrics still waiting for data give no rows."""
    through = datetime.fromtimestamp((report.get("data_through_ms") or 0) / 1000, tz=UTC)
    variants = {v["name"]: v for v in report["variants"]}
    head = (computed_at, through, report["tenant"], report["experiment_id"], definition_version)
    rows: list[tuple[Any, ...]] = []
    for metric, result in report["metrics"].items():
        if result.get("status") != "ok":
            continue
        field = PROPORTION_EVENTS.get(metric)
        srm = result.get("srm_p_value")
        tail = (1.0 if srm is None else float(srm), bool(result.get("srm_flag")))
        control = result["control"]
        rows.append(
            (*head, metric, result["metric"], "ok", control, True, *_sample(variants[control], field),
             *([None] * 8), "", None, None, None, False, *tail)
        )  # fmt: skip
        for row in result["results"]:
            remaining = row.get("remaining_sample_size")
            rows.append(
                (*head, metric, result["metric"], "ok", row["variant"], False,
                 *_sample(variants[row["variant"]], field),
                 *(_clean(row.get(k)) for k in ("absolute_effect", "relative_effect", "p_value",
                   "adjusted_p_value", "ci_low", "ci_high", "seq_ci_low", "seq_ci_high")),
                 str(row.get("seq_decision") or ""), _clean(row["chance_to_win"]), _clean(row["power"]),
                 None if remaining is None or not math.isfinite(remaining) else int(remaining),
                 bool(row["significant"]), *tail)
            )  # fmt: skip
    return rows


_HISTORY_SQL = """
SELECT toUnixTimestamp64Milli(computed_at), toUnixTimestamp64Milli(data_through), metric, variant,
       is_control, n, conversions, mean, absolute_effect, relative_effect, p_value, adjusted_p_value,
       ci_low, ci_high, seq_ci_low, seq_ci_high, seq_decision, chance_to_win, power,
       remaining_sample_size, significant, srm_p_value, srm_flag, definition_version
FROM experiment_results
WHERE tenant_id = {tenant:String} AND experiment_id = {experiment:String}
  AND ({metric:String} = '' OR metric = {metric:String})
  AND computed_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')
ORDER BY computed_at, metric, is_control DESC, variant
"""
_HISTORY_NAMES = (
    "computed_at_ms", "data_through_ms", "metric", "variant", "is_control", "n", "conversions", "mean",
    "absolute_effect", "relative_effect", "p_value", "adjusted_p_value", "ci_low", "ci_high",
    "seq_ci_low", "seq_ci_high", "seq_decision", "chance_to_win", "power", "remaining_sample_size",
    "significant", "srm_p_value", "srm_flag", "definition_version",
)  # fmt: skip


def results_history(
    warehouse: Warehouse, tenant: str, experiment_id: str, metric: str = "", since_ms: int = 0
) -> list[dict[str, Any]]:
    """Stored results of one experiment in computation order (effect over time), one dict per row."""
    rows = warehouse.rows(
        _HISTORY_SQL, {"tenant": tenant, "experiment": experiment_id, "metric": metric, "since": since_ms}
    )
    return [dict(zip(_HISTORY_NAMES, (_clean(v) for v in row), strict=True)) for row in rows]


_LATEST_SQL = """
SELECT toUnixTimestamp64Milli(max(computed_at))
FROM experiment_results
WHERE tenant_id = {tenant:String} AND experiment_id = {experiment:String}
"""


def latest_results(warehouse: Warehouse, tenant: str, experiment_id: str) -> list[dict[str, Any]]:
    """The rows of the newest stored computation of one experiment (empty before the first)."""
    newest = warehouse.rows(_LATEST_SQL, {"tenant": tenant, "experiment": experiment_id})
    if not newest or not newest[0][0]:
        return []
    stamp = int(newest[0][0])
    return [
        row
        for row in results_history(warehouse, tenant, experiment_id, since_ms=stamp)
        if row["computed_at_ms"] == stamp
    ]
