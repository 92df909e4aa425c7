-- Active discovery scans (POST /api/v1/discovery/scans): one row per scan, written
-- by the API when an admin asks for it and kept up to date by the scan task, so the
-- request, its progress and its outcome survive the task and can be listed later.
-- Hosts that answer with an open port become (or refresh) assets with
-- discovery_source 'scan'; this table only records what the scan saw.

CREATE TABLE discovery_scans (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    -- What was scanned: a network (host bits clear, which the cidr type enforces) and
    -- the TCP ports tried on every address in it, sorted and without duplicates.
    cidr CIDR NOT NULL,
    ports INTEGER[] NOT NULL CHECK (cardinality(ports) > 0),

    -- queued -> running -> completed | failed; 'cancelled' is reserved for a scan
    -- stopped on request, so the set of states does not change when that arrives.
    status VARCHAR(20) NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    requested_by VARCHAR(100) NOT NULL,  -- the caller's subject, as audit_logs.actor

    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    started_at TIMESTAMP WITH TIME ZONE,
    finished_at TIMESTAMP WITH TIME ZONE,

    -- Progress, written periodically while the scan runs (not per probe). BIGINT
    -- because api.discovery.max_hosts is a u32. hosts_scanned - hosts_up is the
    -- number of addresses that never answered.
    hosts_total BIGINT NOT NULL DEFAULT 0,
    hosts_scanned BIGINT NOT NULL DEFAULT 0,
    hosts_up BIGINT NOT NULL DEFAULT 0,
    assets_created BIGINT NOT NULL DEFAULT 0,
    assets_updated BIGINT NOT NULL DEFAULT 0,

    -- {"10.0.0.5": [22, 443], ...}: addresses with at least one open port.
    open_ports JSONB NOT NULL DEFAULT '{}',

    -- Why a failed scan failed, in words fit for any viewer (details go to the log).
    error TEXT,

    CHECK (hosts_scanned <= hosts_total AND hosts_up <= hosts_scanned)
);

-- Lists are newest first, optionally by status.
CREATE INDEX idx_discovery_scans_created ON discovery_scans (created_at DESC, id);
CREATE INDEX idx_discovery_scans_status ON discovery_scans (status, created_at DESC);
