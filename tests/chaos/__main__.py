"""`make chaos`: ``python -m tests.chaos [--seed N] [--quick] [--only NAME,...] [--keep]``.

Starts a local broker, runs the scenarios one after the other, each on its own Herald installation,
prints a table per scenario and a summary line to stdout (progress goes to stderr), writes the same as
JSON to bench/results/chaos-latest.json, and exits 1 when any scenario failed. Installations and worker
logs stay under the printed directory when something failed (or with --keep).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from herald.logging import configure_logging
from infra.local_kafka import LocalKafka, free_port
from tests.chaos import scenario
from tests.chaos.install import kafka_logger
from tests.chaos.report import LEGEND, scenario_text, summary_line, totals
from tests.chaos.scenarios import SCENARIOS

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[1])
    parser.add_argument("--seed", type=int, default=None, help="seed of every plan (default: drawn, printed)")
    parser.add_argument("--quick", action="store_true", help="fewer kills and pauses, shorter streams")
    parser.add_argument("--only", default="", help=f"comma-separated scenarios of: {', '.join(SCENARIOS)}")
    parser.add_argument("--keep", action="store_true", help="keep installations and logs even on success")
    args = parser.parse_args(argv)
    unknown = [s for s in filter(None, args.only.split(",")) if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    return args


def main(argv: list[str]) -> int:
    args = arguments(argv)
    configure_logging("console", "error")  # the replay logs through structlog: stdout is the table's
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    names = [s for s in filter(None, args.only.split(","))] or list(SCENARIOS)
    root = Path(tempfile.mkdtemp(prefix="herald-chaos-"))
    began = time.monotonic()
    say(f"chaos seed {seed}{' (quick)' if args.quick else ''}: {', '.join(names)}; under {root}")
    broker = LocalKafka(root / "kafka", free_port())
    say("starting a local Kafka broker")
    broker.start()
    ctx = scenario.Context(root, broker, seed, args.quick, kafka_logger(root / "kafka-clients.log"), say)
    outcomes = []
    try:
        for name in names:
            again = f"--seed {seed} --only {name}{' --quick' if args.quick else ''}"
            say(f"{name}: starting (run it alone with {again})")
            outcome = scenario.run(ctx, name, SCENARIOS[name])
            outcomes.append(outcome)
            say(f"{name}: {'PASS' if outcome.passed else 'FAIL'} in {outcome.elapsed_s:.0f} s")
    finally:
        broker.stop()
    elapsed = time.monotonic() - began
    for outcome in outcomes:
        print("\n".join(scenario_text(outcome)) + "\n")
    line = summary_line(outcomes, seed, elapsed)
    print(LEGEND)
    print(line)
    passed = all(o.passed for o in outcomes)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {
        "summary": line,
        "passed": passed,
        "seed": seed,
        "quick": args.quick,
        "scenarios": [o.as_dict() for o in outcomes],
        "totals": dict(totals(outcomes)),
        "elapsed_s": round(elapsed, 1),
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}",
        "root": str(root),
    }
    (RESULTS / "chaos-latest.json").write_text(json.dumps(result, indent=2, default=str))
    if passed and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    else:
        say(f"installations and worker logs kept under {root}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
