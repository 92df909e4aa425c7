-- A steady flush updates the same dependencies and assets again and again, and moves
-- their last_seen each time. With an index on last_seen every such update is a new
-- tuple in every index of the table (for assets: GIN indexes on addresses, tags and
-- names among them), the flush rewrites all of it, and the tables and indexes bloat.
-- Without it, and with room on each page, the updates are HOT: the tuple is replaced
-- in its page and no index is touched. Queries by last_seen (the API's `since`, stale
-- detection every few minutes) scan the table instead: tens of thousands of rows.
DROP INDEX IF EXISTS idx_deps_last_seen;
DROP INDEX IF EXISTS idx_assets_last_seen;
ALTER TABLE dependencies SET (fillfactor = 70);
ALTER TABLE assets SET (fillfactor = 70);
