-- Partition upkeep while the daemon runs (issue 12): daily partitions of flow_raw and
-- flow_stats kept ahead of the clock, days that landed in a default partition moved
-- into a partition of their own, and retention for both tables. The daemon calls
-- flowlens_maintain_partitions at start and every
-- dependency_resolution.change_detection.check_interval_seconds.
--
-- Several daemons (and anything else that creates partitions) may run this at once:
-- each table's upkeep holds a transaction-scoped advisory lock, so a second caller
-- waits for the first and then finds the partitions made.

-- The column `parent` is partitioned by.
CREATE FUNCTION flowlens_partition_column(parent TEXT)
RETURNS TEXT AS $$
    SELECT CASE parent WHEN 'flow_raw' THEN 'received_at' ELSE 'time' END;
$$ LANGUAGE sql IMMUTABLE;

-- The partition of `parent` for day `d`, created if missing; rows of that day found in
-- the default partition are moved into it. Returns the rows moved, or -1 when the
-- partition already existed. The partition is made as a plain table, filled, then
-- attached, because PostgreSQL refuses to create a partition whose rows sit in the
-- default partition.
CREATE FUNCTION flowlens_partition_day(parent TEXT, d DATE)
RETURNS BIGINT AS $$
DECLARE
    name TEXT := format('%s_%s', parent, to_char(d, 'YYYYMMDD'));
    col TEXT := flowlens_partition_column(parent);
    moved BIGINT;
BEGIN
    IF to_regclass(name) IS NOT NULL THEN
        RETURN -1;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)%s',
        name, parent,
        CASE WHEN parent = 'flow_stats' THEN ' WITH (fillfactor = 50)' ELSE '' END);
    EXECUTE format(
        'WITH m AS (DELETE FROM %I WHERE %I >= %L AND %I < %L RETURNING *) '
        'INSERT INTO %I SELECT * FROM m',
        parent || '_default', col, d::timestamptz, col, (d + 1)::timestamptz, name);
    GET DIAGNOSTICS moved = ROW_COUNT;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        parent, name, d::timestamptz, (d + 1)::timestamptz);
    RETURN moved;
END;
$$ LANGUAGE plpgsql;

-- Drops the daily partitions of `parent` whose day ended `keep` days ago or earlier (0
-- keeps them all). Returns how many were dropped.
CREATE FUNCTION flowlens_drop_expired(parent TEXT, keep INTEGER)
RETURNS INTEGER AS $$
DECLARE
    part RECORD;
    dropped INTEGER := 0;
BEGIN
    IF keep <= 0 THEN
        RETURN 0;
    END IF;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = parent AND c.relname ~ ('^' || parent || '_[0-9]{8}$')
    LOOP
        IF to_date(right(part.relname, 8), 'YYYYMMDD') + 1 <= current_date - keep THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END;
$$ LANGUAGE plpgsql;

-- Upkeep of both tables: partitions for today and `days_ahead` days after it, every
-- day found in a default partition given its own partition (or deleted when it is past
-- retention), and partitions past retention dropped (0 days = keep forever). Returns
-- what it did.
CREATE FUNCTION flowlens_maintain_partitions(
    days_ahead INTEGER, raw_retention_days INTEGER, stats_retention_days INTEGER)
RETURNS TABLE (created INTEGER, moved_rows BIGINT, dropped INTEGER, expired_rows BIGINT) AS $$
DECLARE
    t TEXT;
    col TEXT;
    keep INTEGER;
    d DATE;
    n BIGINT;
BEGIN
    created := 0;
    moved_rows := 0;
    dropped := 0;
    expired_rows := 0;
    FOREACH t IN ARRAY ARRAY['flow_raw', 'flow_stats'] LOOP
        col := flowlens_partition_column(t);
        keep := CASE t WHEN 'flow_raw' THEN raw_retention_days ELSE stats_retention_days END;
        PERFORM pg_advisory_xact_lock(hashtext('flowlens_partitions'), hashtext(t));
        -- Days in the default partition (the daemon was down, or its clock jumped).
        FOR d IN EXECUTE format('SELECT DISTINCT (%I)::date FROM %I', col, t || '_default')
        LOOP
            IF keep > 0 AND d + 1 <= current_date - keep THEN
                EXECUTE format('DELETE FROM %I WHERE %I >= %L AND %I < %L',
                    t || '_default', col, d::timestamptz, col, (d + 1)::timestamptz);
                GET DIAGNOSTICS n = ROW_COUNT;
                expired_rows := expired_rows + n;
                CONTINUE;
            END IF;
            n := flowlens_partition_day(t, d);
            IF n >= 0 THEN
                created := created + 1;
                moved_rows := moved_rows + n;
            END IF;
        END LOOP;
        FOR i IN 0 .. days_ahead LOOP
            IF flowlens_partition_day(t, current_date + i) >= 0 THEN
                created := created + 1;
            END IF;
        END LOOP;
        dropped := dropped + flowlens_drop_expired(t, keep);
    END LOOP;
    RETURN NEXT;
END;
$$ LANGUAGE plpgsql;

-- The start-up helper of earlier versions (an older daemon may still call it during an
-- upgrade), now made of the functions above and under the same lock, so that it cannot
-- race the upkeep. A day whose rows sit in a default partition is now moved into its
-- own partition instead of being skipped.
CREATE OR REPLACE FUNCTION flowlens_ensure_partitions(from_day DATE, days INTEGER, raw_retention_days INTEGER)
RETURNS INTEGER AS $$
DECLARE
    created INTEGER := 0;
    t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['flow_raw', 'flow_stats'] LOOP
        PERFORM pg_advisory_xact_lock(hashtext('flowlens_partitions'), hashtext(t));
        FOR i IN 0 .. days - 1 LOOP
            IF flowlens_partition_day(t, from_day + i) >= 0 THEN
                created := created + 1;
            END IF;
        END LOOP;
    END LOOP;
    PERFORM flowlens_drop_expired('flow_raw', raw_retention_days);
    RETURN created;
END;
$$ LANGUAGE plpgsql;
