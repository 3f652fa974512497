"""The suite's verdict on a scenario and the text it prints: a table per scenario and a summary line."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from tests.chaos.install import MECHANISMS
from tests.chaos.scenario import Outcome

TOTALS = ("kills", "pauses", "owner_restarts", "broker_restarts", "poison")
LEGEND = (
    "lost / dup: events by event id (sent and missing, rows beyond one per id); each rollup by cell (key x "
    "exact column) below / above the recount of its view over events; chaos_slow by events per tenant"
)
SKETCH_NOTE = (
    "   equal*: every key, count, sum and sketch size as live; only t-digest quantile estimates moved "
    "(at most by the % shown), as another merge order moves them"
)
KILL_KINDS = {
    "sigkill": "SIGKILL at random",
    "mid_insert": "SIGKILL mid-insert",
    "before_insert": "before_insert",
    "after_run": "after_run",
    "before_marker": "before_marker",
}


def verdict(outcome: Outcome) -> list[str]:
    """Every way the scenario's numbers fall short: a row lost or counted twice in any table, a rollup
    off its recount, a replay that does not reproduce a table, a bad message not dead-lettered exactly
    once or landed as a row, a batch without its marker, fewer faults than promised."""
    m = outcome.measurement
    if m is None:
        return ["no measurement"]
    out = []
    for t in m.tables:
        if t.lost:
            out.append(f"{t.table}: {t.lost} lost")
        if t.duplicated:
            out.append(f"{t.table}: {t.duplicated} duplicated")
        if t.recount not in ("-", "equal"):
            out.append(f"{t.table}: {t.recount} from the recount")
        if t.replay == "differs":
            out.append(f"{t.table}: the replay's fingerprint differs")
    d = m.dead_letters
    for name, n in (("missing", d.missing), ("dead-lettered twice", d.twice), ("unexpected", d.unexpected)):
        if n:
            out.append(f"dead letters: {n} {name}")
    if m.unexpected_rows:
        shown = ", ".join(m.unexpected_ids[:5])
        out.append(f"events: {m.unexpected_rows} rows of messages sent as poison ({shown})")
    if m.unmarked:
        out.append(f"ingest_batches: {m.unmarked} rows past their partition's last marker")
    for error in outcome.produced.get("errors", []):
        out.append(f"traffic: {error}")
    for name, least in outcome.minimums.items():
        if outcome.counts[name] < least:
            out.append(f"{name}: {outcome.counts[name]} of the {least} planned")
    return out


def number(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else str(value)


def faults_line(outcome: Outcome) -> str:
    c = outcome.counts
    parts = []
    if c["kills"]:
        kinds = ", ".join(f"{c[f'kills.{k}']} {label}" for k, label in KILL_KINDS.items() if c[f"kills.{k}"])
        parts.append(f"{c['kills']} kills ({kinds})")
    if c["pauses"]:
        parts.append(f"{c['pauses']} SIGSTOP past the session ({c['pauses.fault_point']} at a fault point)")
    if c["owner_restarts"]:
        parts.append(f"{c['owner_restarts']} owner restarts")
    if c["broker_restarts"]:
        parts.append(f"{c['broker_restarts']} broker restarts")
    if c["poison"]:
        parts.append(f"{c['poison']} poison messages")
    return "; ".join(parts) or "no faults"


def scenario_text(outcome: Outcome) -> list[str]:
    verdict_word = "PASS" if outcome.passed else "FAIL"
    lines = [
        f"== {outcome.name}  seed {outcome.seed}  {verdict_word}  {outcome.elapsed_s:.0f} s  "
        f"(caught up {outcome.caught_up_s:.0f} s after the traffic stopped)",
        f"   faults: {faults_line(outcome)}",
    ]
    p = outcome.produced
    if p:
        kinds = ", ".join(f"{k} {n}" for k, n in p.get("invalid_by_kind", {}).items())
        lines.append(f"   produced: {number(p['valid'])} valid ({number(p['unique'])} unique event ids + "
                     f"{number(p['retried'])} retries), {number(p['invalid'])} invalid"
                     + (f" ({kinds})" if kinds else ""))  # fmt: skip
    exercised = ", ".join(f"{n} {MECHANISMS[k]}" for k, n in outcome.mechanisms.items() if n)
    lines.append(f"   exercised: {exercised or 'nothing logged'}")
    m = outcome.measurement
    if m is not None:
        width = max(len(t.table) for t in m.tables)
        lines.append(f"   {'table':<{width}}  {'rows':>8}  {'lost':>5}  {'dup':>5}  {'recount':<14}  replay")
        for t in m.tables:
            lines.append(f"   {t.table:<{width}}  {number(t.rows):>8}  {number(t.lost):>5}  "
                         f"{number(t.duplicated):>5}  {t.recount:<14}  {t.replay}")  # fmt: skip
            lines += [f"      {d}" for d in t.differences]
        if any(t.replay.startswith("equal*") for t in m.tables):
            lines.append(SKETCH_NOTE)
        d = m.dead_letters
        stages = ", ".join(f"{k} {n}" for k, n in d.by_stage.items())
        lines.append(f"   dead letters: {d.expected} sent, {d.letters} on the topic: {d.once} once, "
                     f"{d.twice} twice, {d.missing} missing, {d.unexpected} unexpected"
                     + (f" ({stages})" if stages else ""))  # fmt: skip
        replayed = f"{number(m.replayed_messages)} messages in {m.replay_s:.0f} s"
        if not m.replayed_messages:
            replayed = "not run (ingest did not catch up: lost counts include what it did not apply)"
        lines.append(f"   poison landed as rows: {m.unexpected_rows}; rows past their partition's last "
                     f"marker: {m.unmarked}; replay: {replayed}")  # fmt: skip
    for failure in outcome.failures:
        lines.append(f"   FAILED: {failure}")
    if not outcome.passed:
        lines.append(f"   data and worker logs: {outcome.data_dir}")
    return lines


def totals(outcomes: Sequence[Outcome]) -> Counter[str]:
    out: Counter[str] = Counter()
    for o in outcomes:
        out.update({k: o.counts[k] for k in TOTALS})
    return out


def summary_line(outcomes: Sequence[Outcome], seed: int, elapsed_s: float) -> str:
    t = totals(outcomes)
    passed = all(o.passed for o in outcomes)
    return (
        f"chaos seed {seed}: {len(outcomes)} scenarios, {t['kills']} kills, {t['pauses']} pauses, "
        f"{t['owner_restarts']} owner restarts, {t['broker_restarts']} broker restarts, {t['poison']} poison "
        f"messages in {elapsed_s / 60:.1f} min: {'PASS' if passed else 'FAIL'}"
        + ("" if passed else f" ({', '.join(o.name for o in outcomes if not o.passed)})")
    )
