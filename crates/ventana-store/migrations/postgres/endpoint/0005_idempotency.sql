-- Idempotency keys of sends (gateway side). A business retries a send under the same key
-- when it lost the answer; the key was claimed with the message id the send carries, so the
-- retry finishes or reports that same message. `fingerprint` is the SHA-256 of the request
-- (a different request under a used key is refused). A row moves in_progress -> completed
-- (with the answer to replay); an in_progress claim past `claimed_until` is taken over by
-- compare-and-swap on `attempt`. Rows are pruned after the retention period (`created_at`).
CREATE TABLE idempotency_keys (
    phone_number_id  TEXT NOT NULL,
    key              TEXT NOT NULL,
    fingerprint      BYTEA NOT NULL,
    message_id       TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    attempt          BIGINT NOT NULL,
    claimed_until    BIGINT NOT NULL,
    response_status  BIGINT,
    response_body    TEXT,
    created_at       BIGINT NOT NULL,
    PRIMARY KEY (phone_number_id, key)
);

CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);
