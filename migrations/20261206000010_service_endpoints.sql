-- Listening endpoints the daemon learnt from flows (an endpoint that kept its port
-- while its peers' ports changed, in two windows or more; see the daemon's
-- resolve/listeners.rs). Orientation uses them before the port-number rules, so a
-- service on a high port outside the port table (gRPC 50051, ActiveMQ 61616) is the
-- server even with few clients. Loaded at start so a restart does not learn again;
-- last_seen moves at most daily while the endpoint keeps listening, and rows silent
-- for 30 days are deleted by the daemon's upkeep.
CREATE TABLE service_endpoints (
    ip INET NOT NULL,
    protocol SMALLINT NOT NULL,
    port INTEGER NOT NULL CHECK (port BETWEEN 1 AND 65535),
    first_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (ip, protocol, port)
);
