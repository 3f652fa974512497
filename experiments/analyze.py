"""Offline analysis of one experiment metric from a JSON payload of per-variant sufficient statistics.

The payload names the metric kind and, per variant (the first is the control), its counts::

    {"metric": "proportion", "alpha": 0.05, "sequential": false,
     "variants": [{"name": "control", "n": 1000, "conversions": 120}, ...]}

Mean metrics give ``sum`` and ``sum_squares`` instead of ``conversions``. Optional keys: ``weights``
(planned traffic split, default equal, used by the sample-ratio-mismatch check), ``mde`` (relative
minimum detectable effect for power, default 0.05), ``target_power`` (0.8), ``correction`` for several
treatments (``holm`` default, ``bh`` or ``none``) and ``planned_sample_size`` (10000 units in total,
the tuning of the sequential confidence sequence). A bad payload raises ``PayloadError`` listing
every problem as ``field.path: problem``.

>>> out = analyze({"metric": "proportion", "variants": [
...     {"name": "control", "n": 1000, "conversions": 100},
...     {"name": "short_subject", "n": 1000, "conversions": 130}]})
>>> row = out["results"][0]
>>> row["variant"], round(row["relative_effect"], 2), round(row["p_value"], 4), row["significant"]
('short_subject', 0.3, 0.0355, True)
>>> analyze({"metric": "proportion", "variants": [
...     {"name": "control", "n": 10, "conversions": 1}, {"name": "b", "n": 10, "conversions": 11}]})
Traceback (most recent call last):
...
experiments.analyze.PayloadError: variants[1].conversions: must be <= n (10)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from experiments.sequential import DEFAULT_PLANNED_SAMPLE_SIZE, sequential_compare
from experiments.stats import (
    Comparison,
    MeanStats,
    ProportionStats,
    SufficientStats,
    benjamini_hochberg,
    compare,
    holm_bonferroni,
    srm_p_value,
)
from herald.errors import ConfigError

__all__ = ["SRM_THRESHOLD", "PayloadError", "analyze"]

SRM_THRESHOLD = 0.001

_CORRECTIONS: dict[str, Callable[[Sequence[float]], list[float]]] = {
    "holm": holm_bonferroni,
    "bh": benjamini_hochberg,
    "none": list,
}


class PayloadError(ConfigError):
    """The analysis payload is malformed; ``problems`` holds one ``field.path: problem`` line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _Variant(_Strict):
    name: str = Field(min_length=1)
    n: int = Field(ge=0)


class ProportionVariant(_Variant):
    conversions: int = Field(ge=0)

    @field_validator("conversions")
    @classmethod
    def _at_most_n(cls, conversions: int, info: ValidationInfo) -> int:
        n = info.data.get("n")
        if n is not None and conversions > n:
            raise PydanticCustomError("conversions_above_n", "must be <= n ({n})", {"n": n})
        return conversions

    def stats(self) -> ProportionStats:
        return ProportionStats(self.n, self.conversions)


class MeanVariant(_Variant):
    sum: float
    sum_squares: float = Field(ge=0)

    @field_validator("sum_squares")
    @classmethod
    def _consistent(cls, sum_squares: float, info: ValidationInfo) -> float:
        n, total = info.data.get("n"), info.data.get("sum")
        if n is None or total is None:
            return sum_squares
        if n == 0 and (total != 0 or sum_squares != 0):
            raise PydanticCustomError("empty_not_zero", "sum and sum_squares must be 0 when n is 0")
        # Cauchy-Schwarz: n * sum_squares >= sum^2, up to rounding of the producer's float sums.
        if n > 0 and sum_squares * n < total * total * (1 - 1e-9):
            raise PydanticCustomError(
                "negative_variance", "must be >= sum**2 / n (variance cannot be negative)"
            )
        return sum_squares

    def stats(self) -> MeanStats:
        return MeanStats(self.n, self.sum, self.sum_squares)


