-- Dynamic server ports (passive FTP data, ports the RPC endpoint mapper hands out, RTP
-- media) fold into one dependency per client, server and protocol on port 0, with
-- inferred_service 'dynamic' (see the daemon's resolve/dynamic_ports.rs). The range of
-- real ports it stands for is kept here; NULL for every other dependency.
ALTER TABLE dependencies
    ADD COLUMN port_range_min INTEGER,
    ADD COLUMN port_range_max INTEGER;
