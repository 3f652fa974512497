-- Exactly once for every table derived from events, not only events itself (projections/writer.py).
--
-- 1. Deduplication windows on every materialized view's target. Each insert into events carries a
--    deterministic insert_deduplication_token and deduplicate_blocks_in_dependent_materialized_views = 1,
--    so the engine keeps a token per block in events AND in each view's target table. A retried or
--    repeated block is then dropped everywhere, and a block whose events part landed while a view's
--    part did not (a crash between the two) is completed by inserting it again: the parts that exist
--    are dropped, the missing ones written. Without a window on a target, the engine has nowhere to
--    remember its tokens: before this migration a retried insert was dropped from events and counted
--    again in every rollup. The window is large (100,000 blocks per table) because it also absorbs the
--    block of a worker that was paused past its session and resumes after another took over.
ALTER TABLE events MODIFY SETTING non_replicated_deduplication_window = 100000;
ALTER TABLE ingest_batches MODIFY SETTING non_replicated_deduplication_window = 100000;
ALTER TABLE delivery_minute MODIFY SETTING non_replicated_deduplication_window = 100000;
ALTER TABLE delivery_hour MODIFY SETTING non_replicated_deduplication_window = 100000;
ALTER TABLE delivery_cohort_minute MODIFY SETTING non_replicated_deduplication_window = 100000;
ALTER TABLE experiment_variant_minute MODIFY SETTING non_replicated_deduplication_window = 100000;
ALTER TABLE engagement_profiles MODIFY SETTING non_replicated_deduplication_window = 100000;

-- 2. The log's own clock on every row: the Kafka timestamp of the message (the broker's append time
--    on Herald's topics). The dedup horizon runs on it, so no event time can shrink it, and a replay
--    reads the same values. ingested_at stays the wall-clock time the row was written.
ALTER TABLE events ADD COLUMN IF NOT EXISTS _log_time DateTime64(3, 'UTC') DEFAULT 0 AFTER _offset;

-- 3. Log positions are looked up by partition and offset (where a worker resumes, the block a new
--    owner checks after taking a partition over): skip indexes keep those reads off the full table.
ALTER TABLE events ADD INDEX IF NOT EXISTS log_partition _partition TYPE set(1024) GRANULARITY 1;
ALTER TABLE events ADD INDEX IF NOT EXISTS log_offset _offset TYPE minmax GRANULARITY 1;

-- 4. ingest_batches becomes the completion marker of every applied batch: one row per partition,
--    written after all of the batch's rows (events and every view) are in. Its newest event time per
--    partition is the watermark the alert monitor judges minutes by, so a minute is never judged from
--    events whose rollup rows are not written yet.
ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS max_occurred_at DateTime64(3, 'UTC') DEFAULT 0;
ALTER TABLE ingest_batches ADD COLUMN IF NOT EXISTS max_log_time DateTime64(3, 'UTC') DEFAULT 0;

-- 5. Write-ahead intents: before a batch's runs are inserted, one row per run says which offsets it
--    covers (its first and last row). The engine may commit a view's part before the events part of
--    the same insert (a view's part is not held back until the table's is in), so after a crash no
--    table alone says which runs were started; the intents do. A partition's intents past its last
--    marker are runs that may be partly in: whoever loads the partition inserts exactly those runs
--    again from the log before anything else, completing every table they reached. Two plans for the
--    same first offset (a worker paused past its session, and the partition's new owner): the one
--    the engine took first stands (_block_number, the order the engine took the inserts in), because
--    only the first insert with that start's token can land.
CREATE TABLE IF NOT EXISTS ingest_intents
(
    topic        LowCardinality(String),
    partition    UInt16,
    first_offset UInt64,
    last_offset  UInt64,
    rows         UInt32,
    worker       LowCardinality(String),
    planned_at   DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (topic, partition, first_offset)
SETTINGS non_replicated_deduplication_window = 100000, enable_block_number_column = 1
