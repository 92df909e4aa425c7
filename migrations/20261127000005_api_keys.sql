-- API keys for long-lived integrations (the API's X-API-Key header). Only a SHA-256
-- hash of each key is stored: a database dump does not hand out credentials. `prefix`
-- (the key's first characters) lets people tell their keys apart in listings.
CREATE TABLE api_keys (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    name VARCHAR(100) NOT NULL,
    role VARCHAR(20) NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    key_hash CHAR(64) NOT NULL UNIQUE,
    prefix VARCHAR(16) NOT NULL,
    created_by VARCHAR(100) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE NOT NULL DEFAULT NOW(),
    last_used_at TIMESTAMP WITH TIME ZONE,
    revoked_at TIMESTAMP WITH TIME ZONE
);
