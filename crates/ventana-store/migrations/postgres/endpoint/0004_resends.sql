-- Where each outbox copy stands in its session (a copy another writer moved past is
-- encrypted again before it is sent), and resends a recipient asked for with a retry
-- receipt: the attempt of an outbox row, and how many resends a message had in all.
ALTER TABLE outbox ADD COLUMN sessions TEXT NOT NULL DEFAULT '';
ALTER TABLE outbox ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN resends BIGINT NOT NULL DEFAULT 0;
