-- The assets an inventory described: what the graph writer looks through when
-- addresses leave every inventory (a pod deleted, an instance terminated), at each
-- new publication. Few of the assets in a large graph, so a partial index.
CREATE INDEX IF NOT EXISTS idx_assets_inventory_described
    ON assets (cloud_provider)
    WHERE inventory_seen_at IS NOT NULL AND cloud_provider IS NOT NULL;
