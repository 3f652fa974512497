-- Latency distributions as mergeable sketches in the rollups, and a rollup by the send's minute so that
-- late outcomes (a bounce or an open hours later) update the window of the send they follow up on.
--
-- 1. events.sent_at: when the send an event follows up on happened (DELIVERED, BOUNCED, OPENED,
--    CLICKED, REPLIED, UNSUBSCRIBED, COMPLAINED carry it; NULL elsewhere and on rows written before
--    this migration). The writer inserts by column name, so the column's position does not matter.
ALTER TABLE events ADD COLUMN IF NOT EXISTS sent_at Nullable(DateTime64(3, 'UTC')) AFTER latency_ms;

-- 2. t-digest sketches of latency_ms in delivery_minute and delivery_hour: requested->sent (on SENT),
--    sent->delivered (on DELIVERED) and the response latency delivered->opened/replied (on OPENED and
--    REPLIED). SummingMergeTree folds an AggregateFunction column with its own function, so rows of one
--    key merge their sketches; read them with quantilesTDigestMerge(0.5, 0.95, 0.99)(...) ... GROUP BY,
--    over any set of minutes or hours. Rows written before this migration keep empty sketches: their
--    counts and sums are there, their percentiles are not (a range reaching back before the migration
--    gives the percentiles of the events written since).
ALTER TABLE delivery_minute
    ADD COLUMN IF NOT EXISTS send_latency_digest
        AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64),
    ADD COLUMN IF NOT EXISTS delivery_latency_digest
        AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64),
    ADD COLUMN IF NOT EXISTS response_latency_digest
        AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64);

ALTER TABLE delivery_hour
    ADD COLUMN IF NOT EXISTS send_latency_digest
        AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64),
    ADD COLUMN IF NOT EXISTS delivery_latency_digest
        AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64),
    ADD COLUMN IF NOT EXISTS response_latency_digest
        AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64);

-- The materialized views that keep the two rollups are replaced by ones that also fill the sketches:
-- the same SELECT as 0002 / 0003 plus three quantilesTDigestStateIf columns. An insert into events
-- between a DROP and its CREATE would be missing from that rollup. That cannot happen here: a worker
-- runs the migrations before it starts its warehouse sink, and replay (streams/replay.py) runs them
-- before it writes. On a shared ClickHouse server, stop the workers of the previous version before
-- the first worker of this version starts, or they may write into the gap. Both statements are safe
-- to run again (a crash before this migration is recorded just runs it once more).
DROP VIEW IF EXISTS delivery_minute_mv;

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
    sum(ifNull(cost_micros, 0))                                      AS cost_micros,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(
        ifNull(latency_ms, 0), event_type = 'SENT' AND latency_ms IS NOT NULL)
                                                                     AS send_latency_digest,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(
        ifNull(latency_ms, 0), event_type = 'DELIVERED' AND latency_ms IS NOT NULL)
                                                                     AS delivery_latency_digest,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(
        ifNull(latency_ms, 0), event_type IN ('OPENED', 'REPLIED') AND latency_ms IS NOT NULL)
                                                                     AS response_latency_digest
FROM events
GROUP BY minute, tenant_id, channel, provider, template_id, template_version;

DROP VIEW IF EXISTS delivery_hour_mv;

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
    sum(ifNull(cost_micros, 0))                                      AS cost_micros,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(
        ifNull(latency_ms, 0), event_type = 'SENT' AND latency_ms IS NOT NULL)
                                                                     AS send_latency_digest,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(
        ifNull(latency_ms, 0), event_type = 'DELIVERED' AND latency_ms IS NOT NULL)
                                                                     AS delivery_latency_digest,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(
        ifNull(latency_ms, 0), event_type IN ('OPENED', 'REPLIED') AND latency_ms IS NOT NULL)
                                                                     AS response_latency_digest
FROM events
GROUP BY hour, tenant_id, channel, provider, template_id, template_version;

