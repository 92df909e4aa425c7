-- What a person set wins over what flows say, until a person changes it again.
--
-- dependencies.user_fields: the fields of a dependency a person set through the API
-- (confidence, tags, notes). The daemon never overwrites them: a flush raises a
-- flow-derived confidence with new evidence, but leaves one a person lowered alone.
-- A declared dependency (discovery_source 'manual') is a person's in every field, and
-- silence does not make it stale.
ALTER TABLE dependencies ADD COLUMN user_fields TEXT[] NOT NULL DEFAULT '{}';
UPDATE dependencies SET user_fields = ARRAY['confidence', 'tags', 'notes']
 WHERE discovery_source = 'manual';

-- A dependency a person deleted through the API: flows that still show it do not
-- create it again (declaring it through the API lifts this). Goes with either asset.
CREATE TABLE dependency_suppressions (
    source_asset_id UUID NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    target_asset_id UUID NOT NULL REFERENCES assets(id) ON DELETE CASCADE,
    protocol SMALLINT NOT NULL,
    port INTEGER NOT NULL,
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- The caller's subject (user or API key), for the audit trail.
    deleted_by TEXT,
    PRIMARY KEY (source_asset_id, target_asset_id, protocol, port)
);

-- Assets deleted, by whatever means (the API, psql): a daemon that cached an asset's
-- id reads this before each flush and forgets the id, so no row of a flush refers to
-- a deleted asset (flow_stats has no foreign key). Kept a week by the daemon's upkeep.
CREATE TABLE deleted_assets (
    seq BIGSERIAL PRIMARY KEY,
    asset_id UUID NOT NULL,
    deleted_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE FUNCTION flowlens_record_deleted_asset() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO deleted_assets (asset_id) VALUES (OLD.id);
    RETURN OLD;
END;
$$;

CREATE TRIGGER assets_record_deletion AFTER DELETE ON assets
    FOR EACH ROW EXECUTE FUNCTION flowlens_record_deleted_asset();
