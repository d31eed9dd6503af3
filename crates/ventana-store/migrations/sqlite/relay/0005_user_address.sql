-- The column naming the user in a business relationship is `user_address`, as in PostgreSQL
-- (where `user` is a reserved word), so both backends run the same statements.
ALTER TABLE relationships RENAME COLUMN user TO user_address;
ALTER TABLE blocks RENAME COLUMN user TO user_address;
ALTER TABLE consent_events RENAME COLUMN user TO user_address;
