-- The partial index on unclaimed one-time keys says `WHERE NOT claimed`, as in PostgreSQL:
-- SQLite uses a partial index only for a query carrying the same term, and the statements
-- both backends share ask for `NOT claimed`.
DROP INDEX one_time_keys_unclaimed;
CREATE INDEX one_time_keys_unclaimed ON one_time_keys (account, device_id, seq) WHERE NOT claimed;
