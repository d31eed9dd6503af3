-- Envelopes may now carry a template message (kind 'template'). SQLite cannot change a CHECK
-- constraint in place, so the table is rebuilt; its AUTOINCREMENT high mark is carried over
-- so no sequence number is ever handed out twice.
CREATE TABLE envelopes_new (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient         TEXT NOT NULL,
    recipient_device  INTEGER NOT NULL,
    id                TEXT NOT NULL,
    sender            TEXT NOT NULL,
    sender_device     INTEGER NOT NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('message', 'template', 'receipt')),
    ts                INTEGER NOT NULL,
    body              BLOB NOT NULL,
    FOREIGN KEY (recipient, recipient_device) REFERENCES devices (account, device_id)
) STRICT;

INSERT INTO envelopes_new (seq, recipient, recipient_device, id, sender, sender_device, kind, ts, body)
    SELECT seq, recipient, recipient_device, id, sender, sender_device, kind, ts, body FROM envelopes;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'envelopes_new', seq FROM sqlite_sequence WHERE name = 'envelopes'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'envelopes_new');
UPDATE sqlite_sequence
    SET seq = max(seq, (SELECT seq FROM sqlite_sequence WHERE name = 'envelopes'))
    WHERE name = 'envelopes_new' AND EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'envelopes');
DROP TABLE envelopes;
ALTER TABLE envelopes_new RENAME TO envelopes;
CREATE INDEX envelopes_by_device ON envelopes (recipient, recipient_device, seq);
