-- History may now hold template messages (kind 'template').
ALTER TABLE messages DROP CONSTRAINT messages_kind_check;
ALTER TABLE messages ADD CONSTRAINT messages_kind_check
    CHECK (kind IN ('message', 'template', 'receipt'));

-- Messages a business scheduled ahead of time (gateway side). `id` is the message id the send
-- will use, returned to the business when it scheduled: firing twice cannot deliver twice.
-- `send_at` is on the business's clock (a sandbox's test clock included). The request is
-- sealed: it holds the template's parameters. A row moves scheduled -> firing -> sent or
-- failed, or scheduled -> cancelled; a node that claimed it (firing) and died is replaced once
-- `claimed_at` is old.
CREATE TABLE schedules (
    id              TEXT PRIMARY KEY,
    owner           TEXT NOT NULL,
    waba_id         TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    send_at         BIGINT NOT NULL,
    request_sealed  BYTEA NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('scheduled', 'firing', 'sent', 'failed', 'cancelled')),
    error           TEXT,
    claimed_by      TEXT,
    claimed_at      BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- `schedules_due` finds what is due or stale, and pages one state in listing order without
-- stepping over the rows of the others (sent and cancelled ones pile up).
CREATE INDEX schedules_due ON schedules (owner, state, send_at, id);
CREATE INDEX schedules_listing ON schedules (owner, send_at, id);

-- How far the gateway has turned each business's template events (at the relay) into
-- `message_template_status_update` webhooks.
CREATE TABLE template_cursors (
    waba_id  TEXT PRIMARY KEY,
    seq      BIGINT NOT NULL
);

-- Template versions a device fetched from the relay to render messages, kept so history
-- renders without asking again. Versions never change, so an entry never goes stale.
CREATE TABLE template_cache (
    owner       TEXT NOT NULL,
    business    TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    PRIMARY KEY (owner, business, id, version)
);
