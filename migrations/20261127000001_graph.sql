-- FlowLens dependency graph: the tables of DESIGN.md section 5, with the changes
-- docs/SCHEMA.md explains (one IP belongs to one asset, partitions created by the
-- daemon, change notifications, audit log). Names and meanings of the design's
-- columns are a contract: add, never rename.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- ------------------------------------------------------------------ assets

CREATE TABLE assets (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    name VARCHAR(255),
    fqdn VARCHAR(255),
    asset_type VARCHAR(50) NOT NULL,  -- 'server', 'vm', 'container', 'network_device', 'unknown'

    ip_addresses INET[] NOT NULL,
    mac_addresses MACADDR[],

    os_family VARCHAR(50),
    os_version VARCHAR(100),
    cloud_provider VARCHAR(20),
    cloud_region VARCHAR(50),
    cloud_instance_id VARCHAR(100),

    environment VARCHAR(50),
    tags JSONB DEFAULT '{}',

    first_seen TIMESTAMP WITH TIME ZONE NOT NULL,
    last_seen TIMESTAMP WITH TIME ZONE NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    discovery_source VARCHAR(50) NOT NULL,  -- 'flow', 'scan', 'cloud_api', 'manual'
    confidence REAL DEFAULT 0.5 CHECK (confidence >= 0 AND confidence <= 1),

    -- Added: enrichment the design computes but had no column for.
    country_code VARCHAR(2),
    asn BIGINT,
    as_org VARCHAR(255),
    is_internal BOOLEAN
);

CREATE INDEX idx_assets_ip_addresses ON assets USING GIN (ip_addresses);
CREATE INDEX idx_assets_type ON assets (asset_type);
CREATE INDEX idx_assets_last_seen ON assets (last_seen);
CREATE INDEX idx_assets_tags ON assets USING GIN (tags);
CREATE INDEX idx_assets_fqdn_trgm ON assets USING GIN (fqdn gin_trgm_ops);
CREATE INDEX idx_assets_name_trgm ON assets USING GIN (name gin_trgm_ops);

-- Added: one row per (address, asset), kept in step with assets.ip_addresses by the
-- trigger below. Its primary key is what the design lacked: without it two flow
-- flushes racing on a new address create two assets for one IP, and a manual asset
-- can silently claim an address an auto-created asset already has.
CREATE TABLE asset_addresses (
    ip INET PRIMARY KEY,
    asset_id UUID NOT NULL REFERENCES assets(id) ON DELETE CASCADE
);
CREATE INDEX idx_asset_addresses_asset ON asset_addresses (asset_id);

CREATE FUNCTION flowlens_sync_asset_addresses() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM asset_addresses
        WHERE asset_id = NEW.id AND NOT (ip = ANY (NEW.ip_addresses));
    END IF;
    INSERT INTO asset_addresses (ip, asset_id)
    SELECT DISTINCT a, NEW.id FROM unnest(NEW.ip_addresses) AS a
    ON CONFLICT (ip) DO UPDATE SET asset_id = EXCLUDED.asset_id
    WHERE asset_addresses.asset_id = EXCLUDED.asset_id;
    -- An address owned by another asset is refused, not moved.
    IF EXISTS (
        SELECT 1 FROM unnest(NEW.ip_addresses) AS a
        JOIN asset_addresses aa ON aa.ip = a
        WHERE aa.asset_id <> NEW.id
    ) THEN
        RAISE EXCEPTION 'address already belongs to another asset'
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER assets_sync_addresses
    AFTER INSERT OR UPDATE OF ip_addresses ON assets
    FOR EACH ROW EXECUTE FUNCTION flowlens_sync_asset_addresses();

-- ------------------------------------------------------------ dependencies

