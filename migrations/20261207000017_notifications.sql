-- Alert notifications (issue 18): Slack, PagerDuty and signed webhooks.
--
-- The alerts table is already an outbox (migration 16: each row's writing transaction
-- and a sequence, bumped when an alert's state changes). The daemon's notifier reads
-- it past its own cursor, as the Kafka relay does, and turns each alert state into
-- deliveries, one per target the alert is routed to, in the same transaction that
-- moves the cursor: an alert state becomes its deliveries exactly once. Deliveries are
-- the queue (bounded: past `notifications.max_pending` they are recorded as dropped)
-- and the record: a sender takes the due ones, posts them, and writes what happened.

CREATE TABLE notification_cursors (
    name       TEXT PRIMARY KEY,
    relay_tx   xid8 NOT NULL,
    relay_seq  BIGINT NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now()
);

CREATE TABLE notification_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    alert_id        UUID NOT NULL REFERENCES alerts(id) ON DELETE CASCADE,
    -- The target's name in notifications.targets, and its kind.
    target          VARCHAR(100) NOT NULL,
    kind            VARCHAR(20) NOT NULL,
    -- trigger (the alert opened), acknowledge, resolve.
    action          VARCHAR(20) NOT NULL,
    -- pending, delivered, failed (gave up after the attempts), dropped (queue full).
    status          VARCHAR(20) NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    created_at      TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT now(),
    delivered_at    TIMESTAMP WITH TIME ZONE,
    -- The last answer: HTTP status, or the error when there was none.
    http_status     INTEGER,
    last_error      TEXT,
    -- One delivery per alert, target and action, however often the alert is relayed.
    UNIQUE (alert_id, target, action)
);

CREATE INDEX idx_notification_deliveries_due ON notification_deliveries (next_attempt_at)
    WHERE status = 'pending';
