-- Alerts as they were raised and resolved: one row per alert status change, the same content as the
-- herald.ops.alerts.v1 topic (schemas/avro/alert_event.avsc). Written by the alert monitor
-- (streams/monitor.py) after the change is on the topic. A monitor that restarts from its last
-- checkpoint re-decides the same minutes and re-emits the same (alert_id, status) rows: the
-- ReplacingMergeTree folds them, and readers use FINAL or the alerts_current view.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id       String,
    status         LowCardinality(String),
    tenant_id      LowCardinality(String),
    channel        LowCardinality(String),
    provider       LowCardinality(String),
    series_key     String,
    metric         LowCardinality(String),
    kind           LowCardinality(String),
    severity       LowCardinality(String),
    observed       Float64,
    expected       Float64,
    score          Float64,
    window_start   DateTime64(3, 'UTC'),
    window_end     DateTime64(3, 'UTC'),
    first_seen     DateTime64(3, 'UTC'),
    emitted_at     DateTime64(3, 'UTC'),
    dashboard_url  String,
    runbook_url    String,
    policy_version LowCardinality(String),
    detail         String,
    recorded_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toYYYYMM(first_seen)
ORDER BY (tenant_id, alert_id, status);

-- One row per alert with its latest status: OPENED while it is still open, RESOLVED with the time
-- it resolved otherwise.
CREATE VIEW IF NOT EXISTS alerts_current AS
SELECT
    alert_id,
    argMax(a.status, a.emitted_at)                AS status,
    any(a.tenant_id)                              AS tenant_id,
    any(a.channel)                                AS channel,
    any(a.provider)                               AS provider,
    any(a.series_key)                             AS series_key,
    argMin(a.metric, a.emitted_at)                AS metric,
    argMin(a.kind, a.emitted_at)                  AS kind,
    argMin(a.severity, a.emitted_at)              AS severity,
    argMin(a.observed, a.emitted_at)              AS observed,
    argMin(a.expected, a.emitted_at)              AS expected,
    argMin(a.score, a.emitted_at)                 AS score,
    min(a.window_start)                           AS window_start,
    max(a.window_end)                             AS window_end,
    min(a.first_seen)                             AS first_seen,
    if(countIf(a.status = 'RESOLVED') > 0, maxIf(a.emitted_at, a.status = 'RESOLVED'), NULL) AS resolved_at,
    any(a.dashboard_url)                          AS dashboard_url,
    any(a.runbook_url)                            AS runbook_url
FROM alerts AS a FINAL
GROUP BY alert_id;
