"""`make bench`: run the benchmarks on a local broker, print a table, write bench/results/latest.json."""

from __future__ import annotations

import json
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from bench import pipeline
from herald.logging import configure_logging
from infra.local_kafka import LocalKafka, free_port

RESULTS = Path(__file__).parent / "results"


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def main() -> None:
    configure_logging("console", "warning")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        broker = LocalKafka(Path(tmp) / "kafka", free_port())
        say("starting a local Kafka broker")
        bootstrap = broker.start()
        try:
            results = pipeline.run(bootstrap, Path(tmp), n, say)
        finally:
            broker.stop()
    results["machine"] = (
        f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}"
    )
    results["measured_at"] = datetime.now(UTC).isoformat()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    print(f"\n{'figure':<36}{'value':>16}")
    for key, value in results.items():
        shown = (
            f"{value:,.3f}"
            if isinstance(value, float) and value < 100
            else (f"{value:,.0f}" if isinstance(value, float) else str(value))
        )
        print(f"{key:<36}{shown:>16}")
    print(f"\nwritten to {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
