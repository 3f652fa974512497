"""Memory of the alert monitor's state against the number of active series, and its checkpoint size.

Each count runs in a child process of its own (``python -m bench.memory N``), so the figures are not
mixed with the parent's heap: the child reads its RSS (baseline), builds an
:class:`analytics.monitor.AlertMonitor` and feeds it two closed live minutes in which every one of the N
series (tenant x channel x provider, the simulator's channel/provider mix) has every metric, so every
detector exists (five per SMS series, six per EMAIL or PUSH series); then it reads its RSS again and
writes the checkpoint as the monitor service does (``streams.monitor.dump_state``: pickle + zlib), which
goes to Kafka as one message capped at 64 MiB.

A detector's knots start unvisited (NaN) and fill over a week of traffic, which is when the checkpoint
is largest: with ``--mature`` the child also fills every knot with plausible values (level x a daily
shape x noise, weights at their cap) and writes the checkpoint again. Detector memory does not change
as knots fill (the arrays are allocated whole), so RSS needs no such step.

Figures per N: RSS before and after (MiB), the peak while writing the checkpoint, CPU seconds to judge
one minute (the second, when every detector exists), checkpoint MiB and CPU seconds to write it (CPU,
not wall time: ``python -m bench`` runs these children beside the live stage).
"""

from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

Say = Callable[[str], None]

CHANNELS = (
    ("EMAIL", "smtp-primary"),
    ("EMAIL", "smtp-secondary"),
    ("SMS", "sms-primary"),
    ("SMS", "sms-secondary"),
    ("PUSH", "fcm"),
)
START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
MINUTE_MS = 60_000


def rss_mib() -> float:
    """This process's resident set size now (Linux /proc; elsewhere the peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_mib()


def peak_mib() -> float:
    """Peak RSS of this program: VmHWM (getrusage's ru_maxrss survives exec on Linux, so it would
    report the parent's size at fork when that was larger)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def child(n: int, mature: bool) -> dict[str, Any]:
    from analytics.alerting import SeriesKey
    from analytics.monitor import AlertMonitor, MinuteCounts, MonitorConfig
    from streams.monitor import dump_state

    gc.collect()
    before = rss_mib()
    monitor = AlertMonitor(MonitorConfig(grace_minutes=30), live_from_ms=START_MS)  # live: alert state too
    keys = [SeriesKey(f"tenant-{i // len(CHANNELS):06d}", *CHANNELS[i % len(CHANNELS)]) for i in range(n)]
    minute_s = 0.0
    for m in range(2):
        rows = {
            key: MinuteCounts(40 + (i + m) % 9, 36, 2, 1, 9, 2400.0 + (i % 50), 36)
            for i, key in enumerate(keys)
        }
        t0 = time.process_time()
        monitor.observe(START_MS + m * MINUTE_MS, rows)
        minute_s = time.process_time() - t0
        del rows
    del keys
    gc.collect()
    after = rss_mib()
    t0 = time.process_time()
    blob = dump_state(monitor)
    out: dict[str, Any] = {
        "series": len(monitor.series),
        "detectors": monitor.detector_count,
        "rss_before_mib": before,
        "rss_after_mib": after,
        "minute_s": minute_s,
        "checkpoint_mib": len(blob) / 2**20,
        "checkpoint_s": time.process_time() - t0,
    }
    del blob
    out["rss_peak_mib"] = peak_mib()  # the checkpoint's pickle and zlib buffers on top of the state
    if mature:
        fill_knots(monitor)
        t0 = time.process_time()
        blob = dump_state(monitor)
        out.update(mature_checkpoint_mib=len(blob) / 2**20, mature_checkpoint_s=time.process_time() - t0)
        del blob
    return out


def fill_knots(monitor: Any) -> None:
    """Every knot visited: a per-detector level x (1 + a daily shape + 3 % noise), weights at their cap
    (what a week of traffic leaves behind)."""
    from array import array

    import numpy as np

    detectors = [d for s in monitor.series.values() for d in s.detectors.values()]
    rng = np.random.default_rng(1)
    levels = rng.lognormal(0.0, 1.5, len(detectors))
    hours = np.arange(24 + 168)
    shape = 0.2 * np.sin(2 * np.pi * (hours % 24) / 24)
    values = levels[:, None] * (1 + shape + rng.normal(0.0, 0.03, (len(detectors), len(hours))))
    values = values.astype(np.float32)
    for detector, row in zip(detectors, values, strict=True):
        k = len(detector._knots)
        detector._knots = array("f", row[-k:].tobytes())
        detector._weights = array("H", [16 * 240] * min(k, 24) + [16 * 120] * (k - 24))


def measure(n: int, mature: bool, timeout: float = 600) -> dict[str, Any]:
    """Run the child for ``n`` series; its figures."""
    cmd = [sys.executable, "-m", "bench.memory", str(n), *(["--mature"] if mature else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench.memory {n} failed: {proc.stderr[-2000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def label(n: int) -> str:
    return f"{n // 1000}k" if n >= 1000 else str(n)


def run(
    say: Say, counts: tuple[int, ...] = (1_000, 10_000, 100_000), mature_up_to: int = 10_000
) -> dict[str, Any]:
    """The flat figures for ``counts`` series; the mature checkpoint measured up to ``mature_up_to``
    series and, beyond, scaled from the largest measured (``_est``)."""
    results: dict[str, Any] = {}
    per_series_mature: float | None = None
    for n in counts:
        t0 = time.perf_counter()
        r = measure(n, mature=n <= mature_up_to)
        name = f"{label(n)}_series"
        results[f"rss_mib_{name}"] = r["rss_after_mib"]
        results[f"rss_baseline_mib_{name}"] = r["rss_before_mib"]
        results[f"rss_peak_mib_{name}"] = r["rss_peak_mib"]
        results[f"monitor_kib_per_series_{name}"] = (r["rss_after_mib"] - r["rss_before_mib"]) * 1024 / n
        results[f"monitor_detectors_{name}"] = r["detectors"]
        results[f"monitor_minute_cpu_s_{name}"] = r["minute_s"]
        results[f"checkpoint_mib_{name}"] = r["checkpoint_mib"]
        results[f"checkpoint_cpu_s_{name}"] = r["checkpoint_s"]
        if "mature_checkpoint_mib" in r:
            results[f"checkpoint_mature_mib_{name}"] = r["mature_checkpoint_mib"]
            results[f"checkpoint_mature_cpu_s_{name}"] = r["mature_checkpoint_s"]
            per_series_mature = r["mature_checkpoint_mib"] / n
        elif per_series_mature is not None:
            results[f"checkpoint_mature_mib_{name}_est"] = per_series_mature * n
        say(
            f"  {n:>7} series: RSS {r['rss_before_mib']:.0f} -> {r['rss_after_mib']:.0f} MiB "
            f"(peak {r['rss_peak_mib']:.0f}), a minute judged in {r['minute_s']:.2f} CPU s, checkpoint "
            f"{r['checkpoint_mib']:.1f} MiB ({r['checkpoint_s']:.1f} CPU s)"
            + (f", mature {r['mature_checkpoint_mib']:.1f} MiB" if "mature_checkpoint_mib" in r else "")
            + f"  [{time.perf_counter() - t0:.0f} s]"
        )
    return results


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]), "--mature" in sys.argv[2:])))
