-- Stale marks: an asset or dependency without traffic for
-- dependency_resolution.dependencies.stale_after_hours is marked once (with a
-- removed_* change event) and unmarked when traffic returns (with a new_* event).
ALTER TABLE assets ADD COLUMN stale BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE dependencies ADD COLUMN stale BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX idx_deps_stale ON dependencies (stale) WHERE stale;
