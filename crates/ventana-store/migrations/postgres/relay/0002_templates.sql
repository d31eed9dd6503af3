-- The registry of message templates, per business. Template text is public to the platform
-- (the operator reviews it, devices render it), so it is kept in the clear.
--
-- PostgreSQL twin of migrations/sqlite/relay/0002_templates.sql. Writers of events take a
-- transaction advisory lock before drawing an event's `seq` and keep it until they commit,
-- so events become visible in `seq` order (see src/postgres/relay/templates.rs).

-- A template as it stands. Its content is its current version's, in `template_versions`.
-- `seq` orders templates for paging. Deleting only sets `DELETED`: the row and its versions
-- stay, because messages sent with them must still render.
CREATE TABLE templates (
    id          TEXT PRIMARY KEY,
    seq         BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    waba_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    language    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN
                    ('PENDING', 'APPROVED', 'REJECTED', 'PAUSED', 'DISABLED', 'DELETED')),
    version     BIGINT NOT NULL CHECK (version >= 1),
    reason      TEXT,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- One live template per name and language of a business; a deleted one frees its name.
-- Also what counts a business's templates against its limit.
CREATE UNIQUE INDEX templates_live_name ON templates (waba_id, name, language)
    WHERE status <> 'DELETED';
-- Listing a business's templates, by status, in `seq` order.
CREATE INDEX templates_listing ON templates (waba_id, status, seq);

-- Every version ever stored, never changed afterwards except to note it was approved.
CREATE TABLE template_versions (
    template_id       TEXT NOT NULL REFERENCES templates (id),
    version           BIGINT NOT NULL,
    category          TEXT NOT NULL CHECK (category IN ('UTILITY', 'MARKETING', 'AUTHENTICATION')),
    components        TEXT NOT NULL,
    parameter_format  TEXT NOT NULL,
    created_at        BIGINT NOT NULL,
    approved          BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (template_id, version)
);

-- Append-only audit of status changes, also followed (by `seq`) for status webhooks. Name,
-- language and business are copied in so an event reads on its own.
CREATE TABLE template_events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    template_id  TEXT NOT NULL REFERENCES templates (id),
    waba_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    language     TEXT NOT NULL,
    version      BIGINT NOT NULL,
    from_status  TEXT,
    to_status    TEXT NOT NULL,
    actor        TEXT NOT NULL,
    reason       TEXT,
    at           BIGINT NOT NULL
);

CREATE INDEX template_events_by_waba ON template_events (waba_id, seq);
CREATE INDEX template_events_by_template ON template_events (template_id, seq);
