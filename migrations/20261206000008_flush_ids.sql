-- Each graph flush writes its id here in the same transaction as its rows. When the
-- reply to a COMMIT is lost (a reset connection, a failover) the daemon cannot tell
-- whether the flush landed; it looks for the id before writing the same counters again,
-- so every flush is counted exactly once. Rows older than a week are deleted by the
-- daemon's upkeep: a flush in doubt is settled within one flush interval of the
-- database answering again.
CREATE TABLE graph_flushes (
    id UUID PRIMARY KEY,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX idx_graph_flushes_committed_at ON graph_flushes (committed_at);
