-- What exporters say about themselves over SNMP (enrichment.snmp): the router's
-- sysName and its interfaces (ifIndex -> name, alias, speed), so flows can say
-- which router and which interfaces they crossed.
CREATE TABLE IF NOT EXISTS exporters (
    exporter_ip INET PRIMARY KEY,
    sys_name TEXT,
    -- {"<ifIndex>": {"name": "...", "alias": "...", "speed_bps": 10000000000}}
    interfaces JSONB NOT NULL DEFAULT '{}'::jsonb,
    polled_at TIMESTAMP WITH TIME ZONE,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW()
);

-- Each raw flow's interfaces, and their names and the exporter's when SNMP knew
-- them as the flow was written.
ALTER TABLE flow_raw
    ADD COLUMN IF NOT EXISTS exporter_name TEXT,
    ADD COLUMN IF NOT EXISTS input_interface BIGINT,
    ADD COLUMN IF NOT EXISTS output_interface BIGINT,
    ADD COLUMN IF NOT EXISTS input_if_name TEXT,
    ADD COLUMN IF NOT EXISTS output_if_name TEXT;
