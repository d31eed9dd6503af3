-- Several nodes: a webhook job is leased to one node while it delivers it, and each hosted
-- number's endpoint is owned by one node at a time. A lease that runs out (its node died) is
-- free for another node to take.
ALTER TABLE webhooks ADD COLUMN leased_by TEXT;
ALTER TABLE webhooks ADD COLUMN lease_until BIGINT;

CREATE TABLE endpoint_leases (
    owner       TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
