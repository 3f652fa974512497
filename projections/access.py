"""Who may read what in the warehouse, as the engine enforces it. Pure: it returns text, it opens nothing.

Herald's own code (ingest, the API's queries, the jobs) uses the warehouse with full rights on its own
database. People's SQL (``/sql``, ``cli.py sql``) runs on *reader* sessions that the engine itself holds
to reading, and a tenant analyst's reader sees only the tenant's rows:

- **Read only.** A reader session has ``readonly = 1``: the engine refuses every write, DDL, ``SET``,
  ``SETTINGS`` clause, ``KILL`` and every table function that needs a temporary table (``file``,
  ``url``, ``s3``, ``remote``, ``executable``, ``python``, ``format`` …). Its limits (time, rows, memory,
  bytes read) are settings fixed before ``readonly`` is switched on, so a query cannot lift them.
- **Grants.** The one engine user (chDB runs every session as ``default``; on a server the same grants
  go to Herald's users) holds no ``FILE``, ``URL``, ``REMOTE``, ``S3`` or other source grants, no
  ``KILL QUERY``, no ``INTROSPECTION`` and no access management: nobody, Herald included, can reach a
  file or the network through SQL. Herald's tables live in their own database (:data:`DATABASE` in
  the embedded engine) so that name lookups never fall through to chDB's file-system database.
- **Row policies.** Every base table Herald creates has a row policy (:data:`TENANT_TABLES`,
  :data:`GLOBAL_TABLES`); views read through them. A tenant reader's session carries the marker
  ``log_comment = 'herald-tenant:<tenant>'`` (set before ``readonly``, so it cannot change), and the
  policies compare each row's tenant with it: a tenant reader sees its own rows (and, for ``alerts``,
  the global provider-health alerts of tenant ``*``), no row of a global-only table, and no row of
  the system tables outside a short list of schema and reference tables
  (:data:`SYSTEM_TABLES_FOR_TENANTS`).
  Sessions without the marker (Herald itself, global operators) see every row.

What Herald checks in text (projections/sql_reader.py) is a friendly early error where the engine
refuses too, with one exception: chDB's scalar ``file()`` function, which the embedded engine
evaluates without any access check (clickhouse-local has no user-files boundary). sql_reader refuses
it on the engine's own parse of the query; a ClickHouse server confines ``file()`` to
``user_files_path``.

>>> for part in policy_filter("tenant_id").split(" OR "):
...     print(part)
NOT startsWith(getSetting('log_comment'), 'herald-tenant:')
getSetting('log_comment') = concat('herald-tenant:', tenant_id)
>>> tenant_marker("acme-home")
'herald-tenant:acme-home'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from xml.sax.saxutils import escape

DATABASE = "herald"
"""The database of Herald's objects in the embedded engine (a server DSN names its own)."""

TENANT_MARKER = "herald-tenant:"

TENANT_TABLES: Mapping[str, str] = {
    "events": "tenant_id",
    "delivery_minute": "tenant_id",
    "delivery_hour": "tenant_id",
    "delivery_cohort_minute": "tenant_id",
    "alerts": "tenant_id",
    "experiment_variant_minute": "tenant_id",
    "experiment_results": "tenant_id",
    "engagement_profiles": "tenant_id",
    "segment_sizes": "tenant_id",
    "segment_members": "tenant_id",
    "definition_changes": "tenant_id",
}
"""Base tables with one tenant's data per row, and the column naming the tenant."""

SHARED_ROWS: Mapping[str, str] = {"alerts": "*"}
"""Tenant value of rows every tenant may read (provider-health alerts are global: tenant ``*``)."""

GLOBAL_TABLES = frozenset({"ingest_batches", "ingest_intents", "schema_migrations"})
"""Base tables whose rows are about the whole installation: global readers only."""

