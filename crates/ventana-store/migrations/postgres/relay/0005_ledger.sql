-- The billing ledger: one entry per charged (or free) delivered business message, numbered
-- and hash-chained per business (see ventana_core::pricing::ledger). Append-only: nothing
-- updates or deletes a row.
CREATE TABLE ledger (
    waba_id          TEXT NOT NULL,
    seq              BIGINT NOT NULL,
    message_id       TEXT NOT NULL,
    destination      TEXT NOT NULL,
    delivered_at     BIGINT NOT NULL,
    policy_version   TEXT NOT NULL,
    model            TEXT NOT NULL,
    category         TEXT NOT NULL,
    template         BOOLEAN NOT NULL,
    window_state     TEXT NOT NULL,
    pricing_type     TEXT NOT NULL,
    manual           BOOLEAN NOT NULL,
    rate             BIGINT NOT NULL,
    amount           BIGINT NOT NULL,
    currency         TEXT NOT NULL,
    precision_digits BIGINT NOT NULL,
    prev_hash        BYTEA NOT NULL,
    hash             BYTEA NOT NULL,
    PRIMARY KEY (waba_id, seq),
    -- A message is charged once, however often its delivery is reported.
    UNIQUE (waba_id, message_id)
);
