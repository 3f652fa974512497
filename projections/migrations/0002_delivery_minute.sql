-- Per-minute delivery rollup per tenant x channel x provider x template version, kept by a
-- materialized view on inserts into events: it sees exactly the blocks that land in events (a
-- deduplicated retry of an insert is skipped for both), so it can never disagree with the raw table.
-- SummingMergeTree folds rows lazily: always read it with sum() ... GROUP BY.
CREATE TABLE IF NOT EXISTS delivery_minute
(
    minute                  DateTime('UTC'),
    tenant_id               LowCardinality(String),
    channel                 LowCardinality(String),
    provider                LowCardinality(String),
    template_id             LowCardinality(String),
    template_version        UInt32,
    requested               UInt64,
    suppressed              UInt64,
    dispatched              UInt64,
    sent                    UInt64,
    delivered               UInt64,
    failed                  UInt64,
    bounced                 UInt64,
    opened                  UInt64,
    clicked                 UInt64,
    replied                 UInt64,
    unsubscribed            UInt64,
    complained              UInt64,
    send_latency_ms_sum     UInt64,
    send_latency_count      UInt64,
    delivery_latency_ms_sum UInt64,
    delivery_latency_count  UInt64,
    cost_micros             UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (tenant_id, minute, channel, provider, template_id, template_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS delivery_minute_mv TO delivery_minute AS
SELECT
    toStartOfMinute(occurred_at)                                     AS minute,
    tenant_id, channel, provider, template_id,
    ifNull(template_version, 0)                                      AS template_version,
    countIf(event_type = 'REQUESTED')                                AS requested,
    countIf(event_type = 'SUPPRESSED')                               AS suppressed,
    countIf(event_type = 'DISPATCHED')                               AS dispatched,
    countIf(event_type = 'SENT')                                     AS sent,
    countIf(event_type = 'DELIVERED')                                AS delivered,
    countIf(event_type = 'FAILED')                                   AS failed,
    countIf(event_type = 'BOUNCED')                                  AS bounced,
    countIf(event_type = 'OPENED')                                   AS opened,
    countIf(event_type = 'CLICKED')                                  AS clicked,
    countIf(event_type = 'REPLIED')                                  AS replied,
    countIf(event_type = 'UNSUBSCRIBED')                             AS unsubscribed,
    countIf(event_type = 'COMPLAINED')                               AS complained,
    sumIf(ifNull(latency_ms, 0), event_type = 'SENT')                AS send_latency_ms_sum,
    countIf(event_type = 'SENT' AND latency_ms IS NOT NULL)          AS send_latency_count,
    sumIf(ifNull(latency_ms, 0), event_type = 'DELIVERED')           AS delivery_latency_ms_sum,
    countIf(event_type = 'DELIVERED' AND latency_ms IS NOT NULL)     AS delivery_latency_count,
    sum(ifNull(cost_micros, 0))                                      AS cost_micros
FROM events
GROUP BY minute, tenant_id, channel, provider, template_id, template_version;