VIEWS = frozenset({"delivery_rates_hourly", "alerts_current", "engagement_by_send_minute", "latency_minute"})
"""Views (SQL SECURITY INVOKER): they read their tables with the caller's row policies."""

MATERIALIZED_VIEWS: Mapping[str, str] = {
    "delivery_minute_mv": "delivery_minute",
    "delivery_hour_mv": "delivery_hour",
    "delivery_cohort_minute_mv": "delivery_cohort_minute",
    "experiment_variant_minute_mv": "experiment_variant_minute",
    "engagement_profiles_mv": "engagement_profiles",
}
"""Materialized views and the table each writes TO. Reading a materialized view reads that table as
the view's definer, without the reader's row policies on the table: each view has the table's policy
of its own."""

SYSTEM_TABLES_FOR_TENANTS = frozenset(
    """aggregate_function_combinators build_options codecs collations columns contributors
    data_skipping_index_types data_type_families database_engines databases dictionary_layouts
    dictionary_sources disk_types documentation formats functions keywords licenses merge_tree_settings
    numbers numbers_mt one primes privileges settings settings_changes table_engines table_functions
    tables time_zones tokenizers unicode zeros zeros_mt""".split()  # noqa: SIM905 - a word list reads best
)
"""System tables a tenant reader may read: the schema, the engine's reference lists and number
generators. ``tables`` and ``columns`` show the sizes of the shared tables (totals over every tenant),
no rows."""

KNOWN_SYSTEM_TABLES = SYSTEM_TABLES_FOR_TENANTS | frozenset(
    [
        "asynchronous_inserts",
        "asynchronous_loader",
        "azure_queue_metadata",
        "azure_queue_metadata_cache",
        "azure_queue_settings",
        "background_schedule_pool",
        "backups",
        "certificates",
        "clusters",
        "completions",
        "constraints",
        "current_roles",
        "dashboards",
        "data_skipping_indices",
        "database_replicas",
        "detached_parts",
        "detached_tables",
        "dictionaries",
        "dimensional_metrics",
        "disks",
        "distributed_ddl_queue",
        "distribution_queue",
        "dns_cache",
        "dropped_tables",
        "dropped_tables_parts",
        "enabled_roles",
        "errors",
        "events",
        "fail_points",
        "filesystem_cache",
        "filesystem_cache_settings",
        "grants",
        "graphite_retentions",
        "handlers",
        "histogram_metrics",
        "hypothetical_indexes",
        "hypothetical_projections",
        "iceberg_files",
        "iceberg_history",
        "jemalloc_arena_bins",
        "jemalloc_bins",
        "jemalloc_profile_text",
        "jemalloc_sampled_allocations",
        "jemalloc_stats",
        "kafka_consumers",
        "macros",
        "masking_policies",
        "merges",
        "metrics",
        "moves",
        "mutations",
        "named_collections",
        "part_moves_between_shards",
        "parts",
        "parts_columns",
        "processes",
        "projection_parts",
        "projection_parts_columns",
        "projections",
        "query_cache",
        "query_condition_cache",
        "quota_limits",
        "quota_usage",
        "quotas",
        "quotas_usage",
        "remote_data_paths",
        "replicas",
        "replicated_fetches",
        "replicated_merge_tree_settings",
        "replication_queue",
        "resources",
        "rocksdb",
        "role_grants",
        "roles",
        "row_policies",
        "s3_queue_metadata",
        "s3_queue_settings",
        "s3queue_metadata_cache",
        "scheduler",
        "schema_inference_cache",
        "server_settings",
        "session_query_ids",
        "settings_profile_elements",
        "settings_profiles",
        "stack_trace",
        "statements",
        "storage_policies",
        "symbols",
        "user_defined_functions",
        "user_directories",
        "user_processes",
        "user_query_log",
        "users",
        "view_refreshes",
        "warnings",
        "workloads",
        "query_log",
        "query_thread_log",
        "query_views_log",
        "query_metric_log",
        "processors_profile_log",
        "part_log",
        "text_log",
        "trace_log",
        "error_log",
        "metric_log",
        "asynchronous_metric_log",
        "asynchronous_metrics",
        "asynchronous_insert_log",
        "session_log",
        "blob_storage_log",
        "backup_log",
        "s3queue_log",
        "opentelemetry_span_log",
        "zookeeper",
        "zookeeper_log",
    ]
)
"""Every system table of the engine Herald runs (chDB 26.9) and the logs a server may add: a tenant
reader sees no row of any of them outside :data:`SYSTEM_TABLES_FOR_TENANTS` (they show other
sessions' queries, errors, parts and settings). A test fails when the engine grows a table this list
does not know, so a new one is classified before it ships."""

