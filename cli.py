"""Herald's command line: each command is a few lines calling into the packages.

Settings come from HERALD_* environment variables (see herald/settings.py) and are built once here.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Annotated

import typer

from analytics.cli import app as anomaly_app
from experiments.cli import app as experiments_app
from herald.errors import HeraldError
from herald.logging import configure_logging
from herald.redact import redact_text
from herald.settings import Settings, load_settings

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Herald: notification intelligence and governance.",
    pretty_exceptions_show_locals=False,  # a crash's locals hold keys and DSNs; older typer showed them
)
kafka_app = typer.Typer(no_args_is_help=True, help="The local single-node Kafka broker.")
schemas_app = typer.Typer(no_args_is_help=True, help="The Avro event contract.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(schemas_app, name="schemas")
app.add_typer(experiments_app, name="experiments", help="Experiment statistics (offline analysis).")
app.add_typer(anomaly_app, name="anomaly", help="Online anomaly scoring of metric series.")
drill_app = typer.Typer(no_args_is_help=True, help="Operational drills against local providers.")
app.add_typer(drill_app, name="drill")


def settings() -> Settings:
    s = load_settings()
    configure_logging(s.log_format, s.log_level)
    return s


def fail(exc: Exception) -> None:
    typer.echo(f"error: {redact_text(str(exc))}", err=True)  # stderr is the worker's log file too
    raise typer.Exit(2)


@kafka_app.command("up")
def kafka_up() -> None:
    """Start the local broker (fetching its jars on first use)."""
    from herald.local import local_kafka

    typer.echo(local_kafka(settings()).start())


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the local broker."""
    from herald.local import local_kafka

    local_kafka(settings()).stop()


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the local broker runs."""
    from herald.local import local_kafka

    broker = local_kafka(settings())
    running = broker.running()
    typer.echo(f"{'running' if running else 'stopped'} {broker.bootstrap if running else ''}".strip())
    raise typer.Exit(0 if running else 1)


@app.command()
def topics() -> None:
    """Create Herald's topics where missing and list them with their sizes."""
    from herald.local import bootstrap_servers
    from streams.topics import describe_topics, ensure_topics

    s = settings()
    bootstrap, _ = bootstrap_servers(s)
    ensure_topics(bootstrap, s.partitions, s.replication_factor, s.topics)
    for name, info in describe_topics(bootstrap).items():
        typer.echo(f"{name}\tpartitions={info['partitions']}\tmessages={info['messages']}")


@app.command()
def worker() -> None:
    """Run a worker: ingest agent, warehouse writer and the web/API server."""
    from herald.local import bootstrap_servers
    from streams.worker import run_worker

    s = settings()
    bootstrap, _ = bootstrap_servers(s, start=True)
    run_worker(s, bootstrap)


@app.command()
def migrate() -> None:
    """Apply pending warehouse migrations."""
    from projections.migrate import migrate as apply_migrations
    from projections.warehouse import Warehouse

    warehouse = Warehouse(settings().warehouse)
    try:
        for name in apply_migrations(warehouse) or ["(nothing to apply)"]:
            typer.echo(name)
    finally:
        warehouse.close()


@app.command()
def sql(
    query: str,
    fmt: Annotated[str, typer.Option("--format", help="json | table | csv")] = "table",
) -> None:
    """Run a read-only query (through the running worker's endpoint when there is one); the engine
    holds the session read-only and bounded (projections/sql_reader.py)."""
    if fmt not in ("json", "table", "csv"):
        fail(ValueError(f"--format: {fmt!r} is not one of json, table, csv"))
    columns, rows = _run_query(settings(), query)
    if fmt == "json":
        typer.echo(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str))
    elif fmt == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        typer.echo("\t".join(columns))
        for row in rows:
            typer.echo("\t".join(str(v) for v in row))


def _run_query(s: Settings, query: str) -> tuple[list[str], list[list[object]]]:
    from herald.local import query_endpoint
    from streams.worker import live_endpoints

    endpoints = live_endpoints(s) if s.embedded_warehouse else []
    if endpoints:
        key = s.api_key.get_secret_value() if s.api_key else None
        return query_endpoint(endpoints[0], query, api_key=key)
    from projections.sql_reader import SqlReaders
    from projections.warehouse import Warehouse
    from streams.worker import reader_limits
    from web.app import jsonable

    warehouse = Warehouse(s.warehouse)
    try:
        answer = SqlReaders(warehouse, reader_limits(s)).query(None, query, s.sql_max_rows)
    finally:
        warehouse.close()
    return answer.columns, [[jsonable(v) for v in row] for row in answer.rows]


