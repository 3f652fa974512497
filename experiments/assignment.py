"""Deterministic variant assignment: a unit's variant is a pure function of (salt, unit id, weights).

The hash is specified so any service, in any language, can reproduce it:

    position = (u64_le(blake2b(digest_size=8, person=PURPOSE,
                               data=u32_le(len(salt)) || salt || unit_id)) >> 11) / 2**53

with UTF-8 strings and ``PURPOSE`` one of ``herald.variant``, ``herald.exposure``, ``herald.layer``.
The purpose keeps the three decisions of one salt independent of each other (an exposure check must
not favour low positions, which would favour the first variant); the length prefix makes the
(salt, unit id) split unambiguous. A position in [0, 1) picks the variant whose cumulative weight range
contains it, as GrowthBook's bucket ranges do. Python's built-in ``hash()`` is salted per process and
is never used.

>>> assign_variant("exp-subject-line", "user-42", [("control", 0.5), ("short", 0.5)])
'control'
>>> assign_variants("exp-subject-line", ["user-3", "user-4"], [("control", 1), ("short", 1)])
['control', 'short']
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from hashlib import blake2b
from typing import Any

import numpy as np
import numpy.typing as npt

from herald.errors import ConfigError

__all__ = [
    "assign_layer",
    "assign_variant",
    "assign_variants",
    "exposure_mask",
    "in_exposure",
    "unit_positions",
]

Variants = Sequence[tuple[str, float]]

_VARIANT = b"herald.variant"
_EXPOSURE = b"herald.exposure"
_LAYER = b"herald.layer"
_INV_2_53 = 2.0**-53


@dataclass(frozen=True, slots=True)
class _Ranges:
    """Variant names and the right edge of each one's range in [0, 1) (or [0, total] for layers)."""

    names: tuple[str, ...]
    edges: tuple[float, ...]


@lru_cache(maxsize=4096)
def _base_hasher(purpose: bytes, salt: str) -> blake2b:
    if not isinstance(salt, str) or not salt:
        raise ConfigError(f"salt: must be a non-empty string, got {salt!r}")
    encoded = salt.encode()
    return blake2b(len(encoded).to_bytes(4, "little") + encoded, digest_size=8, person=purpose)


def _position(purpose: bytes, salt: str, unit_id: str) -> float:
    hasher = _base_hasher(purpose, salt).copy()
    hasher.update(unit_id.encode())
    return (int.from_bytes(hasher.digest(), "little") >> 11) * _INV_2_53


def unit_positions(salt: str, unit_ids: Iterable[str]) -> npt.NDArray[np.float64]:
    """Variant hash positions in [0, 1) of many units at once, bit-identical to the single-unit path.

    >>> unit_positions("exp-1", ["a", "b"]).round(4).tolist()
    [0.3915, 0.9339]
    """
    return _positions(_VARIANT, salt, unit_ids)


def _positions(purpose: bytes, salt: str, unit_ids: Iterable[str]) -> npt.NDArray[np.float64]:
    copy = _base_hasher(purpose, salt).copy
    digests: list[bytes] = []
    append = digests.append
    # The loop is the floor of the batch path: one C hash call per unit; everything else is vectorised.
    for unit_id in unit_ids:
        hasher = copy()
        hasher.update(unit_id.encode())
        append(hasher.digest())
    words = np.frombuffer(b"".join(digests), dtype="<u8")
    # (h >> 11) < 2**53 is exact in float64 and the scale is a power of two, so this equals _position.
    return (words >> np.uint64(11)).astype(np.float64) * _INV_2_53


