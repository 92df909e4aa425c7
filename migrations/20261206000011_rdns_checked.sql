-- When the daemon last settled an asset's reverse-DNS lookup (a name, or none). Assets
-- never checked (created while lookups were off, or dropped from a full queue, or by a
-- daemon that restarted before the answer came) and those checked more than a week ago
-- are queued again by the daemon's upkeep, a bounded number at a time.
ALTER TABLE assets ADD COLUMN rdns_checked_at TIMESTAMPTZ;
CREATE INDEX idx_assets_rdns_checked ON assets (rdns_checked_at NULLS FIRST)
    WHERE discovery_source = 'flow';
