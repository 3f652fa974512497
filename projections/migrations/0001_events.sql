-- Raw lifecycle events: one row per accepted event, exactly once (see projections/writer.py).
-- Optional strings are '' when absent; optional numbers are NULL.
CREATE TABLE IF NOT EXISTS events
(
    event_id           String,
    event_type         LowCardinality(String),
    occurred_at        DateTime64(3, 'UTC'),
    tenant_id          LowCardinality(String),
    notification_id    String,
    channel            LowCardinality(String),
    provider           LowCardinality(String),
    template_id        LowCardinality(String),
    template_version   Nullable(UInt32),
    campaign_id        LowCardinality(String),
    campaign_step      Nullable(UInt32),
    experiment_id      LowCardinality(String),
    variant            LowCardinality(String),
    recipient_id       String,
    recipient_kind     LowCardinality(String),
    recipient_tier     LowCardinality(String),
    recipient_role     LowCardinality(String),
    recipient_language LowCardinality(String),
    recipient_country  LowCardinality(String),
    latency_ms         Nullable(UInt64),
    cost_micros        Nullable(UInt64),
    currency           LowCardinality(String),
    error_class        LowCardinality(String),
    error_code         String,
    error_message      String,
    error_retryable    Bool,
    reason             LowCardinality(String),
    policy_version     LowCardinality(String),
    source             LowCardinality(String),
    ingested_at        DateTime64(3, 'UTC'),
    _topic             LowCardinality(String),
    _partition         UInt16,
    _offset            UInt64
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, occurred_at, event_type)
SETTINGS non_replicated_deduplication_window = 1000;

-- The stream position of the ingest projection: one row per partition per written batch.
-- max(last_offset) per partition is where a restarted worker resumes applying.
CREATE TABLE IF NOT EXISTS ingest_batches
(
    topic        LowCardinality(String),
    partition    UInt16,
    first_offset UInt64,
    last_offset  UInt64,
    rows         UInt32,
    dead_letters UInt32,
    duplicates   UInt32,
    worker       LowCardinality(String),
    written_at   DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (topic, partition, first_offset)
SETTINGS non_replicated_deduplication_window = 1000;
