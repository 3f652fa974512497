-- Experiments and segments in the warehouse.
--
-- experiment_variant_minute: mergeable sufficient statistics per experiment x variant, kept by a
-- materialized view as events are inserted (the same streaming path as the delivery rollups). Per
-- minute of the event, the exact set of notifications exposed (DISPATCHED carrying the experiment)
-- and converted (delivered, opened, ...) as uniqExact states, plus the delivery latency sums for the
-- latency mean. Merging every minute up to T gives the exact totals at T: the experiments job
-- (streams/experiments.py) reads them, runs experiments/analyze.py and writes experiment_results.
CREATE TABLE IF NOT EXISTS experiment_variant_minute
(
    tenant_id           LowCardinality(String),
    experiment_id       LowCardinality(String),
    variant             LowCardinality(String),
    minute              DateTime('UTC'),
    exposed             AggregateFunction(uniqExact, String),
    delivered           AggregateFunction(uniqExact, String),
    opened              AggregateFunction(uniqExact, String),
    clicked             AggregateFunction(uniqExact, String),
    replied             AggregateFunction(uniqExact, String),
    unsubscribed        AggregateFunction(uniqExact, String),
    complained          AggregateFunction(uniqExact, String),
    bounced             AggregateFunction(uniqExact, String),
    latency_n           SimpleAggregateFunction(sum, UInt64),
    latency_sum         SimpleAggregateFunction(sum, Float64),
    latency_sum_squares SimpleAggregateFunction(sum, Float64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, experiment_id, variant, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS experiment_variant_minute_mv TO experiment_variant_minute AS
SELECT
    tenant_id,
    experiment_id,
    variant,
    toStartOfMinute(occurred_at) AS minute,
    uniqExactStateIf(notification_id, event_type = 'DISPATCHED')   AS exposed,
    uniqExactStateIf(notification_id, event_type = 'DELIVERED')    AS delivered,
    uniqExactStateIf(notification_id, event_type = 'OPENED')       AS opened,
    uniqExactStateIf(notification_id, event_type = 'CLICKED')      AS clicked,
    uniqExactStateIf(notification_id, event_type = 'REPLIED')      AS replied,
    uniqExactStateIf(notification_id, event_type = 'UNSUBSCRIBED') AS unsubscribed,
    uniqExactStateIf(notification_id, event_type = 'COMPLAINED')   AS complained,
    uniqExactStateIf(notification_id, event_type = 'BOUNCED')      AS bounced,
    toUInt64(countIf(event_type = 'DELIVERED' AND latency_ms IS NOT NULL))            AS latency_n,
    toFloat64(sumIf(ifNull(latency_ms, 0), event_type = 'DELIVERED'))                 AS latency_sum,
    toFloat64(sumIf(pow(toFloat64(ifNull(latency_ms, 0)), 2), event_type = 'DELIVERED')) AS latency_sum_squares
FROM events
WHERE experiment_id != '' AND variant != ''
GROUP BY tenant_id, experiment_id, variant, minute;

-- experiment_results: the statistics as computed, one row per experiment x metric x variant per
-- computation (a time series: effect over time). The control's row carries its counts and no
-- effect. The same numbers go to the compacted herald.experiments.status.v1 topic.
CREATE TABLE IF NOT EXISTS experiment_results
(
    computed_at           DateTime64(3, 'UTC'),
    data_through          DateTime64(3, 'UTC'),
    tenant_id             LowCardinality(String),
    experiment_id         LowCardinality(String),
    definition_version    String,
    metric                LowCardinality(String),
    metric_kind           LowCardinality(String),
    status                LowCardinality(String),
    variant               LowCardinality(String),
    is_control            Bool,
    n                     UInt64,
    conversions           Float64,
    mean                  Float64,
    absolute_effect       Nullable(Float64),
    relative_effect       Nullable(Float64),
    p_value               Nullable(Float64),
    adjusted_p_value      Nullable(Float64),
    ci_low                Nullable(Float64),
    ci_high               Nullable(Float64),
    seq_ci_low            Nullable(Float64),
    seq_ci_high           Nullable(Float64),
    seq_decision          LowCardinality(String),
    chance_to_win         Nullable(Float64),
    power                 Nullable(Float64),
    remaining_sample_size Nullable(UInt64),
    significant           Bool,
    srm_p_value           Float64,
    srm_flag              Bool
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(computed_at)
ORDER BY (tenant_id, experiment_id, metric, computed_at, variant);

-- engagement_profiles: one row per (tenant, recipient) once merged, the warehouse form of
-- policies/engagement.EngagementProfile (a monoid: counts add, last_* take the latest), kept by a
-- materialized view over events; recipient attributes are the latest seen. Read with
-- GROUP BY tenant_id, recipient_id (or FINAL).
CREATE TABLE IF NOT EXISTS engagement_profiles
(
    tenant_id    LowCardinality(String),
    recipient_id String,
    kind         SimpleAggregateFunction(anyLast, LowCardinality(String)),
    tier         SimpleAggregateFunction(anyLast, LowCardinality(String)),
    role         SimpleAggregateFunction(anyLast, LowCardinality(String)),
    language     SimpleAggregateFunction(anyLast, LowCardinality(String)),
    country      SimpleAggregateFunction(anyLast, LowCardinality(String)),
    sent         SimpleAggregateFunction(sum, UInt64),
    delivered    SimpleAggregateFunction(sum, UInt64),
    opened       SimpleAggregateFunction(sum, UInt64),
    clicked      SimpleAggregateFunction(sum, UInt64),
    replied      SimpleAggregateFunction(sum, UInt64),
    bounced      SimpleAggregateFunction(sum, UInt64),
    complained   SimpleAggregateFunction(sum, UInt64),
    unsubscribed SimpleAggregateFunction(max, UInt8),
    last_open    SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    last_click   SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    last_reply   SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    last_seen    SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY (tenant_id, recipient_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS engagement_profiles_mv TO engagement_profiles AS
SELECT
    tenant_id,
    recipient_id,
    anyLast(recipient_kind)     AS kind,
    anyLast(recipient_tier)     AS tier,
    anyLast(recipient_role)     AS role,
    anyLast(recipient_language) AS language,
    anyLast(recipient_country)  AS country,
    toUInt64(countIf(event_type = 'SENT'))       AS sent,
    toUInt64(countIf(event_type = 'DELIVERED'))  AS delivered,
    toUInt64(countIf(event_type = 'OPENED'))     AS opened,
    toUInt64(countIf(event_type = 'CLICKED'))    AS clicked,
    toUInt64(countIf(event_type = 'REPLIED'))    AS replied,
    toUInt64(countIf(event_type = 'BOUNCED'))    AS bounced,
    toUInt64(countIf(event_type = 'COMPLAINED')) AS complained,
    toUInt8(countIf(event_type = 'UNSUBSCRIBED') > 0) AS unsubscribed,
    maxIf(occurred_at, event_type = 'OPENED')  AS last_open,
    maxIf(occurred_at, event_type = 'CLICKED') AS last_click,
    maxIf(occurred_at, event_type = 'REPLIED') AS last_reply,
    max(occurred_at)                           AS last_seen
FROM events
WHERE recipient_id != ''
GROUP BY tenant_id, recipient_id;

-- Segment snapshots, written by the segments job (streams/segments.py): each snapshot evaluates
-- every segment over the tenant's engagement profiles at one instant. segment_sizes has one row
-- per tenant x segment x snapshot; segment_members the recipients in it (kept 30 days).
CREATE TABLE IF NOT EXISTS segment_sizes
(
    snapshot_at DateTime64(3, 'UTC'),
    tenant_id   LowCardinality(String),
    segment     LowCardinality(String),
    rule        String,
    members     UInt64,
    evaluated   UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(snapshot_at)
ORDER BY (tenant_id, segment, snapshot_at);

CREATE TABLE IF NOT EXISTS segment_members
(
    snapshot_at  DateTime64(3, 'UTC'),
    tenant_id    LowCardinality(String),
    segment      LowCardinality(String),
    recipient_id String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(snapshot_at)
ORDER BY (tenant_id, segment, snapshot_at, recipient_id)
TTL toDateTime(snapshot_at) + INTERVAL 30 DAY;

-- definition_changes: every change to an experiment or a segment made through the API, as an event
-- (created, updated, stopped, deleted), with the whole definition after the change as JSON. The
-- current definitions are the latest version per (tenant, kind, object) on top of the YAML files.
CREATE TABLE IF NOT EXISTS definition_changes
(
    changed_at DateTime64(3, 'UTC'),
    tenant_id  LowCardinality(String),
    kind       LowCardinality(String),
    object_id  String,
    version    UInt64,
    action     LowCardinality(String),
    body       String,
    actor      String,
    note       String
)
ENGINE = MergeTree
ORDER BY (tenant_id, kind, object_id, version);
