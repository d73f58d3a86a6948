-- Version 4: auth_pending (internal), the login throttle's checks under
-- way, apart from its failures.
--   sqlite3 /var/lib/postage/postage.db < schema/migrations/0004-auth-pending.sql
BEGIN;

-- Password checks under way per client IP (IPv6 per /64), a row each: taken
-- before a check, gone after it, so that together with auth_failures no
-- parallelism gets past the throttle's 20 checks per window, while checks
-- under way do not count as failures. A row older than a minute is of a
-- process that died, and counts no more.
CREATE TABLE auth_pending (
    ip_key TEXT NOT NULL,
    at     INTEGER NOT NULL                -- unix seconds
);
CREATE INDEX auth_pending_ip ON auth_pending(ip_key, at);

PRAGMA user_version = 4;

COMMIT;
