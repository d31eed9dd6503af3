-- A resend (a new encryption of an accepted message) must go to the same recipient under
-- the same clear header as the message it repeats, and a message can be resent only so
-- often: the submission keeps both, and a count.
ALTER TABLE submissions ADD COLUMN recipient TEXT NOT NULL DEFAULT '';
ALTER TABLE submissions ADD COLUMN header TEXT NOT NULL DEFAULT '';
ALTER TABLE submissions ADD COLUMN resends INTEGER NOT NULL DEFAULT 0;
