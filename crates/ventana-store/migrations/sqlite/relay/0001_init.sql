-- The relay's store: accounts, devices and their public keys, queued ciphertext, and the
-- metadata the rules need. No plaintext lives here.

-- One pending code per number, for proving control of it.
-- One row per number being verified. Attempts and issued codes count per hour-long window
-- that survives reissuing, so a code cannot be brute-forced by asking for new ones. An empty
-- `code` is a burnt one.
CREATE TABLE verifications (
    phone         TEXT PRIMARY KEY,
    code          TEXT NOT NULL,
    expires_at    INTEGER NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    window_start  INTEGER NOT NULL,
    issued        INTEGER NOT NULL
) STRICT;

-- A business (WABA) and its clock; sandbox businesses may run ahead of the wall clock.
CREATE TABLE businesses (
    waba_id      TEXT PRIMARY KEY,
    sandbox      INTEGER NOT NULL CHECK (sandbox IN (0, 1)),
    offset_secs  INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE accounts (
    address         TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('user', 'business')),
    waba_id         TEXT,
    verified_name   TEXT,
    created_at      INTEGER NOT NULL,
    -- Device ids are handed out from a counter rather than max(device_id) + 1, so an id is
    -- never given twice even if devices are removed one day: peers key sessions by it.
    next_device_id  INTEGER NOT NULL DEFAULT 1
) STRICT;

CREATE TABLE devices (
    account     TEXT NOT NULL REFERENCES accounts (address),
    device_id   INTEGER NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    curve25519  TEXT NOT NULL,
    ed25519     TEXT NOT NULL,
    PRIMARY KEY (account, device_id)
) STRICT;

-- Claimed keys stay (flagged) instead of being deleted, so that a device retrying an upload
-- cannot put a key back that someone already claimed: each is handed out at most once.
CREATE TABLE one_time_keys (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    account     TEXT NOT NULL,
    device_id   INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    signature   TEXT NOT NULL,
    claimed     INTEGER NOT NULL DEFAULT 0 CHECK (claimed IN (0, 1)),
    UNIQUE (account, device_id, key_id),
    FOREIGN KEY (account, device_id) REFERENCES devices (account, device_id)
) STRICT;

CREATE INDEX one_time_keys_unclaimed ON one_time_keys (account, device_id, seq) WHERE claimed = 0;

-- The key handed out when a device has no one-time key left; it is kept, `used` only notes it.
CREATE TABLE fallback_keys (
    account     TEXT NOT NULL,
    device_id   INTEGER NOT NULL,
    key_id      TEXT NOT NULL,
    key         TEXT NOT NULL,
    signature   TEXT NOT NULL,
    used        INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1)),
    PRIMARY KEY (account, device_id),
    FOREIGN KEY (account, device_id) REFERENCES devices (account, device_id)
) STRICT;

-- Accepted submissions, for idempotent resubmission: (sender, id) is the sender's key.
CREATE TABLE submissions (
    sender       TEXT NOT NULL,
    id           TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    accepted_at  INTEGER NOT NULL,
    PRIMARY KEY (sender, id)
) STRICT, WITHOUT ROWID;

-- One row per recipient device. AUTOINCREMENT so a sequence number is never reused after
-- acknowledged rows are deleted: devices page through their queue with `seq > after`.
CREATE TABLE envelopes (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient         TEXT NOT NULL,
    recipient_device  INTEGER NOT NULL,
    id                TEXT NOT NULL,
    sender            TEXT NOT NULL,
    sender_device     INTEGER NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('message', 'receipt')),
    ts                INTEGER NOT NULL,
    body              BLOB NOT NULL,
    FOREIGN KEY (recipient, recipient_device) REFERENCES devices (account, device_id)
) STRICT;

CREATE INDEX envelopes_by_device ON envelopes (recipient, recipient_device, seq);

-- What exists between a business number and a user: consent and the service window.
-- Blocking lives apart in `blocks`, so a block never creates a relationship.
CREATE TABLE relationships (
    business          TEXT NOT NULL,
    user              TEXT NOT NULL,
    first_contact_at  INTEGER NOT NULL,
    origin            TEXT NOT NULL,
    last_inbound_at   INTEGER NOT NULL,
    PRIMARY KEY (business, user)
) STRICT, WITHOUT ROWID;

CREATE TABLE blocks (
    user        TEXT NOT NULL,
    business    TEXT NOT NULL,
    blocked_at  INTEGER NOT NULL,
    PRIMARY KEY (user, business)
) STRICT, WITHOUT ROWID;

-- Append-only audit of consent: when a contact began and how, blocks and unblocks.
CREATE TABLE consent_events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    business  TEXT NOT NULL,
    user      TEXT NOT NULL,
    at        INTEGER NOT NULL,
    event     TEXT NOT NULL CHECK (event IN ('contact', 'block', 'unblock')),
    origin    TEXT
) STRICT;

CREATE INDEX consent_events_by_pair ON consent_events (business, user, seq);
