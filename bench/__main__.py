"""`make bench`: run the benchmarks on a local broker, print a table, write bench/results/latest.json.

``python -m bench [N] [REQUESTS]``: N lifecycle events for the ingest figures (default 200,000),
REQUESTS dispatch requests for the full-pipeline figure (default 5,000). Stages, in order (6.5
minutes on a 2-core machine): ingest (bench/pipeline.py), the whole worker and the live
latencies (bench/full.py), with the monitor memory children (bench/memory.py) run while the live
stage waits for its alerts. Progress goes to stderr; the table, each figure beside its baseline from
the same run, to stdout.
"""

from __future__ import annotations

import json
import math
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import full, memory, pipeline
from herald.logging import configure_logging
from infra.local_kafka import LocalKafka, free_port
from streams.monitor import CHUNK_BYTES

RESULTS = Path(__file__).parent / "results"
SERIES = (1_000, 10_000, 100_000)


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def number(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = (
            f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}" if abs(value) < 1 else f"{value:,.1f}"
        )
    else:
        text = f"{value:,}" if isinstance(value, int) else str(value)
    return f"{text}{unit}"


def ratio(a: Any, b: Any) -> str:
    return f"{a / b:.3f}" if isinstance(a, int | float) and isinstance(b, int | float) and b else ""


def quantile_text(r: dict[str, Any], name: str) -> str:
    values = [r.get(f"{p}_{name}") for p in ("p50", "p95", "p99")]
    return " / ".join(number(v) for v in values) + " s"


def table(r: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, value, baseline from the same run, ratio) rows."""
    decode, consume = r.get("raw_decode_eps"), r.get("raw_consume_eps")
    rows = [
        ("raw_consume_eps (the limit)", number(consume, "/s"), "", ""),
        (
            "raw_decode_eps",
            number(decode, "/s"),
            f"raw_consume {number(consume, '/s')}",
            ratio(decode, consume),
        ),
    ]
    for key in ("ingest_apply_eps", "ingest_warehouse_eps", "pipeline_eps"):
        rows.append(
            (key, number(r.get(key), "/s"), f"raw_decode {number(decode, '/s')}", ratio(r.get(key), decode))
        )
    decode_us = 1e6 / decode if decode else None
    cpu = r.get("pipeline_cpu_us_per_event")
    rows.append(("pipeline_cpu_us_per_event", number(cpu, " µs"), f"decode {number(decode_us, ' µs')}/event",
                 ratio(cpu, decode_us)))  # fmt: skip
    decide = r.get("dispatch_decide_us_per_request")
    decide_rate = 1e6 / decide if decide else None
    rows.append(("pipeline_requests_per_s", number(r.get("pipeline_requests_per_s"), "/s"),
                 f"Dispatcher.decide alone {number(decide_rate, '/s')}",
                 ratio(r.get("pipeline_requests_per_s"), decide_rate)))  # fmt: skip
    rows.append(("p50/p95/p99_event_to_warehouse", quantile_text(r, "event_to_warehouse_s"),
                 f"at {number(r.get('offered_rate_eps'), '/s')} (70% of ingest)", ""))  # fmt: skip
    rows.append(("p50/p95/p99_event_to_alert", quantile_text(r, "event_to_alert_s"),
                 f"{r.get('alert_samples')} drops ({r.get('alert_samples_missed')} missed); judged per "
                 f"closed minute + {full.LATENESS_S:g} s lateness", ""))  # fmt: skip
    rows.append(("p50/p95/p99_request_to_decision", quantile_text(r, "request_to_decision_s"),
                 f"{r.get('decision_samples')} at {number(r.get('decision_offered_per_s'), '/s')} "
                 "(70% of pipeline)", ""))  # fmt: skip
    for n in SERIES:
        name = f"{memory.label(n)}_series"
        after, before = r.get(f"rss_mib_{name}"), r.get(f"rss_baseline_mib_{name}")
        per = r.get(f"monitor_kib_per_series_{name}")
        rows.append((f"rss_mib_{name}", f"{number(after, ' MiB')} ({number(per, ' KiB')}/series)",
                     f"child before the monitor {number(before, ' MiB')}", ratio(after, before)))  # fmt: skip
    for n in SERIES:
        name = f"{memory.label(n)}_series"
        mature = r.get(f"checkpoint_mature_mib_{name}", r.get(f"checkpoint_mature_mib_{name}_est"))
        est = "" if f"checkpoint_mature_mib_{name}" in r else " (est.)"
        chunks = math.ceil(mature * 2**20 / CHUNK_BYTES) if isinstance(mature, float) else None
        fresh = number(r.get(f"checkpoint_mib_{name}"))
        rows.append((f"checkpoint_mib_{name} fresh/mature", f"{fresh} / {number(mature)}{est} MiB",
                     f"{chunks} chunk(s) of {CHUNK_BYTES // 2**20} MiB when mature", ""))  # fmt: skip
    for n in SERIES:
        name = f"{memory.label(n)}_series"
        minute, dump = r.get(f"monitor_minute_cpu_s_{name}"), r.get(f"checkpoint_cpu_s_{name}")
        both = minute + dump if isinstance(minute, float) and isinstance(dump, float) else None
        rows.append((f"monitor CPU s per minute, {name}", f"{number(minute)} + {number(dump)} s",
                     "judge + checkpoint, vs the minute's 60 s", ratio(both, 60.0)))  # fmt: skip
    one, two = r.get("scale_1_worker_eps"), r.get("scale_2_workers_eps")
    rows.append(("scale_2_workers_eps", number(two, "/s"), f"1 worker {number(one, '/s')}", ratio(two, one)))
    return rows


def main() -> None:
    configure_logging("console", "warning")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    n_requests = int(sys.argv[2]) if len(sys.argv) > 2 else 5_000
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="herald-bench-") as tmp:
        broker = LocalKafka(Path(tmp) / "kafka", free_port())
        say("starting a local Kafka broker")
        bootstrap = broker.start()
        try:
            results = pipeline.run(bootstrap, Path(tmp), n, say)
            results.update(full.run(Path(tmp), bootstrap, n_requests, say, lambda: memory.run(say, SERIES)))
        finally:
            broker.stop()
    results["ratio_pipeline_to_raw_decode"] = results["pipeline_eps"] / results["raw_decode_eps"]
    results["machine"] = (
        f"{platform.machine()} {platform.python_implementation()} {platform.python_version()}"
    )
    results["measured_at"] = datetime.now(UTC).isoformat()
    results["bench_seconds"] = time.perf_counter() - started
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(results, indent=2))
    rows = table(results)
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print(f"\n{'figure':<{widths[0]}}  {'value':>{widths[1]}}  {'baseline (same run)':<{widths[2]}}  ratio")
    for figure, value, baseline, r in rows:
        print(f"{figure:<{widths[0]}}  {value:>{widths[1]}}  {baseline:<{widths[2]}}  {r}")
    seconds = results["bench_seconds"]
    print(f"\nall {len(results)} figures in {RESULTS / 'latest.json'}; wall time {seconds:.0f} s")


if __name__ == "__main__":
    main()