class _Payload(_Strict):
    metric: Literal["proportion", "mean"]
    alpha: float = Field(0.05, gt=0, lt=1)
    sequential: bool = False
    weights: list[Annotated[float, Field(gt=0)]] | None = None
    mde: float = Field(0.05, gt=0)
    target_power: float = Field(0.8, gt=0, lt=1)
    correction: Literal["holm", "bh", "none"] = "holm"
    planned_sample_size: int = Field(DEFAULT_PLANNED_SAMPLE_SIZE, ge=1)


class ProportionPayload(_Payload):
    variants: list[ProportionVariant] = Field(min_length=2)


class MeanPayload(_Payload):
    variants: list[MeanVariant] = Field(min_length=2)


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "payload"


def _validated(payload: object) -> ProportionPayload | MeanPayload:
    if not isinstance(payload, dict):
        raise PayloadError([f"payload: must be a JSON object, got {type(payload).__name__}"])
    metric = payload.get("metric")
    model: type[ProportionPayload | MeanPayload]
    if metric == "proportion":
        model = ProportionPayload
    elif metric == "mean":
        model = MeanPayload
    else:
        raise PayloadError([f"metric: must be 'proportion' or 'mean', got {metric!r}"])
    try:
        parsed = model.model_validate(payload)
    except ValidationError as exc:
        raise PayloadError(
            [f"{_path(e['loc'])}: {e['msg'][:1].lower()}{e['msg'][1:]}" for e in exc.errors()]
        ) from None
    problems = []
    seen: dict[str, int] = {}
    for i, variant in enumerate(parsed.variants):
        if variant.name in seen:
            problems.append(
                f"variants[{i}].name: duplicate of variants[{seen[variant.name]}] ({variant.name!r})"
            )
        seen.setdefault(variant.name, i)
    if parsed.weights is not None and len(parsed.weights) != len(parsed.variants):
        problems.append(
            f"weights: must give one weight per variant ({len(parsed.variants)}), got {len(parsed.weights)}"
        )
    if problems:
        raise PayloadError(problems)
    return parsed


def _result_row(
    name: str,
    control: SufficientStats,
    treatment: SufficientStats,
    comparison: Comparison,
    adjusted: float,
    spec: _Payload,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "variant": name,
        "absolute_effect": comparison.absolute_effect,
        "relative_effect": comparison.relative_effect,
        "p_value": comparison.p_value,
        "adjusted_p_value": adjusted,
        "ci_low": comparison.ci_low,
        "ci_high": comparison.ci_high,
        "chance_to_win": comparison.chance_to_win,
        "significant": adjusted < spec.alpha,
        "power": comparison.power,
        "remaining_sample_size": comparison.remaining_sample_size,
    }
    if spec.sequential:
        seq = sequential_compare(
            control, treatment, alpha=spec.alpha, planned_sample_size=spec.planned_sample_size
        )
        row["seq_ci_low"], row["seq_ci_high"] = seq.relative_ci or (None, None)
        row["seq_decision"] = seq.decision
    return row


def analyze(payload: dict[str, Any]) -> dict[str, Any]:
    """Compare every variant with the first (the control); JSON-ready, floats finite or None.

    ``significant`` uses the adjusted p-value; the CIs are per comparison (not adjusted).
    Raises PayloadError (a ConfigError) naming each bad field.
    """
    spec = _validated(payload)
    stats: list[SufficientStats] = [variant.stats() for variant in spec.variants]
    control, treatments = stats[0], stats[1:]
    comparisons = [
        compare(control, treatment, alpha=spec.alpha, mde=spec.mde, target_power=spec.target_power)
        for treatment in treatments
    ]
    adjusted = _CORRECTIONS[spec.correction]([c.p_value for c in comparisons])
    srm = srm_p_value([variant.n for variant in spec.variants], spec.weights)
    return {
        "metric": spec.metric,
        "alpha": spec.alpha,
        "correction": spec.correction,
        "control": spec.variants[0].name,
        "srm_p_value": srm,
        "srm_flag": srm < SRM_THRESHOLD,
        "results": [
            _result_row(variant.name, control, treatment, comparison, adj, spec)
            for variant, treatment, comparison, adj in zip(
                spec.variants[1:], treatments, comparisons, adjusted, strict=True
            )
        ],
    }
