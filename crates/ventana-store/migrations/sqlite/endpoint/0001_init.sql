-- An end-to-end endpoint's store: a user device, or a gateway hosting several business
-- numbers (told apart by `owner`). Secrets arrive sealed by the caller; this file holds bytes.

-- Who each endpoint is at the relay: its sealed Olm account and sealed relay token.
CREATE TABLE identities (
    owner               TEXT PRIMARY KEY,
    device_id           INTEGER NOT NULL,
    relay_token_sealed  BLOB NOT NULL,
    account_sealed      BLOB NOT NULL,
    display_name        TEXT NOT NULL
) STRICT;

-- Sealed Olm sessions. `version` counts writes of one session, for compare-and-swap.
-- `recency` orders the sessions with one peer device by last write: `updated_at` has whole
-- seconds only, and the sender must pick the session last used, not one of a tie.
CREATE TABLE sessions (
    owner        TEXT NOT NULL,
    peer         TEXT NOT NULL,
    peer_device  INTEGER NOT NULL,
    session_id   TEXT NOT NULL,
    sealed       BLOB NOT NULL,
    version      INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    recency      INTEGER NOT NULL,
    PRIMARY KEY (owner, peer, peer_device, session_id)
) STRICT;

-- Encrypted submissions not yet settled with the relay; a retry resends these exact bytes.
CREATE TABLE outbox (
    owner       TEXT NOT NULL,
    id          TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    submission  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (owner, id)
) STRICT;

-- Envelopes already processed, by (sender, id), so a redelivery is not decrypted twice.
CREATE TABLE processed (
    owner         TEXT NOT NULL,
    sender        TEXT NOT NULL,
    id            TEXT NOT NULL,
    processed_at  INTEGER NOT NULL,
    PRIMARY KEY (owner, sender, id)
) STRICT, WITHOUT ROWID;

-- History. The direction is part of the key: a peer chooses its own ids.
CREATE TABLE messages (
    owner        TEXT NOT NULL,
    id           TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer         TEXT NOT NULL,
    peer_device  INTEGER,
    kind         TEXT NOT NULL CHECK (kind IN ('message', 'receipt')),
    ts           INTEGER NOT NULL,
    body_sealed  BLOB NOT NULL,
    status       TEXT NOT NULL
                 CHECK (status IN ('received', 'accepted', 'sent', 'failed', 'delivered', 'read')),
    PRIMARY KEY (owner, id, direction)
) STRICT;

CREATE INDEX messages_by_time ON messages (owner, ts);

-- Each peer's profile as last seen, sealed.
CREATE TABLE contacts (
    owner           TEXT NOT NULL,
    peer            TEXT NOT NULL,
    profile_sealed  BLOB NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (owner, peer)
) STRICT, WITHOUT ROWID;

-- The gateway's tables. A user device's file leaves them empty.

CREATE TABLE businesses (
    waba_id              TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    app_secret_sealed    BLOB NOT NULL,
    webhook_url          TEXT,
    verify_token_sealed  BLOB NOT NULL,
    sandbox              INTEGER NOT NULL CHECK (sandbox IN (0, 1)),
    created_at           INTEGER NOT NULL
) STRICT;

CREATE TABLE phone_numbers (
    id                    TEXT PRIMARY KEY,
    waba_id               TEXT NOT NULL REFERENCES businesses (waba_id),
    address               TEXT NOT NULL UNIQUE,
    display_phone_number  TEXT NOT NULL,
    verified_name         TEXT NOT NULL,
    created_at            INTEGER NOT NULL
) STRICT;

CREATE TABLE access_tokens (
    id          TEXT PRIMARY KEY,
    waba_id     TEXT NOT NULL REFERENCES businesses (waba_id),
    token_hash  TEXT NOT NULL UNIQUE,
    label       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
) STRICT;

CREATE INDEX access_tokens_by_business ON access_tokens (waba_id);

-- Webhook events waiting for delivery. Written in the same transaction as the message they
-- report, so none is lost between decrypting and notifying.
CREATE TABLE webhooks (
    id               TEXT PRIMARY KEY,
    waba_id          TEXT NOT NULL,
    body_sealed      BLOB NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    last_error       TEXT
) STRICT;

CREATE INDEX webhooks_by_due ON webhooks (next_attempt_at);
