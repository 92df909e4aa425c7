-- What the clouds' and clusters' own APIs say an asset is (issue 16). The design's
-- cloud_provider ('aws', 'azure', 'gcp', 'kubernetes'), cloud_region and
-- cloud_instance_id (the instance, NIC or pod the address belongs to) are filled by
-- the daemon's inventory stage; these columns carry the rest.
ALTER TABLE assets
    ADD COLUMN cloud_account TEXT,        -- AWS account, Azure subscription, GCP project
    ADD COLUMN cloud_zone TEXT,
    ADD COLUMN instance_type TEXT,        -- machine type / VM size
    ADD COLUMN vpc TEXT,                  -- VPC, VNet or network
    ADD COLUMN subnet TEXT,
    ADD COLUMN cluster TEXT,              -- Kubernetes
    ADD COLUMN namespace TEXT,
    ADD COLUMN workload_kind TEXT,        -- Deployment, StatefulSet, DaemonSet, Job, ...
    ADD COLUMN workload TEXT,
    -- The name the inventory gave, so a rename there renames the asset, while a name a
    -- person set (neither the address, the reverse-DNS name nor this) is never touched.
    ADD COLUMN inventory_name TEXT,
    -- When the inventory last changed what it says about the asset.
    ADD COLUMN inventory_seen_at TIMESTAMPTZ;

-- A cloud instance id is longer than the design's 100 characters for some providers
-- (Azure resource ids run to several hundred).
ALTER TABLE assets ALTER COLUMN cloud_instance_id TYPE TEXT;
ALTER TABLE assets ALTER COLUMN cloud_region TYPE TEXT;

CREATE INDEX idx_assets_cloud_account ON assets (cloud_account) WHERE cloud_account IS NOT NULL;
CREATE INDEX idx_assets_namespace ON assets (namespace) WHERE namespace IS NOT NULL;
CREATE INDEX idx_assets_workload ON assets (workload) WHERE workload IS NOT NULL;
