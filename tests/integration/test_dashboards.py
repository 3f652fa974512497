"""The Grafana dashboards and the runbooks' SQL run against a real warehouse filled by the real ingest path.

Grafana's ClickHouse data source rewrites a panel's SQL in two steps; this module does the same, so a
renamed column or a typo in a dashboard fails here instead of showing "No data" at 3 am:

1. frontend: ``$__conditionalAll(condition, $var)`` becomes ``1=1`` when ``$var`` is All, else the
   condition; then template variables: ``${var:singlequote}`` is the quoted, comma-separated
   selection (every option for All);
2. backend: ``$__timeFilter(col)`` is ``col >= toDateTime(from) AND col <= toDateTime(to)``,
   ``$__timeInterval(col)`` is ``toStartOfInterval(toDateTime(col), INTERVAL <n> second)`` and
   ``$__fromTime`` / ``$__toTime`` are ``toDateTime(from)`` / ``toDateTime(to)``.

Any other ``$`` left afterwards is a macro the dashboards must not use (this test could not run it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from analytics.alerting import AlertChange, SeriesKey, alert_id
from analytics.runbooks import RUNBOOKS
from herald.errors import WarehouseError
from herald.settings import load_settings
from projections.migrate import migrate
from projections.rows import ALERT_COLUMNS
from projections.sql_reader import SqlReaders
from projections.warehouse import Warehouse
from projections.writer import IngestWriter
from schemas.codec import lifecycle_codec
from simulator.model import DEFAULT_MODEL, generate
from streams.ingest import SourceMessage
from streams.pipeline import IngestPipeline
from streams.replay import CountingDeadLetters
from tests.integration.helpers import alert_change_row
from web.dashboard import INDEX_SECTIONS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "infra" / "grafana" / "dashboards").glob("*.json"))
RUNBOOK_PAGES = sorted((ROOT / "docs" / "runbooks").glob("*.md"))
TOPIC = "herald.lifecycle.events.v1"
PARTITIONS = 4
INVALID = 17  # undecodable messages: each must show up once in the "Dead letters" panel
REPEATED = 29  # redelivered events (same event_id, new offset): each must show up as a duplicate
INTERVAL_S = 60
RUNBOOK_BASE = "${runbook_base}/"
SELECTED = {"tenant": ["acme-home"], "channel": ["SMS"], "provider": ["sms-primary"]}


@dataclass(frozen=True)
class Filled:
    """The warehouse under test and the time range the dashboards are viewed at."""

    warehouse: Warehouse
    start: datetime
    end: datetime
    events: int
    last_offsets: dict[int, int]


def _messages(events: list[dict[str, Any]]) -> list[SourceMessage]:
    """Encoded events, then garbage and redeliveries, keyed by notification (a retry keeps its partition)."""
    codec = lifecycle_codec()
    keyed = [(e["notification_id"].encode(), codec.encode(e)) for e in events]
    payloads = keyed + [(b"bad", b"not avro at all") for _ in range(INVALID)] + keyed[:REPEATED]
    next_offset = [0] * PARTITIONS
    messages = []
    for key, value in payloads:
        partition = sum(key) % PARTITIONS
        messages.append(SourceMessage(TOPIC, partition, next_offset[partition], key, value))
        next_offset[partition] += 1
    return messages


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filled]:
    """One chDB warehouse per module (chDB allows one engine path per process), filled by IngestPipeline."""
    data_dir = tmp_path_factory.mktemp("dashboards")
    settings = load_settings(data_dir=data_dir)
    warehouse = Warehouse(f"chdb://{data_dir}/warehouse")
    try:
        migrate(warehouse)
        # An hour ago, so the runbooks' "last N hours" windows and the variables' "last 7 days" see it.
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
        events = list(generate(DEFAULT_MODEL, start, 20, 600, seed=1))
        writer = IngestWriter(warehouse, "dashboards-test")
        dead_letters = CountingDeadLetters()  # the DLQ producer's stand-in: counts, keeps nothing
        pipeline = IngestPipeline(settings, writer, lifecycle_codec(), dead_letters)  # type: ignore[arg-type]  # duck-typed sink
        messages = _messages(events)
        for i in range(0, len(messages), 5000):
            pipeline.apply(messages[i : i + 5000])
        # Engagement (opens, clicks) lands up to hours after the request: view up to the last event.
        end = max(datetime.now(UTC), *(e["occurred_at"] for e in events)) + timedelta(minutes=1)
        last_offsets = {m.partition: m.offset for m in messages}
        # One resolved alert in the window, as the monitor would have written it, for the alerts panel.
        series = SeriesKey("acme-home", "SMS", "sms-primary")
        opened_ms = int((start + timedelta(minutes=3)).timestamp() * 1000)
        opened = AlertChange(
            alert_id(series, opened_ms), "OPENED", series, "delivery_rate", "drop", "critical", 0.3, 0.96,
            0.99, opened_ms, opened_ms + 60_000, opened_ms, opened_ms,
        )  # fmt: skip
        resolved = replace(opened, status="RESOLVED", at_ms=opened_ms + 6 * 60_000)
        rows = [alert_change_row(c, "http://herald", "http://herald/dashboard/") for c in (opened, resolved)]
        warehouse.insert("alerts", rows, list(ALERT_COLUMNS))
        yield Filled(warehouse, start - timedelta(minutes=5), end, len(events), last_offsets)
    finally:
        warehouse.close()


def _dashboard(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def _query_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels += [panel, *panel.get("panels", [])]  # collapsed rows keep their panels inside
    return [p for p in panels if p.get("targets")]


def _macro_args(sql: str, open_paren: int) -> tuple[list[str], int]:
    """Top-level comma-separated arguments of the call whose '(' is at ``open_paren``, and the ')' index."""
    depth, current = 0, ""
    args: list[str] = []
    for i in range(open_paren, len(sql)):
        char = sql[i]
        if char == "(":
            depth += 1
            if depth == 1:
                continue
        elif char == ")":
            depth -= 1
            if depth == 0:
                return [*args, current], i
        elif char == "," and depth == 1:
            args.append(current)
            current = ""
            continue
        current += char
    raise AssertionError(f"unbalanced macro call in {sql!r}")


def _conditional_all(sql: str, selection: dict[str, list[str] | None]) -> str:
    macro = "$__conditionalAll("
    while (at := sql.find(macro)) != -1:
        args, end = _macro_args(sql, at + len(macro) - 1)
        assert len(args) == 2, f"$__conditionalAll takes (condition, $var): {args}"
        condition, variable = args[0].strip(), args[1].strip()
        assert variable.startswith("$") and variable[1:] in selection, f"unknown variable {variable}"
        sql = sql[:at] + ("1=1" if selection[variable[1:]] is None else condition) + sql[end + 1 :]
    return sql


def render(
    sql: str,
    selection: dict[str, list[str] | None],
    options: dict[str, list[str]],
    start: datetime,
    end: datetime,
) -> str:
    """The SQL Grafana's ClickHouse data source sends for ``selection`` (None = All) over [start, end]."""
    sql = _conditional_all(sql, selection)

    def values(match: re.Match[str]) -> str:
        chosen = selection[match[1]]
        return ", ".join(
            "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'" for v in chosen or options[match[1]]
        )

    sql = re.sub(r"\$\{(\w+):singlequote\}", values, sql)
    t0, t1 = int(start.timestamp()), int(end.timestamp())
    sql = re.sub(r"\$__timeFilter\(\s*(\w+)\s*\)", rf"\1 >= toDateTime({t0}) AND \1 <= toDateTime({t1})", sql)
    sql = re.sub(
        r"\$__timeInterval\(\s*(\w+)\s*\)",
        rf"toStartOfInterval(toDateTime(\1), INTERVAL {INTERVAL_S} second)",
        sql,
    )
    sql = sql.replace("$__fromTime", f"toDateTime({t0})").replace("$__toTime", f"toDateTime({t1})")
    assert "$" not in sql, f"a macro or variable this test cannot substitute is left:\n{sql}"
    return sql