@app.command("access-sql")
def access_sql(
    database: Annotated[str, typer.Option(help="The database of Herald's tables on the server.")] = "herald",
    writer: Annotated[str, typer.Option(help="The ClickHouse user Herald's workers write as.")] = "herald",
) -> None:
    """Print the DDL an administrator runs on a ClickHouse server for people's SQL: the reader user and
    settings profile, and the row policies (projections/access.py; docs/warehouse.md)."""
    from projections.access import server_access_sql
    from streams.worker import reader_limits

    for statement in server_access_sql(database, reader_limits(settings()), writer):
        typer.echo(statement + ";")


@schemas_app.command("check")
def schemas_check() -> None:
    """Parse every schema and check current vs historical versions both ways (backward and forward)."""
    from schemas.compatibility import check_all

    problems = check_all()
    for line in problems:
        typer.echo(line, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("schemas ok: every version round-trips and is backward and forward compatible")


@app.command()
def replay() -> None:
    """Rebuild the warehouse projection from the log (stop the worker first in embedded mode)."""
    from herald.local import bootstrap_servers
    from projections.warehouse import Warehouse
    from streams.replay import replay as run_replay

    s = settings()
    bootstrap, _ = bootstrap_servers(s)
    warehouse = Warehouse(s.warehouse)
    try:
        report = run_replay(s, bootstrap, warehouse, progress=_progress("replay"))
    finally:
        warehouse.close()
    typer.echo(
        f"\nreplayed {report.messages} messages: {report.totals.written} rows, "
        f"{report.totals.dead_letters} dead letters, {report.totals.duplicates} duplicates"
    )


@app.command("check-policies")
def check_policies(
    guardrails: Annotated[
        str | None, typer.Option(help="Guardrails policy YAML (providers, limits, SLAs).")
    ] = None,
    segments: Annotated[
        str | None, typer.Option(help="Segments YAML (rule language, docs/segments.md).")
    ] = None,
) -> None:
    """Validate policy files; print their versions, or every problem as file: field: reason (exit 2)."""
    from pathlib import Path

    from policies.loader import load_policy
    from policies.segments import load_segments

    if guardrails is None and segments is None:
        fail(ValueError("name at least one file: --guardrails PATH and/or --segments PATH"))
    if guardrails is not None:
        loaded = load_policy(Path(guardrails))
        typer.echo(f"{guardrails}: ok, version {loaded.version}")
    if segments is not None:
        found = load_segments(Path(segments))
        typer.echo(f"{segments}: ok, {len(found)} segments: {', '.join(sorted(found))}")


@app.command("new-key")
def new_key(
    name: Annotated[str, typer.Option(help="Who holds the key, e.g. acme-dashboard.")],
    tenant: Annotated[str, typer.Option(help="Tenant id, or * for a global operator/admin key.")],
    role: Annotated[str, typer.Option(help="viewer | analyst | operator | admin")] = "viewer",
) -> None:
    """Make an API key: prints the key once (stderr) and the entry to append to the keys file (stdout)."""
    from web.auth import entry_yaml
    from web.auth import new_key as make_key

    key, entry = make_key(name, tenant, role)  # type: ignore[arg-type]  # validated inside
    typer.echo(f"key (shown once, give it to {name}): {key}", err=True)
    typer.echo(entry_yaml(entry), nl=False)


@app.command()
def simulate(
    rate: Annotated[float, typer.Option(help="Notifications per second (0 = as fast as possible).")] = 200.0,
    duration: Annotated[float, typer.Option(help="Seconds of traffic.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Seed: the same seed and start give the same events.")] = 1,
    scenario: Annotated[
        str, typer.Option(help="normal | provider_outage | delivery_drop | latency_spike | bad_input | mixed")
    ] = "normal",
    invalid_every: Annotated[
        int, typer.Option(help="One bad message after every N valid events (0 = none).")
    ] = 0,
    live: Annotated[
        bool,
        typer.Option(
            help="Emit each event when it happens (occurred_at order), as services do; "
            "without it a notification's whole lifecycle is emitted at its request."
        ),
    ] = False,
    speedup: Annotated[
        float, typer.Option(help="Simulated seconds per wall second (inf = as fast as possible).")
    ] = 1.0,
) -> None:
    """Send realistic multi-tenant lifecycle traffic to the lifecycle topic at a fixed arrival rate."""
    from datetime import UTC, datetime

    from herald.local import bootstrap_servers
    from simulator.run import simulate as run_simulation
    from streams.emitter import Emitter

    s = settings()
    bootstrap, _ = bootstrap_servers(s)
    emitter = Emitter(bootstrap, s.topics.lifecycle, max_event_bytes=10 * s.max_event_bytes)
    summary = run_simulation(
        emitter,
        start=datetime.now(UTC),
        rate_per_s=rate,
        duration_s=duration,
        seed=seed,
        scenario=scenario,
        invalid_every=invalid_every,
        max_bytes=s.max_event_bytes,
        live=live,
        speedup=speedup,
        progress=lambda p: _say(
            f"{p.elapsed_s:6.1f}s  {p.events} events  {p.invalid} invalid  behind schedule {p.behind_s:.1f}s"
        ),
    )
    typer.echo(
        f"\nemitted {summary.events} events ({summary.notifications} notifications) and "
        f"{summary.invalid} invalid messages in {summary.elapsed_s:.1f}s"
    )
    for window in summary.windows:
        typer.echo(
            f"  anomaly {window.kind}: {window.start_s:.0f}s-{window.end_s:.0f}s "
            f"{window.tenant_id or '*'} {window.channel or '*'} {window.provider or '*'}"
        )


@app.command()
def demo(
    events: Annotated[int | None, typer.Option(help="Produce exactly this many valid events.")] = None,
    invalid: Annotated[int, typer.Option(help="...and this many invalid ones (all bad kinds).")] = 0,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 1,
    minutes: Annotated[
        float, typer.Option(help="Without --events: simulated minutes of live traffic.")
    ] = 150.0,
    rate: Annotated[float, typer.Option(help="Without --events: notifications per simulated second.")] = 20.0,
    speedup: Annotated[
        float,
        typer.Option(help="Simulated time runs this many times faster than real time (inf = flat out)."),
    ] = math.inf,
    scenario: Annotated[
        str, typer.Option(help="Without --events: alert_drill (one delivery drop), mixed, normal, ...")
    ] = "alert_drill",
    dispatch: Annotated[
        bool, typer.Option(help="Then send requests through the local providers and kill the primaries.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Start local Kafka and a worker on the embedded warehouse, send traffic, report, stop.

    By default: 150 simulated minutes of live traffic as fast as the machine takes it, with one
    injected delivery-rate drop that the alert monitor should raise (and resolve) as one alert."""
    from herald import demo as demos

    s = settings()
    say = None if as_json else _say
    if events is not None:
        if events < 0 or invalid < 0:
            fail(ValueError("--events and --invalid must not be negative"))
        report = demos.run_counts_demo(s, events, invalid, seed, say)
    else:
        report = demos.run_traffic_demo(
            s, minutes * 60, rate, seed, say, scenario=scenario, speedup=speedup, with_dispatch=dispatch
        )
    if as_json:
        typer.echo(json.dumps(report))
    else:
        typer.echo(demos.render_report(report))


@drill_app.command("failover")
def drill_failover(
    cycles: Annotated[int, typer.Option(min=1, help="Kill/restore cycles of the primary providers.")] = 3,
    rate: Annotated[float, typer.Option(min=1, help="Requests per second (half email, half SMS).")] = 100.0,
    down: Annotated[float, typer.Option(min=1, help="Seconds the primaries stay down per cycle.")] = 6.0,
    up: Annotated[float, typer.Option(min=1, help="Seconds after a restore before the next kill.")] = 12.0,
    worker: Annotated[
        bool,
        typer.Option(
            help="Through Kafka and a worker's dispatch agent (local broker, providers process) "
            "instead of the dispatch service in this process."
        ),
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Steady email + SMS traffic through dispatch to the local providers; kill and restore the
    primaries; report detect-to-switch and failback times, messages lost and sent twice."""
    import asyncio

    from dispatch.drill import DrillPlan, run_drill, run_worker_drill

    s = settings()
    plan = DrillPlan(rate_per_s=rate, cycles=cycles, down_s=down, up_s=up)
    say = None if as_json else _say
    report = run_worker_drill(s, plan, say) if worker else asyncio.run(run_drill(plan, say))
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo("\n\nFailover drill")
    for key, value in report.items():
        typer.echo(f"  {key:<36} {value}")


def _say(line: str) -> None:
    sys.stderr.write(f"\r\033[K{line}")
    sys.stderr.flush()


def _progress(label: str):  # type: ignore[no-untyped-def]
    def show(done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        sys.stderr.write(f"\r{label}: {done}/{total} ({pct:5.1f}%)")
        sys.stderr.flush()

    return show


def main() -> None:
    try:
        app()
    except HeraldError as exc:
        typer.echo(f"error: {redact_text(str(exc))}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
