-- Several API instances share one database (design §8). A scan runs in the instance
-- that accepted it, which now says it is alive by writing heartbeat_at with every
-- progress update (each second). Another instance starting up, or sweeping
-- periodically, fails only scans whose heartbeat has stopped, instead of every scan
-- left queued or running (which failed the scans of instances still alive).
ALTER TABLE discovery_scans
    ADD COLUMN heartbeat_at TIMESTAMP WITH TIME ZONE,
    -- The API process running the scan (a random id per process), for operators.
    ADD COLUMN instance_id UUID;
