-- The Kafka path (issue 14): a `process` instance records, in the same transaction as
-- the graph flush that holds their flows, the next offset to read of each raw-topic
-- partition it consumed. A partition assigned to an instance (at start, or after a
-- rebalance moves it from one that died) is read from here, so every raw record
-- reaches the graph exactly once: what was flushed is not read again, what was not
-- flushed is. The offsets committed to Kafka follow (for lag and tooling), never lead.
CREATE TABLE kafka_positions (
    consumer_group TEXT NOT NULL,
    topic          TEXT NOT NULL,
    partition      INTEGER NOT NULL CHECK (partition >= 0),
    next_offset    BIGINT NOT NULL CHECK (next_offset >= 0),
    updated_at     TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, partition)
);
