-- The relay's store: accounts, devices and their public keys, queued ciphertext, and the
-- metadata the rules need. No plaintext lives here.
--
-- PostgreSQL twin of migrations/sqlite/relay/0001_init.sql. The store applies it inside its
-- own schema (`search_path` is set per connection), so names are unqualified. Integers are
-- BIGINT throughout (times are Unix seconds), blobs BYTEA, flags BOOLEAN. `user` is a
-- reserved word here (it means CURRENT_USER), so the user's column is `user_address`.

-- One row per number being verified. Attempts and issued codes count per hour-long window
-- that survives reissuing, so a code cannot be brute-forced by asking for new ones. An empty
-- `code` is a burnt one.
CREATE TABLE verifications (
    phone         TEXT PRIMARY KEY,
    code          TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    window_start  BIGINT NOT NULL,
    issued        BIGINT NOT NULL
);

-- A business (WABA) and its clock; sandbox businesses may run ahead of the wall clock.
CREATE TABLE businesses (
    waba_id      TEXT PRIMARY KEY,
    sandbox      BOOLEAN NOT NULL,
    offset_secs  BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE accounts (
    address         TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('user', 'business')),
    waba_id         TEXT,
    verified_name   TEXT,
    created_at      BIGINT NOT NULL,
    -- Device ids are handed out from a counter rather than max(device_id) + 1, so an id is
    -- never given twice even if devices are removed one day: peers key sessions by it.
    -- Incrementing it also takes the account row's lock, which `accept` relies on (see
    -- src/postgres/relay/envelopes.rs).
    next_device_id  BIGINT NOT NULL DEFAULT 1
);

CREATE TABLE devices (
    account     TEXT NOT NULL REFERENCES accounts (address),
    device_id   BIGINT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    curve25519  TEXT NOT NULL,
    ed25519     TEXT NOT NULL,
    PRIMARY KEY (account, device_id)
);

-- Claimed keys stay (flagged) instead of being deleted, so that a device retrying an upload
-- cannot put a key back that someone already claimed: each is handed out at most once.
CREATE TABLE one_time_keys (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account     TEXT NOT NULL,
    device_id   BIGINT NOT NULL,
    key_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    signature   TEXT NOT NULL,
    claimed     BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (account, device_id, key_id),
    FOREIGN KEY (account, device_id) REFERENCES devices (account, device_id)
);

CREATE INDEX one_time_keys_unclaimed ON one_time_keys (account, device_id, seq) WHERE NOT claimed;

-- The key handed out when a device has no one-time key left; it is kept, `used` only notes it.
CREATE TABLE fallback_keys (
    account     TEXT NOT NULL,
    device_id   BIGINT NOT NULL,
    key_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    signature   TEXT NOT NULL,
    used        BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (account, device_id),
    FOREIGN KEY (account, device_id) REFERENCES devices (account, device_id)
);

-- Accepted submissions, for idempotent resubmission: (sender, id) is the sender's key.
CREATE TABLE submissions (
    sender       TEXT NOT NULL,
    id           TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    accepted_at  BIGINT NOT NULL,
    PRIMARY KEY (sender, id)
);

-- One row per recipient device. An identity never hands a value out twice, so a sequence
-- number is never reused after acknowledged rows are deleted: devices page through their
-- queue with `seq > after`. `accept` holds the recipient's account row lock from before the
-- rows get their numbers until it commits, so one device's numbers become visible in order.
CREATE TABLE envelopes (
    seq               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient         TEXT NOT NULL,
    recipient_device  BIGINT NOT NULL,
    id                TEXT NOT NULL,
    sender            TEXT NOT NULL,
    sender_device     BIGINT NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('message', 'receipt')),
    ts                BIGINT NOT NULL,
    body              BYTEA NOT NULL,
    FOREIGN KEY (recipient, recipient_device) REFERENCES devices (account, device_id)
);

CREATE INDEX envelopes_by_device ON envelopes (recipient, recipient_device, seq);

-- What exists between a business number and a user: consent and the service window.
-- Blocking lives apart in `blocks`, so a block never creates a relationship.
CREATE TABLE relationships (
    business          TEXT NOT NULL,
    user_address      TEXT NOT NULL,
    first_contact_at  BIGINT NOT NULL,
    origin            TEXT NOT NULL,
    last_inbound_at   BIGINT NOT NULL,
    PRIMARY KEY (business, user_address)
);

CREATE TABLE blocks (
    user_address  TEXT NOT NULL,
    business      TEXT NOT NULL,
    blocked_at    BIGINT NOT NULL,
    PRIMARY KEY (user_address, business)
);

-- Append-only audit of consent: when a contact began and how, blocks and unblocks.
CREATE TABLE consent_events (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    business      TEXT NOT NULL,
    user_address  TEXT NOT NULL,
    at            BIGINT NOT NULL,
    event         TEXT NOT NULL CHECK (event IN ('contact', 'block', 'unblock')),
    origin        TEXT
);

CREATE INDEX consent_events_by_pair ON consent_events (business, user_address, seq);