def _validated(field: str, items: Sequence[tuple[str, float]]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    names: list[str] = []
    weights: list[float] = []
    for i, item in enumerate(items):
        try:
            name, raw = item
            weight = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{field}[{i}]: must be a (name, weight) pair, got {item!r}") from None
        if not math.isfinite(weight) or weight < 0:
            raise ConfigError(f"{field}[{i}] ({name!r}): weight must be a finite number >= 0, got {raw!r}")
        if name in names:
            raise ConfigError(f"{field}[{i}]: duplicate name {name!r}")
        names.append(name)
        weights.append(weight)
    return tuple(names), tuple(weights)


def _edges(weights: Sequence[float], total: float | None) -> tuple[float, ...]:
    """Right edges of the cumulative ranges; ``total`` normalises the weights, None keeps fractions."""
    edges: list[float] = []
    running = 0.0
    for weight in weights:
        running += weight
        edges.append(running / total if total else running)
    if total is not None:
        # Normalised weights: pin every edge from the last positive weight on to exactly 1.0 so
        # rounding can never leave a position past the end, nor give a trailing zero weight a range.
        last = max(i for i, w in enumerate(weights) if w > 0)
        edges[last:] = [1.0] * (len(edges) - last)
    return tuple(edges)


@lru_cache(maxsize=4096)
def _variant_ranges(variants: tuple[tuple[str, float], ...]) -> _Ranges:
    names, weights = _validated("variants", variants)
    if not names:
        raise ConfigError("variants: must name at least one variant")
    total = math.fsum(weights)
    if total <= 0:
        raise ConfigError("variants: weights must not all be zero")
    return _Ranges(names, _edges(weights, total))


@lru_cache(maxsize=4096)
def _layer_ranges(buckets: tuple[tuple[str, float], ...]) -> _Ranges:
    names, fractions = _validated("buckets", buckets)
    total = math.fsum(fractions)
    if total > 1.0 + 1e-9:
        raise ConfigError(f"buckets: fractions must sum to <= 1, got {total!r}")
    # A layer split completely (0.1 * 10) is normalised so rounding leaves no sliver unassigned.
    return _Ranges(names, _edges(fractions, total if total >= 1.0 - 1e-9 else None))


def _ranges(build: Any, items: Sequence[tuple[str, float]]) -> _Ranges:
    try:
        ranges: _Ranges = build(tuple(items))
    except TypeError:  # unhashable items (lists): validate without the cache
        ranges = build.__wrapped__(tuple(items))
    return ranges


def assign_variant(salt: str, unit_id: str, variants: Variants) -> str:
    """The variant of ``unit_id`` in the experiment ``salt``; weights need not sum to 1.

    Raises ConfigError when the weights are empty, negative, not finite or all zero.

    >>> assign_variant("exp-1", "user-1", [("control", 2), ("treatment", 1)])
    'control'
    >>> assign_variant("exp-1", "user-1", [("control", 0), ("treatment", 1)])
    'treatment'
    """
    ranges = _ranges(_variant_ranges, variants)
    return ranges.names[bisect_right(ranges.edges, _position(_VARIANT, salt, unit_id))]


def assign_variants(salt: str, unit_ids: Iterable[str], variants: Variants) -> list[str]:
    """``assign_variant`` for many units at once (the throughput path); same answers, same order.

    >>> assign_variants("exp-1", ["user-1", "user-2"], [("control", 2), ("treatment", 1)])
    ['control', 'control']
    """
    ranges = _ranges(_variant_ranges, variants)
    indices = np.searchsorted(np.asarray(ranges.edges), unit_positions(salt, unit_ids), side="right")
    names = ranges.names
    return [names[i] for i in indices.tolist()]


def _check_fraction(traffic_fraction: float) -> float:
    fraction = float(traffic_fraction)
    if not 0.0 <= fraction <= 1.0:  # also rejects NaN
        raise ConfigError(f"traffic_fraction: must be between 0 and 1, got {traffic_fraction!r}")
    return fraction


def in_exposure(salt: str, unit_id: str, traffic_fraction: float) -> bool:
    """Whether ``unit_id`` is in the exposed ``traffic_fraction`` of experiment ``salt``.

    Independent of the unit's variant; raising the fraction only adds units (nobody exposed leaves),
    so coverage can be ramped up without reshuffling. ``1 - in_exposure`` is a stable holdout.

    >>> in_exposure("exp-1", "user-1", 1.0), in_exposure("exp-1", "user-1", 0.0)
    (True, False)
    """
    return _position(_EXPOSURE, salt, unit_id) < _check_fraction(traffic_fraction)


def exposure_mask(salt: str, unit_ids: Iterable[str], traffic_fraction: float) -> npt.NDArray[np.bool_]:
    """``in_exposure`` for many units at once.

    >>> exposure_mask("exp-1", ["user-1", "user-2"], 1.0).tolist()
    [True, True]
    """
    return _positions(_EXPOSURE, salt, unit_ids) < _check_fraction(traffic_fraction)


def assign_layer(layer_salt: str, unit_id: str, buckets: Variants) -> str | None:
    """The bucket of ``unit_id`` in a layer of mutually exclusive experiments, or None.

    Each bucket owns the given fraction of the layer's traffic (fractions sum to <= 1); a unit lands
    in at most one bucket, and in none for the unowned remainder. Inside a bucket the experiment
    assigns variants with its own salt, which is independent of the layer's.

    >>> layer = [("exp-a", 0.3), ("exp-b", 0.3)]
    >>> assign_layer("layer-email", "user-1", layer), assign_layer("layer-email", "user-3", layer)
    ('exp-a', None)
    """
    ranges = _ranges(_layer_ranges, buckets)
    index = bisect_right(ranges.edges, _position(_LAYER, layer_salt, unit_id))
    return ranges.names[index] if index < len(ranges.names) else None
