-- Pods grouped by workload: the graph writer finds a workload's asset by its
-- `cloud_instance_id` (`<namespace>/<kind>/<name>`) whenever a new pod address shows
-- up in flows.
CREATE INDEX IF NOT EXISTS idx_assets_kubernetes_instance
    ON assets (cloud_instance_id)
    WHERE cloud_provider = 'kubernetes';
