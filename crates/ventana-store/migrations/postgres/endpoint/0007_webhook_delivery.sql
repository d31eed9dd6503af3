-- Dependable webhooks.
--
-- A job is no longer deleted when delivered: it stays, `delivered`, for replay until the
-- retention runs out, and one that failed for too long stays `dead` (the dead-letter queue)
-- until redriven. Jobs with one `order_key` (the statuses of one message) go out one at a
-- time, in the order they were queued. `failing_since` is when the first of the attempts
-- failing in a row since it last entered the queue was made, on its business's clock (a
-- sandbox's test clock included): the gateway gives up on it that long after.
ALTER TABLE webhooks ADD COLUMN phone_number_id TEXT;
ALTER TABLE webhooks ADD COLUMN order_key TEXT;
ALTER TABLE webhooks ADD COLUMN state TEXT NOT NULL DEFAULT 'queued'
    CHECK (state IN ('queued', 'delivered', 'dead'));
ALTER TABLE webhooks ADD COLUMN failing_since BIGINT;
ALTER TABLE webhooks ADD COLUMN settled_at BIGINT;

DROP INDEX webhooks_by_due;
CREATE INDEX webhooks_due ON webhooks (next_attempt_at) WHERE state = 'queued';
CREATE INDEX webhooks_in_order ON webhooks (order_key) WHERE state = 'queued';
CREATE INDEX webhooks_by_business ON webhooks (waba_id, created_at);

-- Every attempt at delivering an event: the delivery log a business reads.
CREATE TABLE webhook_attempts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    waba_id      TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    node         TEXT NOT NULL,
    at_ms        BIGINT NOT NULL,
    url          TEXT,
    http_status  BIGINT,
    latency_ms   BIGINT NOT NULL,
    error        TEXT
);

CREATE INDEX webhook_attempts_by_business ON webhook_attempts (waba_id, id);
CREATE INDEX webhook_attempts_by_time ON webhook_attempts (at_ms);

-- Where a business's events go, as the Cloud API configures it: the app's subscription
-- (`webhook_url`, `verify_token_sealed` and `webhook_fields`), the WABA's override
-- (`override_callback_url`, set through `subscribed_apps`) and a number's override. A number's
-- wins over the WABA's, which wins over the app's. An unsubscribed business gets none.
ALTER TABLE businesses ADD COLUMN webhook_fields TEXT;
ALTER TABLE businesses ADD COLUMN subscribed BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE businesses ADD COLUMN override_callback_url TEXT;
ALTER TABLE businesses ADD COLUMN override_verify_token_sealed BYTEA;
ALTER TABLE phone_numbers ADD COLUMN callback_url TEXT;
ALTER TABLE phone_numbers ADD COLUMN verify_token_sealed BYTEA;

-- A send's `biz_opaque_callback_data`, sealed, echoed on every status of the message. Kept
-- as long as dead letters, so a redriven status still carries it.
CREATE TABLE message_callback_data (
    owner        TEXT NOT NULL,
    message_id   TEXT NOT NULL,
    data_sealed  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (owner, message_id)
);

CREATE INDEX message_callback_data_by_age ON message_callback_data (created_at);
