-- Envelopes may now carry a template message (kind 'template').
ALTER TABLE envelopes DROP CONSTRAINT envelopes_kind_check;
ALTER TABLE envelopes ADD CONSTRAINT envelopes_kind_check
    CHECK (kind IN ('message', 'template', 'receipt'));
