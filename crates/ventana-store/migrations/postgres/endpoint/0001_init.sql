-- An end-to-end endpoint's store: a user device, or a gateway hosting several business
-- numbers (told apart by `owner`). Secrets arrive sealed by the caller; this schema holds bytes.
--
-- PostgreSQL twin of migrations/sqlite/endpoint/0001_init.sql, applied inside the store's own
-- schema (`search_path` is set per connection). Integers are BIGINT (times are Unix seconds),
-- blobs BYTEA, flags BOOLEAN. Where SQLite orders by `rowid`, these tables have a `written`
-- identity column instead.

-- Who each endpoint is at the relay: its sealed Olm account and sealed relay token.
CREATE TABLE identities (
    owner               TEXT PRIMARY KEY,
    device_id           BIGINT NOT NULL,
    relay_token_sealed  BYTEA NOT NULL,
    account_sealed      BYTEA NOT NULL,
    display_name        TEXT NOT NULL
);

-- Sealed Olm sessions. `version` counts writes of one session, for compare-and-swap.
-- `recency` orders the sessions with one peer device by last write: `updated_at` has whole
-- seconds only, and the sender must pick the session last used, not one of a tie. It is
-- drawn from `session_recency` on every write, so no two writes share one, on any node.
CREATE SEQUENCE session_recency;

CREATE TABLE sessions (
    owner        TEXT NOT NULL,
    peer         TEXT NOT NULL,
    peer_device  BIGINT NOT NULL,
    session_id   TEXT NOT NULL,
    sealed       BYTEA NOT NULL,
    version      BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    recency      BIGINT NOT NULL,
    PRIMARY KEY (owner, peer, peer_device, session_id)
);

-- Encrypted submissions not yet settled with the relay; a retry resends these exact bytes.
CREATE TABLE outbox (
    owner       TEXT NOT NULL,
    id          TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    submission  BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    written     BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (owner, id)
);

-- Envelopes already processed, by (sender, id), so a redelivery is not decrypted twice.
CREATE TABLE processed (
    owner         TEXT NOT NULL,
    sender        TEXT NOT NULL,
    id            TEXT NOT NULL,
    processed_at  BIGINT NOT NULL,
    PRIMARY KEY (owner, sender, id)
);

-- History. The direction is part of the key: a peer chooses its own ids.
CREATE TABLE messages (
    owner        TEXT NOT NULL,
    id           TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer         TEXT NOT NULL,
    peer_device  BIGINT,
    kind         TEXT NOT NULL CHECK (kind IN ('message', 'receipt')),
    ts           BIGINT NOT NULL,
    body_sealed  BYTEA NOT NULL,
    status       TEXT NOT NULL
                 CHECK (status IN ('received', 'accepted', 'sent', 'failed', 'delivered', 'read')),
    written      BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (owner, id, direction)
);

CREATE INDEX messages_by_time ON messages (owner, ts);

-- Each peer's profile as last seen, sealed.
CREATE TABLE contacts (
    owner           TEXT NOT NULL,
    peer            TEXT NOT NULL,
    profile_sealed  BYTEA NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (owner, peer)
);

-- The gateway's tables. A user device's store leaves them empty.

CREATE TABLE businesses (
    waba_id              TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    app_secret_sealed    BYTEA NOT NULL,
    webhook_url          TEXT,
    verify_token_sealed  BYTEA NOT NULL,
    sandbox              BOOLEAN NOT NULL,
    created_at           BIGINT NOT NULL
);

CREATE TABLE phone_numbers (
    id                    TEXT PRIMARY KEY,
    waba_id               TEXT NOT NULL REFERENCES businesses (waba_id),
    address               TEXT NOT NULL UNIQUE,
    display_phone_number  TEXT NOT NULL,
    verified_name         TEXT NOT NULL,
    created_at            BIGINT NOT NULL
);

CREATE TABLE access_tokens (
    id          TEXT PRIMARY KEY,
    waba_id     TEXT NOT NULL REFERENCES businesses (waba_id),
    token_hash  TEXT NOT NULL UNIQUE,
    label       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE INDEX access_tokens_by_business ON access_tokens (waba_id);

-- Webhook events waiting for delivery. Written in the same transaction as the message they
-- report, so none is lost between decrypting and notifying.
CREATE TABLE webhooks (
    id               TEXT PRIMARY KEY,
    waba_id          TEXT NOT NULL,
    body_sealed      BYTEA NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_at  BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    last_error       TEXT,
    written          BIGINT GENERATED ALWAYS AS IDENTITY
);

CREATE INDEX webhooks_by_due ON webhooks (next_attempt_at);