SOURCE_FREE_GRANTS = (
    "SHOW, SELECT, INSERT, ALTER, CREATE DATABASE, CREATE TABLE, CREATE VIEW, CREATE DICTIONARY, "
    "DROP, TRUNCATE, OPTIMIZE, SYSTEM, dictGet"
)
"""What the engine user may do: everything Herald needs, no sources (file, url, remote, s3 …), no KILL
QUERY, no introspection, no access management."""


def tenant_marker(tenant: str) -> str:
    """The ``log_comment`` value of a tenant reader's session."""
    return TENANT_MARKER + tenant


def policy_filter(tenant_column: str | None, shared_value: str | None = None) -> str:
    """The row policy condition: every row for sessions without a tenant marker; for a tenant reader
    its own rows (and rows of ``shared_value``); no row of a global-only object (``tenant_column``
    None)."""
    unmarked = f"NOT startsWith(getSetting('log_comment'), '{TENANT_MARKER}')"
    if tenant_column is None:
        return unmarked
    own = f"getSetting('log_comment') = concat('{TENANT_MARKER}', {tenant_column})"
    if shared_value is not None:
        own = f"({own} OR {tenant_column} = '{shared_value}')"
    return f"{unmarked} OR {own}"


def table_policies(database: str) -> dict[tuple[str, str], str]:
    """(database, table) → row policy condition for every object people can read."""
    out: dict[tuple[str, str], str] = {}
    for table, column in TENANT_TABLES.items():
        out[(database, table)] = policy_filter(column, SHARED_ROWS.get(table))
    for view, table in MATERIALIZED_VIEWS.items():
        out[(database, view)] = policy_filter(TENANT_TABLES[table], SHARED_ROWS.get(table))
    for table in GLOBAL_TABLES:
        out[(database, table)] = policy_filter(None)
    for table in KNOWN_SYSTEM_TABLES - SYSTEM_TABLES_FOR_TENANTS:
        out[("system", table)] = policy_filter(None)
    return out


@dataclass(frozen=True)
class ReaderLimits:
    """Bounds of one reader query, enforced by the engine (``timeout_overflow_mode`` and
    ``result_overflow_mode`` are ``throw``: a query over a bound fails, it is never cut short).

    People's queries also yield to Herald's own work: one thread each (``max_threads``), the engine's
    query ``priority`` below Herald's sessions (which run at 1), and their threads at the lowest OS
    priority (``os_thread_priority`` 19, a nice value): on 2 shared cores, 20 CPU-bound reader queries
    at once cost ingest about a fifth of its rate instead of nine tenths (bench/isolation.py).
    """

    max_execution_time_s: float = 30.0
    max_result_rows: int = 100_000
    max_memory_usage: int = 1 << 30
    max_bytes_to_read: int = 20 << 30
    max_threads: int = 1
    priority: int = 10
    os_thread_priority: int = 19

    def settings(self) -> dict[str, str]:
        return {
            "max_threads": str(self.max_threads),
            "priority": str(self.priority),
            "os_thread_priority": str(self.os_thread_priority),
            "max_execution_time": f"{self.max_execution_time_s:g}",
            "timeout_overflow_mode": "throw",
            "max_result_rows": str(self.max_result_rows),
            "result_overflow_mode": "throw",
            "max_memory_usage": str(self.max_memory_usage),
            "max_bytes_to_read": str(self.max_bytes_to_read),
            "read_overflow_mode": "throw",
        }