-- 3. The cohort rollup: per minute of the SEND (send_minute = minute of sent_at, or of occurred_at for an
--    event without one, i.e. SENT itself and rows written before sent_at existed) x tenant x channel x
--    provider x template version. SENT counts in its own minute; an outcome counts in its send's minute
--    whenever it arrives, so a BOUNCED or OPENED hours later adds to the row of the minute it was sent
--    in, and open_rate by send minute keeps growing as late opens come in. delivery_minute answers
--    "what happened in this minute", this table "what became of the messages sent in this minute".
--    Kept by its own materialized view on events, like the other rollups (same blocks, same dedup).
--    SummingMergeTree: read with sum() / quantilesTDigestMerge() ... GROUP BY.
--    Note: an insert into events touches one month of occurred_at (projections/writer.py), but a late
--    outcome of a send in the previous month writes this table's row in that previous month's partition.
CREATE TABLE IF NOT EXISTS delivery_cohort_minute
(
    send_minute             DateTime('UTC'),
    tenant_id               LowCardinality(String),
    channel                 LowCardinality(String),
    provider                LowCardinality(String),
    template_id             LowCardinality(String),
    template_version        UInt32,
    sent                    UInt64,
    delivered               UInt64,
    bounced                 UInt64,
    opened                  UInt64,
    clicked                 UInt64,
    replied                 UInt64,
    unsubscribed            UInt64,
    complained              UInt64,
    response_latency_digest AggregateFunction(quantilesTDigest(0.5, 0.95, 0.99), UInt64)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(send_minute)
ORDER BY (tenant_id, send_minute, channel, provider, template_id, template_version);

CREATE MATERIALIZED VIEW IF NOT EXISTS delivery_cohort_minute_mv TO delivery_cohort_minute AS
SELECT
    toStartOfMinute(ifNull(sent_at, occurred_at))                    AS send_minute,
    tenant_id, channel, provider, template_id,
    ifNull(template_version, 0)                                      AS template_version,
    countIf(event_type = 'SENT')                                     AS sent,
    countIf(event_type = 'DELIVERED')                                AS delivered,
    countIf(event_type = 'BOUNCED')                                  AS bounced,
    countIf(event_type = 'OPENED')                                   AS opened,
    countIf(event_type = 'CLICKED')                                  AS clicked,
    countIf(event_type = 'REPLIED')                                  AS replied,
    countIf(event_type = 'UNSUBSCRIBED')                             AS unsubscribed,
    countIf(event_type = 'COMPLAINED')                               AS complained,
    quantilesTDigestStateIf(0.5, 0.95, 0.99)(
        ifNull(latency_ms, 0), event_type IN ('OPENED', 'REPLIED') AND latency_ms IS NOT NULL)
                                                                     AS response_latency_digest
FROM events
WHERE event_type IN ('SENT', 'DELIVERED', 'BOUNCED', 'OPENED', 'CLICKED', 'REPLIED', 'UNSUBSCRIBED',
                     'COMPLAINED')
GROUP BY send_minute, tenant_id, channel, provider, template_id, template_version;

-- Analyst view with a stable name: per send minute x tenant x channel x provider, what became of the
-- messages sent in that minute so far. Rates divide by this view's own sums (the aliases), NULL when the
-- denominator is 0 (e.g. a minute that only received late outcomes of rows written before sent_at).
-- response_p50/p95/p99 are delivered->opened/replied latencies in ms (nan without any response).
CREATE VIEW IF NOT EXISTS engagement_by_send_minute AS
SELECT
    send_minute, tenant_id, channel, provider,
    sum(sent)                                             AS sent,
    sum(delivered)                                        AS delivered,
    sum(bounced)                                          AS bounced,
    sum(opened)                                           AS opened,
    sum(clicked)                                          AS clicked,
    sum(replied)                                          AS replied,
    sum(unsubscribed)                                     AS unsubscribed,
    sum(complained)                                       AS complained,
    delivered / nullIf(sent, 0)                           AS delivery_rate,
    bounced / nullIf(sent, 0)                             AS bounce_rate,
    opened / nullIf(delivered, 0)                         AS open_rate,
    clicked / nullIf(delivered, 0)                        AS click_rate,
    replied / nullIf(delivered, 0)                        AS reply_rate,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(response_latency_digest)[1] AS response_p50,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(response_latency_digest)[2] AS response_p95,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(response_latency_digest)[3] AS response_p99
FROM delivery_cohort_minute
GROUP BY send_minute, tenant_id, channel, provider;

-- Analyst view with a stable name: latency percentiles in ms per minute x tenant x channel x provider,
-- from delivery_minute's sketches (occurred_at minutes: a latency counts in the minute its event
-- happened). send = requested->sent, delivery = sent->delivered, response = delivered->opened/replied.
-- Percentiles of one minute cannot be combined into those of an hour: for longer windows merge the
-- sketches yourself (quantilesTDigestMerge over delivery_minute or delivery_hour, see docs/warehouse.md).
CREATE VIEW IF NOT EXISTS latency_minute AS
SELECT
    minute, tenant_id, channel, provider,
    sum(send_latency_count)                                              AS send_count,
    sum(delivery_latency_count)                                          AS delivery_count,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(send_latency_digest)[1]       AS send_p50,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(send_latency_digest)[2]       AS send_p95,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(send_latency_digest)[3]       AS send_p99,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(delivery_latency_digest)[1]   AS delivery_p50,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(delivery_latency_digest)[2]   AS delivery_p95,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(delivery_latency_digest)[3]   AS delivery_p99,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(response_latency_digest)[1]   AS response_p50,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(response_latency_digest)[2]   AS response_p95,
    quantilesTDigestMerge(0.5, 0.95, 0.99)(response_latency_digest)[3]   AS response_p99
FROM delivery_minute
GROUP BY minute, tenant_id, channel, provider
