-- Per-hour delivery rollup, same keys and counters as delivery_minute, for long time ranges.
-- Kept by its own materialized view on events (not from delivery_minute), so both rollups see exactly
-- the blocks that land in events. SummingMergeTree: read with sum() ... GROUP BY.
CREATE TABLE IF NOT EXISTS delivery_hour
(
    hour                    DateTime('UTC'),
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
PARTITION BY toYYYYMM(hour)
ORDER BY (tenant_id, hour, channel, provider, template_id, template_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS delivery_hour_mv TO delivery_hour AS
SELECT
    toStartOfHour(occurred_at)                                       AS hour,
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
GROUP BY hour, tenant_id, channel, provider, template_id, template_version;

-- Analyst view with a stable name: hourly counts and rates per tenant x channel x provider.
-- delivery_rate uses dispatched as the denominator: a send-time failure never reaches SENT.
-- (Rates refer to the aliases: inside this SELECT, `delivered` is already sum(delivered).)
CREATE VIEW IF NOT EXISTS delivery_rates_hourly AS
SELECT
    hour, tenant_id, channel, provider,
    sum(requested)                                        AS requested,
    sum(dispatched)                                       AS dispatched,
    sum(delivered)                                        AS delivered,
    sum(failed) + sum(bounced)                            AS undelivered,
    sum(opened)                                           AS opened,
    sum(clicked)                                          AS clicked,
    sum(replied)                                          AS replied,
    delivered / nullIf(dispatched, 0)                     AS delivery_rate,
    sum(bounced) / nullIf(dispatched, 0)                  AS bounce_rate,
    opened / nullIf(delivered, 0)                         AS open_rate,
    clicked / nullIf(delivered, 0)                        AS click_rate,
    sum(delivery_latency_ms_sum) / nullIf(sum(delivery_latency_count), 0) AS avg_delivery_latency_ms,
    sum(cost_micros) / 1e6                                AS cost
FROM delivery_hour
GROUP BY hour, tenant_id, channel, provider;
