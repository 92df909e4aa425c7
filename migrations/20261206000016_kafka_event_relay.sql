-- The Kafka path (issue 14, design §6.2): every change event and alert the graph
-- writes is published to `kafka.topics.changes` and `kafka.topics.alerts`, whoever
-- wrote it (the daemon's graph writer, the API's edits, an editor acknowledging an
-- alert). The tables are the outbox: a relay in the daemon reads rows in the order of
-- (relay_tx, relay_seq) past a cursor kept here, publishes them, waits for the
-- brokers' acknowledgements, and only then moves the cursor (at least once).
--
-- relay_tx is the writing transaction's id. Rows are read only below the oldest
-- transaction still running (pg_snapshot_xmin), so a transaction that commits after a
-- later one is still read: a row that is not yet visible can only belong to a
-- transaction at or above that bound, which the cursor has not passed.
--
-- The columns get no value for rows written before this migration (no table rewrite,
-- no long lock on a large change_events): a relay's first start begins at the present.

CREATE SEQUENCE flowlens_relay_seq;

ALTER TABLE change_events
    ADD COLUMN relay_tx xid8,
    ADD COLUMN relay_seq BIGINT;
ALTER TABLE change_events
    ALTER COLUMN relay_tx SET DEFAULT pg_current_xact_id(),
    ALTER COLUMN relay_seq SET DEFAULT nextval('flowlens_relay_seq');
CREATE INDEX idx_changes_relay ON change_events (relay_tx, relay_seq)
    WHERE relay_tx IS NOT NULL;

ALTER TABLE alerts
    ADD COLUMN relay_tx xid8,
    ADD COLUMN relay_seq BIGINT;
ALTER TABLE alerts
    ALTER COLUMN relay_tx SET DEFAULT pg_current_xact_id(),
    ALTER COLUMN relay_seq SET DEFAULT nextval('flowlens_relay_seq');
CREATE INDEX idx_alerts_relay ON alerts (relay_tx, relay_seq)
    WHERE relay_tx IS NOT NULL;

-- An alert whose state changes (acknowledged, resolved, retitled) moves to the end of
-- the outbox, so its new state is published too (keyed by the alert's id: a compacted
-- topic keeps each alert's latest state).
CREATE FUNCTION flowlens_alert_relay_again() RETURNS trigger AS $$
BEGIN
    IF (NEW.status, NEW.severity, NEW.title, NEW.description, NEW.acknowledged_by,
        NEW.acknowledged_at, NEW.resolved_by, NEW.resolved_at)
       IS DISTINCT FROM
       (OLD.status, OLD.severity, OLD.title, OLD.description, OLD.acknowledged_by,
        OLD.acknowledged_at, OLD.resolved_by, OLD.resolved_at) THEN
        NEW.relay_tx := pg_current_xact_id();
        NEW.relay_seq := nextval('flowlens_relay_seq');
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER alerts_relay_again
    BEFORE UPDATE ON alerts
    FOR EACH ROW EXECUTE FUNCTION flowlens_alert_relay_again();

-- How far each topic's relay got: the last row published and acknowledged.
CREATE TABLE kafka_relay_cursors (
    topic      TEXT PRIMARY KEY,
    relay_tx   xid8 NOT NULL,
    relay_seq  BIGINT NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);
