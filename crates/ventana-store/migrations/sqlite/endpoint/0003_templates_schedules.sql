-- History may now hold template messages (kind 'template'). SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt.
CREATE TABLE messages_new (
    owner        TEXT NOT NULL,
    id           TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    peer         TEXT NOT NULL,
    peer_device  INTEGER,
    kind         TEXT NOT NULL CHECK (kind IN ('message', 'template', 'receipt')),
    ts           INTEGER NOT NULL,
    body_sealed  BLOB NOT NULL,
    status       TEXT NOT NULL
                 CHECK (status IN ('received', 'accepted', 'sent', 'failed', 'delivered', 'read')),
    PRIMARY KEY (owner, id, direction)
) STRICT;

INSERT INTO messages_new SELECT owner, id, direction, peer, peer_device, kind, ts, body_sealed, status
    FROM messages;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_by_time ON messages (owner, ts);

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
    send_at         INTEGER NOT NULL,
    request_sealed  BLOB NOT NULL,
    state           TEXT NOT NULL
                    CHECK (state IN ('scheduled', 'firing', 'sent', 'failed', 'cancelled')),
    error           TEXT,
    claimed_by      TEXT,
    claimed_at      INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;

-- `schedules_due` finds what is due or stale, and pages one state in listing order without
-- stepping over the rows of the others (sent and cancelled ones pile up).
CREATE INDEX schedules_due ON schedules (owner, state, send_at, id);
CREATE INDEX schedules_listing ON schedules (owner, send_at, id);

-- How far the gateway has turned each business's template events (at the relay) into
-- `message_template_status_update` webhooks.
CREATE TABLE template_cursors (
    waba_id  TEXT PRIMARY KEY,
    seq      INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Template versions a device fetched from the relay to render messages, kept so history
-- renders without asking again. Versions never change, so an entry never goes stale.
CREATE TABLE template_cache (
    owner       TEXT NOT NULL,
    business    TEXT NOT NULL,
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    definition  TEXT NOT NULL,
    PRIMARY KEY (owner, business, id, version)
) STRICT, WITHOUT ROWID;
