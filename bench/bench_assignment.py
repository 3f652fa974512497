"""Throughput of variant assignment, single-unit and batch, against raw hashlib in the same run.

    python bench/bench_assignment.py [--units 1000000] [--repeats 3]

Prints assignments per second and the ratio to a baseline that only hashes each unit id with
blake2b in a Python loop (the cost floor of any per-unit hash in pure Python). The batch path must
reach 1M assignments/s; ratios, not absolute numbers, are what compare across machines.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
import time
import uuid
from collections.abc import Callable

from experiments.assignment import assign_variant, assign_variants, exposure_mask, in_exposure

VARIANTS = [("control", 0.5), ("short_subject", 0.3), ("emoji", 0.2)]
TARGET_PER_SECOND = 1_000_000


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def _best_rates(cases: list[tuple[str, Callable[[], object], int]], repeats: int) -> dict[str, float]:
    """Best of ``repeats`` per case, cases interleaved so load drift on a shared machine hits all alike."""
    for _, run, _ in cases:
        run()  # warm-up: caches, allocator arenas
    best = {name: math.inf for name, _, _ in cases}
    for _ in range(repeats):
        for name, run, _ in cases:
            best[name] = min(best[name], _timed(run))
    return {name: units / best[name] for name, _, units in cases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--single-units", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    rng = random.Random(0)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(args.units)]
    few = ids[: args.single_units]

    def raw_hashlib() -> None:
        blake2b = hashlib.blake2b
        for unit_id in ids:
            blake2b(unit_id.encode(), digest_size=8).digest()

    def single() -> None:
        for unit_id in few:
            assign_variant("exp-bench", unit_id, VARIANTS)

    def single_exposure() -> None:
        for unit_id in few:
            in_exposure("exp-bench", unit_id, 0.5)

    cases: list[tuple[str, Callable[[], object], int]] = [
        ("baseline: raw hashlib blake2b loop", raw_hashlib, len(ids)),
        ("assign_variant (single)", single, len(few)),
        ("in_exposure (single)", single_exposure, len(few)),
        ("assign_variants (batch)", lambda: assign_variants("exp-bench", ids, VARIANTS), len(ids)),
        ("exposure_mask (batch)", lambda: exposure_mask("exp-bench", ids, 0.5), len(ids)),
    ]
    rates = _best_rates(cases, args.repeats)
    baseline = rates[cases[0][0]]
    print(f"{'case':40} {'per second':>14} {'vs baseline':>12}")
    for name, rate in rates.items():
        print(f"{name:40} {rate:14,.0f} {rate / baseline:11.2f}x")
    batch = rates["assign_variants (batch)"]
    verdict = "meets" if batch >= TARGET_PER_SECOND else "MISSES"
    print(f"batch path {verdict} the {TARGET_PER_SECOND:,}/s target ({batch / TARGET_PER_SECOND:.2f}x)")


if __name__ == "__main__":
    main()
