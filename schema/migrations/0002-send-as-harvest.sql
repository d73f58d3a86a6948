-- Version 2: send_as (who may write which From: address) and harvest
-- (unknown-recipient refusals per client address).
--   sqlite3 /var/lib/postage/postage.db < schema/migrations/0002-send-as-harvest.sql
BEGIN;

-- Lets a login use an address it does not own in From:, Sender: and
-- Resent-From: (and as envelope sender): an assistant sending for a
-- manager, a shared info@. '@domain' grants every address of the domain.
CREATE TABLE send_as (
    login   TEXT NOT NULL REFERENCES mailboxes(login)
        ON UPDATE CASCADE ON DELETE CASCADE,
    address TEXT NOT NULL COLLATE NOCASE CHECK (instr(address, '@') > 0),
    PRIMARY KEY (login, address)
);

-- Unknown-recipient refusals per client IP (IPv6 per /64), against address
-- harvesting (harvest_limit within 15 minutes of the last refusal).
CREATE TABLE harvest (
    ip_key   TEXT PRIMARY KEY NOT NULL,
    refusals INTEGER NOT NULL,
    first_at INTEGER NOT NULL,
    last_at  INTEGER NOT NULL
);

PRAGMA user_version = 2;

COMMIT;