def _options(filled: Filled, dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """Each query variable's options, by running its query as Grafana does."""
    return {
        v["name"]: [str(row[0]) for row in filled.warehouse.rows(v["query"])]
        for v in dashboard["templating"]["list"]
        if v["type"] == "query"
    }


def _run_panels(filled: Filled, selection_of: str) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    results = {}
    for path in DASHBOARDS:
        dashboard = _dashboard(path)
        options = _options(filled, dashboard)
        selection: dict[str, list[str] | None] = {
            name: (SELECTED[name] if selection_of == "selected" else None) for name in options
        }
        for panel in _query_panels(dashboard):
            for target in panel["targets"]:
                sql = render(target["rawSql"], selection, options, filled.start, filled.end)
                results[(path.stem, f"{panel['title']}/{target['refId']}")] = filled.warehouse.rows(sql)
    return results


def test_dashboards_exist_and_are_grafana_dashboards() -> None:
    """Both dashboards parse, have unique uids and panel ids, and use the ClickHouse data source variable."""
    assert [p.stem for p in DASHBOARDS] == ["herald-delivery", "herald-ingest"]
    uids = [_dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(set(uids)) == len(uids)
    for path in DASHBOARDS:
        dashboard = _dashboard(path)
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(set(ids)) == len(ids), path.name
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["query"] == "grafana-clickhouse-datasource"
        for panel in _query_panels(dashboard):
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_delivery_dashboard_filters_by_tenant_channel_and_provider() -> None:
    """The delivery dashboard offers tenant / channel / provider and every panel's SQL honours all three."""
    dashboard = _dashboard(ROOT / "infra/grafana/dashboards/herald-delivery.json")
    names = [v["name"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert names == ["tenant", "channel", "provider"]
    for panel in _query_panels(dashboard):
        for name in names:
            assert f"${name})" in panel["targets"][0]["rawSql"], f"{panel['title']} ignores ${name}"


def test_every_panel_links_a_known_runbook() -> None:
    """Every query panel links a runbook, and every link is ${runbook_base}/ plus a RUNBOOKS value (or
    an index section, for the alerts panel that lists every kind)."""
    known = {*RUNBOOKS.values(), *INDEX_SECTIONS.values()}
    for path in DASHBOARDS:
        for panel in _query_panels(_dashboard(path)):
            urls = [link["url"] for link in panel.get("links", [])]
            assert urls, f"{path.name}: {panel['title']} has no runbook link"
            for url in urls:
                assert url.startswith(RUNBOOK_BASE), url
                assert url.removeprefix(RUNBOOK_BASE) in known, f"{panel['title']}: {url}"


def test_variable_queries_list_the_simulated_tenants_channels_and_providers(filled: Filled) -> None:
    """The template variables' queries return what the simulated traffic contains, without ''."""
    options = _options(filled, _dashboard(ROOT / "infra/grafana/dashboards/herald-delivery.json"))
    assert options["tenant"] == ["acme-home", "brightfix", "northwind-utilities", "tiny-plumbing"]
    assert options["channel"] == ["EMAIL", "PUSH", "SMS"]
    assert "sms-primary" in options["provider"]
    assert "" not in options["provider"]


def test_every_panel_returns_rows_with_all_selected(filled: Filled) -> None:
    """With All selected over the simulated window, every panel's SQL runs and returns rows."""
    results = _run_panels(filled, "all")
    assert results
    assert [key for key, rows in results.items() if not rows] == []


def test_every_panel_runs_with_one_tenant_channel_and_provider(filled: Filled) -> None:
    """With a single tenant, channel and provider selected, every panel's SQL runs (and filters)."""
    results = _run_panels(filled, "selected")
    summary = results[("herald-delivery", "Tenant x channel summary/A")]
    assert {(row[0], row[1]) for row in summary} == {("acme-home", "SMS")}


def test_panels_agree_with_the_ingested_counts(filled: Filled) -> None:
    """Volume, rows, dead-letter, duplicate and position panels match exactly what was fed to ingest."""
    results = _run_panels(filled, "all")
    volume = results[("herald-delivery", "Volume by event type/A")]
    assert sum(row[2] for row in volume) == filled.events
    assert sum(row[1] for row in results[("herald-ingest", "Dead letters/A")]) == INVALID
    assert sum(row[1] for row in results[("herald-ingest", "Duplicates/A")]) == REPEATED
    assert sum(row[1] for row in results[("herald-ingest", "Rows written/A")]) == filled.events
    partitions = results[("herald-ingest", "Partitions/A")]
    assert {row[1]: row[2] for row in partitions} == filled.last_offsets
    assert sum(row[4] for row in partitions) == INVALID
    rate = results[("herald-delivery", "Delivery rate (time range)/A")][0][0]
    assert 0.9 < rate < 1.0


def _sql_blocks(page: Path) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", page.read_text(), flags=re.DOTALL)


def test_every_runbook_query_is_read_only_and_runs(filled: Filled) -> None:
    """Each ```sql block in docs/runbooks runs as written on a read-only reader session, as /sql runs it."""
    blocks = [(page.name, sql) for page in RUNBOOK_PAGES for sql in _sql_blocks(page)]
    assert len(blocks) >= 20
    readers = SqlReaders(filled.warehouse)
    failures = []
    for name, sql in blocks:
        try:
            readers.query(None, sql, 100_000)
        except WarehouseError as error:
            failures.append(f"{name}: {error}\n{sql}")
    assert failures == []