def reader_settings(tenant: str | None, limits: ReaderLimits) -> list[tuple[str, str]]:
    """The settings a reader session takes, in order: its tenant marker and limits first, ``readonly``
    last (after it nothing can change)."""
    out = [("log_comment", tenant_marker(tenant) if tenant is not None else "herald-sql:global")]
    out += list(limits.settings().items())
    out.append(("readonly", "1"))
    return out


def embedded_config(users_path: str) -> str:
    """chDB's configuration file: the users file below, nothing else."""
    return f"<clickhouse>\n  <users_config>{escape(users_path)}</users_config>\n</clickhouse>\n"


def embedded_users(database: str = DATABASE) -> str:
    """chDB's users file: the one ``default`` user with :data:`SOURCE_FREE_GRANTS` and a row policy on
    every object of :func:`table_policies`."""
    by_db: dict[str, list[tuple[str, str]]] = {}
    for (db, table), condition in sorted(table_policies(database).items()):
        by_db.setdefault(db, []).append((table, condition))
    databases = "".join(
        f"        <{db}>\n"
        + "".join(f"          <{t}><filter>{escape(c)}</filter></{t}>\n" for t, c in tables)
        + f"        </{db}>\n"
        for db, tables in by_db.items()
    )
    return f"""<clickhouse>
  <profiles><default></default></profiles>
  <quotas><default></default></quotas>
  <users>
    <default>
      <no_password/>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <access_management>0</access_management>
      <grants><query>GRANT {SOURCE_FREE_GRANTS} ON *.*</query></grants>
      <databases>
{databases}      </databases>
    </default>
  </users>
</clickhouse>
"""


def server_access_sql(database: str, limits: ReaderLimits, writer: str = "herald") -> list[str]:
    """DDL for a ClickHouse server (run once by an administrator): the reader role and settings profile,
    and the row policies. Herald's writer user keeps its own grants; readers connect as
    ``herald_reader`` and take the tenant marker per session as in the embedded engine.

    >>> print(server_access_sql("herald", ReaderLimits())[0][:62])
    CREATE SETTINGS PROFILE OR REPLACE herald_reader_profile SETTI
    """
    floors = ("priority", "os_thread_priority")  # a reader may lower its priority, never raise it
    numeric = [(k, v) for k, v in limits.settings().items() if v.replace(".", "").isdigit()]
    modes = [(k, v) for k, v in limits.settings().items() if (k, v) not in numeric]
    limits_sql = ", ".join(
        ["readonly = 2 MIN 1 MAX 2"]
        + [f"{k} = {v} {'MIN' if k in floors else 'MAX'} {v}" for k, v in numeric]
        + [f"{k} = '{v}' CONST" for k, v in modes]
    )
    out = [
        f"CREATE SETTINGS PROFILE OR REPLACE herald_reader_profile SETTINGS {limits_sql}",
        "CREATE USER IF NOT EXISTS herald_reader IDENTIFIED WITH sha256_password BY '<reader password>' "
        "SETTINGS PROFILE 'herald_reader_profile'",
        f"GRANT SELECT ON {database}.* TO herald_reader",
        "GRANT SELECT ON system.tables, SELECT ON system.columns, SELECT ON system.databases, "
        "SELECT ON system.one, SELECT ON system.numbers TO herald_reader",
    ]
    for (db, table), condition in sorted(table_policies(database).items()):
        if db == "system":
            continue  # on a server herald_reader has no grant on them at all
        out.append(
            f"CREATE ROW POLICY OR REPLACE herald_tenant ON {db}.{table} "
            f"USING {condition} AS permissive TO herald_reader, {writer}"
        )
    return out