CREATE TABLE dependencies (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    -- The client's asset depends on the server's asset's service (protocol, port).
    source_asset_id UUID NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    target_asset_id UUID NOT NULL REFERENCES assets(id) ON DELETE CASCADE,

    protocol SMALLINT NOT NULL,
    port INTEGER NOT NULL,
    inferred_service VARCHAR(50),

    first_seen TIMESTAMP WITH TIME ZONE NOT NULL,
    last_seen TIMESTAMP WITH TIME ZONE NOT NULL,
    total_bytes BIGINT DEFAULT 0,
    total_flows BIGINT DEFAULT 0,

    direction VARCHAR(20) DEFAULT 'outbound',
    is_internal BOOLEAN DEFAULT true,

    confidence REAL DEFAULT 0.5 CHECK (confidence >= 0 AND confidence <= 1),
    tags JSONB DEFAULT '{}',
    notes TEXT,

    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    -- Added: the design's DependencyRecord has these; its table did not.
    avg_flows_per_hour REAL DEFAULT 0,
    total_packets BIGINT DEFAULT 0,
    discovery_source VARCHAR(50) NOT NULL DEFAULT 'flow',

    UNIQUE (source_asset_id, target_asset_id, protocol, port)
);

CREATE INDEX idx_deps_source ON dependencies (source_asset_id);
CREATE INDEX idx_deps_target ON dependencies (target_asset_id);
CREATE INDEX idx_deps_last_seen ON dependencies (last_seen);
CREATE INDEX idx_deps_port ON dependencies (port);
CREATE INDEX idx_deps_service ON dependencies (inferred_service);

-- ----------------------------------------------------------- change events

CREATE TABLE change_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    change_type VARCHAR(50) NOT NULL,
    entity_type VARCHAR(20) NOT NULL,
    entity_id UUID NOT NULL,

    detected_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),

    before_state JSONB,
    after_state JSONB,

    processed BOOLEAN DEFAULT false,
    processed_at TIMESTAMP WITH TIME ZONE
);

CREATE INDEX idx_changes_detected ON change_events (detected_at);
CREATE INDEX idx_changes_type ON change_events (change_type);
CREATE INDEX idx_changes_entity ON change_events (entity_type, entity_id);
CREATE INDEX idx_changes_unprocessed ON change_events (processed) WHERE processed = false;

-- Added: every change event is announced on channel 'flowlens_changes' (payload: the
-- event's id, type, entity type and id) so the API can push it to WebSocket clients
-- without polling. The payload stays far below NOTIFY's 8000-byte limit.
CREATE FUNCTION flowlens_notify_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('flowlens_changes', json_build_object(
        'id', NEW.id,
        'change_type', NEW.change_type,
        'entity_type', NEW.entity_type,
        'entity_id', NEW.entity_id,
        'detected_at', NEW.detected_at
    )::text);
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER change_events_notify
    AFTER INSERT ON change_events
    FOR EACH ROW EXECUTE FUNCTION flowlens_notify_change();

-- ------------------------------------------------------------------ alerts

CREATE TABLE alerts (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),

    change_event_id UUID REFERENCES change_events(id),
    rule_id UUID,

    severity VARCHAR(20) NOT NULL,
    title VARCHAR(255) NOT NULL,
    description TEXT,

    status VARCHAR(20) DEFAULT 'open',

    created_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),
    acknowledged_by VARCHAR(100),
    acknowledged_at TIMESTAMP WITH TIME ZONE,
    resolved_by VARCHAR(100),
    resolved_at TIMESTAMP WITH TIME ZONE,

    -- Added: the alert rule's name (rules live in the daemon's config).
    rule_name VARCHAR(100)
);

CREATE INDEX idx_alerts_status ON alerts (status);
CREATE INDEX idx_alerts_severity ON alerts (severity);
CREATE INDEX idx_alerts_created ON alerts (created_at);

-- -------------------------------------------------------------- flow_stats

CREATE TABLE flow_stats (
    time TIMESTAMP WITH TIME ZONE NOT NULL,
    source_asset_id UUID NOT NULL,
    target_asset_id UUID NOT NULL,
    protocol SMALLINT NOT NULL,
    port INTEGER NOT NULL,

    flow_count INTEGER NOT NULL,
    byte_count BIGINT NOT NULL,
    packet_count BIGINT NOT NULL,

    PRIMARY KEY (time, source_asset_id, target_asset_id, protocol, port)
) PARTITION BY RANGE (time);

