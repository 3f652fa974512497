"""The pure core of experimentation: assignment, statistics, sequential tests and offline analysis.

Nothing here touches Kafka, the warehouse, HTTP, the environment or the clock: functions take values
(salts, unit ids, sufficient statistics) and return values, so agents, the API and the CLI share them.

>>> from experiments import ProportionStats, assign_variant, compare
>>> assign_variant("exp-1", "user-1", [("control", 1), ("treatment", 1)]) in {"control", "treatment"}
True
>>> compare(ProportionStats(0, 0), ProportionStats(0, 0)).p_value
1.0
"""

from experiments.analyze import PayloadError, analyze
from experiments.assignment import (
    assign_layer,
    assign_variant,
    assign_variants,
    exposure_mask,
    in_exposure,
    unit_positions,
)
from experiments.sequential import SequentialResult, boundary_multiplier, sequential_compare
from experiments.stats import (
    Comparison,
    MeanStats,
    ProportionStats,
    SufficientStats,
    benjamini_hochberg,
    chance_to_win,
    compare,
    holm_bonferroni,
    power,
    relative_effect,
    remaining_sample_size,
    srm_p_value,
    standard_errors,
)

__all__ = [
    "Comparison",
    "MeanStats",
    "PayloadError",
    "ProportionStats",
    "SequentialResult",
    "SufficientStats",
    "analyze",
    "assign_layer",
    "assign_variant",
    "assign_variants",
    "benjamini_hochberg",
    "boundary_multiplier",
    "chance_to_win",
    "compare",
    "exposure_mask",
    "holm_bonferroni",
    "in_exposure",
    "power",
    "relative_effect",
    "remaining_sample_size",
    "sequential_compare",
    "srm_p_value",
    "standard_errors",
    "unit_positions",
]
