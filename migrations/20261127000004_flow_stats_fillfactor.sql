-- Room on each flow_stats page for the next version of its rows: a flush updates the
-- same (window, edge) rows again and again, and only their counters, which no index
-- covers, so with free space the updates are HOT (no index entries to add).
ALTER TABLE flow_stats_default SET (fillfactor = 50);
DO $$
DECLARE part RECORD;
BEGIN
    FOR part IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'flow_stats'
    LOOP
        EXECUTE format('ALTER TABLE %I SET (fillfactor = 50)', part.relname);
    END LOOP;
END $$;

CREATE OR REPLACE FUNCTION flowlens_ensure_partitions(from_day DATE, days INTEGER, raw_retention_days INTEGER)
RETURNS INTEGER AS $$
DECLARE
    d DATE;
    created INTEGER := 0;
    t TEXT;
    part RECORD;
BEGIN
    FOR i IN 0 .. days - 1 LOOP
        d := from_day + i;
        FOREACH t IN ARRAY ARRAY['flow_raw', 'flow_stats'] LOOP
            IF to_regclass(format('%s_%s', t, to_char(d, 'YYYYMMDD'))) IS NULL THEN
                BEGIN
                    EXECUTE format(
                        'CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)%s',
                        format('%s_%s', t, to_char(d, 'YYYYMMDD')), t,
                        d::timestamptz, (d + 1)::timestamptz,
                        CASE WHEN t = 'flow_stats' THEN ' WITH (fillfactor = 50)' ELSE '' END);
                    created := created + 1;
                EXCEPTION WHEN check_violation THEN
                    NULL;
                END;
            END IF;
        END LOOP;
    END LOOP;
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        WHERE p.relname = 'flow_raw' AND c.relname ~ '^flow_raw_[0-9]{8}$'
    LOOP
        IF to_date(substring(part.relname FROM 10), 'YYYYMMDD') + 1
           <= current_date - raw_retention_days THEN
            EXECUTE format('DROP TABLE %I', part.relname);
        END IF;
    END LOOP;
    RETURN created;
END;
$$ LANGUAGE plpgsql;

