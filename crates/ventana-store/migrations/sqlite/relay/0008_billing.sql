-- Pricing policy versions: every version the operator loaded, kept with its effective time.
-- A message is rated by the newest version in force when it was delivered; a version is
-- never changed once loaded (a change is a new version).
CREATE TABLE policy_versions (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    version        TEXT NOT NULL UNIQUE,
    effective_from INTEGER NOT NULL,
    digest         TEXT NOT NULL,
    text           TEXT NOT NULL,
    loaded_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX policy_versions_effective ON policy_versions (effective_from, seq);

-- What a business message is for pricing, fixed when it is accepted (the window as it stood
-- then): business messages to users only.
ALTER TABLE submissions ADD COLUMN waba_id TEXT;
ALTER TABLE submissions ADD COLUMN category TEXT;
ALTER TABLE submissions ADD COLUMN template INTEGER;
ALTER TABLE submissions ADD COLUMN window_state TEXT;
ALTER TABLE submissions ADD COLUMN manual INTEGER;
-- One id, one message per business, whichever of its numbers sent it (the ledger's key).
CREATE INDEX submissions_by_business ON submissions (waba_id, id) WHERE waba_id IS NOT NULL;

ALTER TABLE ledger ADD COLUMN conversation_id TEXT;
CREATE INDEX ledger_delivered ON ledger (waba_id, delivered_at);

-- Usage per business, month and category, counted as entries are appended, so rating reads
-- one row set instead of the month's entries: messages counted toward tiers and bands, and
-- conversations opened.
CREATE TABLE billing_usage (
    waba_id  TEXT NOT NULL,
    month    TEXT NOT NULL,
    category TEXT NOT NULL,
    counted  INTEGER NOT NULL,
    opened   INTEGER NOT NULL,
    PRIMARY KEY (waba_id, month, category)
) STRICT, WITHOUT ROWID;

-- conversation_2022: the conversations opened, by customer and category.
CREATE TABLE conversations (
    waba_id      TEXT NOT NULL,
    user_address TEXT NOT NULL,
    category     TEXT NOT NULL,
    id           TEXT NOT NULL,
    opened_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (waba_id, user_address, category, opened_at)
) STRICT, WITHOUT ROWID;
CREATE UNIQUE INDEX conversations_id ON conversations (waba_id, id);

-- A business's tier: `api` (its software sends; the window applies to free-form messages)
-- or `app` (a small business answering by hand: its manual replies pass a closed window,
-- free, at a human pace). Changed by the operator only, each change audited.
ALTER TABLE businesses ADD COLUMN tier TEXT NOT NULL DEFAULT 'api';
CREATE TABLE tier_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    waba_id  TEXT NOT NULL,
    at       INTEGER NOT NULL,
    tier     TEXT NOT NULL,
    previous TEXT NOT NULL,
    actor    TEXT NOT NULL,
    reason   TEXT
) STRICT;
CREATE INDEX tier_events_by_business ON tier_events (waba_id, seq);
-- The human pace of replies by hand: a business number's recent manual sends.
CREATE INDEX submissions_manual ON submissions (sender, accepted_at) WHERE manual;
