-- Set-based upkeep of asset_addresses on INSERT: the row trigger of the first
-- migration ran three statements per asset (~0.5 ms each), so the first flush of a
-- network with tens of thousands of addresses spent its time there. Inserts now go
-- through one statement-level trigger over the transition table; updates of
-- ip_addresses (rare: an operator editing an asset) keep the row trigger.

DROP TRIGGER assets_sync_addresses ON assets;

CREATE TRIGGER assets_sync_addresses_update
    AFTER UPDATE OF ip_addresses ON assets
    FOR EACH ROW EXECUTE FUNCTION flowlens_sync_asset_addresses();

CREATE FUNCTION flowlens_insert_asset_addresses() RETURNS trigger AS $$
BEGIN
    INSERT INTO asset_addresses (ip, asset_id)
    SELECT DISTINCT a, n.id FROM new_assets n, unnest(n.ip_addresses) AS a
    ON CONFLICT (ip) DO NOTHING;
    -- An address another asset owns (before this statement, or claimed twice within
    -- it) is refused.
    IF EXISTS (
        SELECT 1 FROM new_assets n, unnest(n.ip_addresses) AS a
        JOIN asset_addresses aa ON aa.ip = a
        WHERE aa.asset_id <> n.id
    ) THEN
        RAISE EXCEPTION 'address already belongs to another asset'
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER assets_sync_addresses_insert
    AFTER INSERT ON assets
    REFERENCING NEW TABLE AS new_assets
    FOR EACH STATEMENT EXECUTE FUNCTION flowlens_insert_asset_addresses();
