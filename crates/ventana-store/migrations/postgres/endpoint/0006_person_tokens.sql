-- A token issued to a person (a small business's staff answering by hand), by name; NULL
-- for the business's software. A person's free-form sends are replies by hand, which an
-- `app`-tier business may send after the 24-hour window.
ALTER TABLE access_tokens ADD COLUMN person TEXT;