-- Rows for days without a partition land here (the daemon creates daily partitions
-- ahead; see flowlens_ensure_partitions).
CREATE TABLE flow_stats_default PARTITION OF flow_stats DEFAULT;

CREATE INDEX idx_flow_stats_source ON flow_stats (source_asset_id, time);
CREATE INDEX idx_flow_stats_target ON flow_stats (target_asset_id, time);

-- ---------------------------------------------------------------- flow_raw

CREATE TABLE flow_raw (
    id BIGSERIAL,
    received_at TIMESTAMP WITH TIME ZONE DEFAULT NOW(),

    exporter_ip INET NOT NULL,
    src_ip INET NOT NULL,
    dst_ip INET NOT NULL,
    src_port INTEGER NOT NULL,
    dst_port INTEGER NOT NULL,
    protocol SMALLINT NOT NULL,

    bytes BIGINT NOT NULL,
    packets INTEGER NOT NULL,
    tcp_flags SMALLINT,

    processed BOOLEAN DEFAULT false,

    -- Added: what the exporter said about time and sampling (bytes and packets stay
    -- as exported; multiply by sampling_rate for estimates).
    sampling_rate INTEGER NOT NULL DEFAULT 1,
    flow_start TIMESTAMP WITH TIME ZONE,
    flow_end TIMESTAMP WITH TIME ZONE,

    PRIMARY KEY (received_at, id)
) PARTITION BY RANGE (received_at);

CREATE TABLE flow_raw_default PARTITION OF flow_raw DEFAULT;

CREATE INDEX idx_flow_raw_unprocessed ON flow_raw (processed) WHERE processed = false;

-- -------------------------------------------------------------- audit_logs

CREATE TABLE audit_logs (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    actor VARCHAR(100) NOT NULL,       -- user name, or 'daemon'
    action VARCHAR(50) NOT NULL,       -- 'create', 'update', 'delete', 'acknowledge', ...
    entity_type VARCHAR(20) NOT NULL,
    entity_id UUID,
    details JSONB
);

CREATE INDEX idx_audit_logs_at ON audit_logs (at);
CREATE INDEX idx_audit_logs_entity ON audit_logs (entity_type, entity_id);

-- -------------------------------------------------------------- partitions

-- Creates the daily partitions of flow_raw and flow_stats from `from_day` for `days`
-- days (idempotent), and drops flow_raw partitions that ended before
-- `raw_retention_days` ago. Returns the number of partitions created. A day whose rows
-- already sit in a default partition is skipped (creating it would fail) and stays in
-- the default partition.
CREATE FUNCTION flowlens_ensure_partitions(from_day DATE, days INTEGER, raw_retention_days INTEGER)
RETURNS INTEGER AS $$
DECLARE
    d DATE;
    created INTEGER := 0;
    t TEXT;
    part RECORD;
BEGIN
    FOR i IN 0 .. days - 1 LOOP
        d := from_day + i;
        FOREACH t IN ARRAY ARRAY['flow_raw', 'flow_stats'] LOOP
            IF to_regclass(format('%s_%s', t, to_char(d, 'YYYYMMDD'))) IS NULL THEN
                BEGIN
                    EXECUTE format(
                        'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                        format('%s_%s', t, to_char(d, 'YYYYMMDD')), t,
                        d::timestamptz, (d + 1)::timestamptz);
                    created := created + 1;
                EXCEPTION WHEN check_violation THEN
                    NULL;
                END;
            END IF;
        END LOOP;
    END LOOP;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'flow_raw' AND c.relname ~ '^flow_raw_[0-9]{8}$'
    LOOP
        IF to_date(substring(part.relname FROM 10), 'YYYYMMDD') + 1
           <= current_date - raw_retention_days THEN
            EXECUTE format('DROP TABLE %I', part.relname);
        END IF;
    END LOOP;
    RETURN created;
END;
$$ LANGUAGE plpgsql;
