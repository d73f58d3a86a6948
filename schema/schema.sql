-- postage database, schema version 4.
--
-- Create a fresh database with:   sqlite3 /var/lib/postage/postage.db < schema/schema.sql
-- Upgrade an older one with the files in schema/migrations/, in order.
--
-- The first group of tables is the administrator's interface (see README.md):
-- keep their names and meanings. The second group is internal to postage.

PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;

BEGIN;

-- ------------------------------------------------------------------------
-- User-facing tables
-- ------------------------------------------------------------------------

-- Server-wide settings, read afresh by every process. Known keys and their
-- defaults (a missing row means the default):
--   hostname                 the machine's FQDN (greeting, Received, bounces)
--   mail_root                /var/mail/postage     (Maildir of mailbox L is mail_root/L/)
--   spool_dir                /var/spool/postage    (staging and outbound queue)
--   tls_cert, tls_key        none (then no STARTTLS/STLS is offered)
--   tls_priority             NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2
--   max_message_bytes        26214400
--   pop_before_smtp_minutes  30
--   relayhost                none ([host]:port as given, host:port via MX)
--   relayhost_login, relayhost_password   none
--   queue_lifetime_hours     120
--   received_show_login      0
--   max_messages_per_hour_per_login  500
--   srs_secret, dmarc_reject (1), spf_reject_fail (0)
--   harvest_limit            50    (unknown recipients per client IP in 15 min)
--   auth_failure_delay_ms    500   (least time before a failed login is answered)
--   list_bounce_limit        5     (bounces in 30 days that disable a list member; 0: never)
CREATE TABLE settings (
    key   TEXT PRIMARY KEY NOT NULL,
    value TEXT
);

-- Domains this server receives mail for. Compared case-insensitively.
CREATE TABLE domains (
    name TEXT PRIMARY KEY NOT NULL COLLATE NOCASE
        CHECK (length(name) BETWEEN 1 AND 253 AND name NOT LIKE '%@%')
);

-- One Maildir each (mail_root/<login>/). The password is a crypt(3) string;
-- the CHECK keeps plaintext out of the table.
CREATE TABLE mailboxes (
    login       TEXT PRIMARY KEY NOT NULL
        CHECK (length(login) BETWEEN 1 AND 64
               AND login NOT GLOB '*[/]*' AND login NOT IN ('.', '..')
               AND substr(login, 1, 1) <> '.'),
    password    TEXT NOT NULL
        CHECK (password GLOB '$y$*' OR password GLOB '$6$*'
               OR password GLOB '$2b$*' OR password GLOB '$2y$*'),
    quota_bytes INTEGER DEFAULT NULL CHECK (quota_bytes IS NULL OR quota_bytes >= 0),
    enabled     INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1))
);

-- user@domain delivered to a mailbox; '@domain' is the domain's catch-all.
-- The domain part compares case-insensitively (so does the whole address).
CREATE TABLE addresses (
    address TEXT PRIMARY KEY NOT NULL COLLATE NOCASE
        CHECK (instr(address, '@') > 0),
    mailbox TEXT NOT NULL REFERENCES mailboxes(login)
        ON UPDATE CASCADE ON DELETE CASCADE
);
CREATE INDEX addresses_mailbox ON addresses(mailbox);

-- address expands to each target, local or remote: forwarding and simple
-- mailing lists. Targets may be further forwards (depth-limited, loops
-- detected).
CREATE TABLE forwards (
    address TEXT NOT NULL COLLATE NOCASE CHECK (instr(address, '@') > 0),
    target  TEXT NOT NULL COLLATE NOCASE CHECK (instr(target, '@') > 1),
    PRIMARY KEY (address, target)
);

-- CIDR blocks (IPv4, IPv6) allowed to relay without logging in. Empty by
-- default: not even loopback is trusted.
CREATE TABLE relay_networks (
    network TEXT PRIMARY KEY NOT NULL
);

-- Written on each POP3 login (IPv4-mapped IPv6 stored as IPv4): the record
-- POP-before-SMTP relies on. at = unix seconds.
CREATE TABLE pop_logins (
    ip    TEXT PRIMARY KEY NOT NULL,
    login TEXT NOT NULL,
    at    INTEGER NOT NULL
);

-- Lets a login use an address it does not own in From:, Sender: and
-- Resent-From: (and as envelope sender): an assistant sending for a
-- manager, a shared info@. '@domain' grants every address of the domain.
CREATE TABLE send_as (
    login   TEXT NOT NULL REFERENCES mailboxes(login)
        ON UPDATE CASCADE ON DELETE CASCADE,
    address TEXT NOT NULL COLLATE NOCASE CHECK (instr(address, '@') > 0),
    PRIMARY KEY (login, address)
);

-- A mailing list (README "Mailing lists"). address: the posting address, in
-- a hosted domain; its local part holds no '+' (the first '+' of a list
-- address starts a member or a token). These addresses exist without rows
-- of their own: <list>-subscribe@, -unsubscribe@, -request@ (commands in
-- the Subject), -owner@ (to owner), -bounces+<member, @ as =>@ (each copy's
-- envelope sender, VERP) and -confirm+<token>@. owner: an address, local or
-- remote. posting: who may post (members, anyone, moderated: all held for
-- the owner, announce: the owner alone). archive: a mailbox that gets every
-- post that goes out. subject_prefix: put before each post's Subject.
CREATE TABLE lists (
    address        TEXT PRIMARY KEY NOT NULL COLLATE NOCASE
        CHECK (instr(address, '@') > 1 AND instr(address, '+') = 0),
    owner          TEXT NOT NULL COLLATE NOCASE CHECK (instr(owner, '@') > 1),
    posting        TEXT NOT NULL DEFAULT 'members'
        CHECK (posting IN ('members', 'anyone', 'moderated', 'announce')),
    archive        TEXT DEFAULT NULL REFERENCES mailboxes(login)
        ON UPDATE CASCADE ON DELETE SET NULL,
    subject_prefix TEXT DEFAULT NULL
);

-- Who receives a list. enabled = 0: a member whose copies bounced
-- (list_bounce_limit) or whom the owner stopped; still a member for posting.
CREATE TABLE list_members (
    list    TEXT NOT NULL COLLATE NOCASE REFERENCES lists(address)
        ON UPDATE CASCADE ON DELETE CASCADE,
    address TEXT NOT NULL COLLATE NOCASE CHECK (instr(address, '@') > 1),
    enabled INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    PRIMARY KEY (list, address)
);

-- DKIM signing keys, one row per (domain, selector).
CREATE TABLE dkim_keys (
    domain           TEXT NOT NULL COLLATE NOCASE,
    selector         TEXT NOT NULL,
    algorithm        TEXT NOT NULL DEFAULT 'rsa-sha256'
        CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key_path TEXT NOT NULL,
    enabled          INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    PRIMARY KEY (domain, selector)
);

-- ------------------------------------------------------------------------
-- Internal tables (postage's own; read them, but let postage write them)
-- ------------------------------------------------------------------------

-- One row per message in the outbound queue. The message itself is the
-- file spool_dir/queue/<id> (LF line endings, our Received header on top).
CREATE TABLE queue_messages (
    id          TEXT PRIMARY KEY NOT NULL,
    sender      TEXT NOT NULL,            -- envelope sender, '' for <>
    size        INTEGER NOT NULL,         -- bytes of the spool file
    body_8bit   INTEGER NOT NULL DEFAULT 0,
    smtputf8    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,         -- unix seconds
    client_ip   TEXT,
    auth_login  TEXT,
    warned      INTEGER NOT NULL DEFAULT 0 -- delay warning sent
, verp INTEGER NOT NULL DEFAULT 0);
-- verp = 1: a mailing list's copies; each recipient gets its own
-- transaction whose envelope sender is sender's local part, '+', and the
-- recipient's orig_rcpt (the member) with '@' as '=' (VERP). (The column
-- stands as ALTER TABLE in 0003-lists.sql leaves it, so that a migrated
-- database is the same as a fresh one, to the letter.)

-- One row per remote recipient of a queued message.
-- state: 'queued' (waiting or due), 'sent', 'bounced' (final).
-- The last_* columns describe the latest attempt: last_error is the remote
-- server's reply (or postage's own reason), last_mta the server that said
-- it ('name[ip]', NULL for postage's own), last_command what it answered.
-- A 'bounced' row keeps dsn_sent = 0 until its bounce has been made.
CREATE TABLE queue_recipients (
    message_id   TEXT NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,
    recipient    TEXT NOT NULL,
    orig_rcpt    TEXT,                    -- the RCPT address it came from
    state        TEXT NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'sent', 'bounced')),
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    last_status  TEXT,                    -- RFC 3463 code, e.g. '5.1.1'
    last_mta     TEXT,
    last_command TEXT,                    -- e.g. 'RCPT TO', 'end of DATA'
    dsn_sent     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (message_id, recipient)
);
CREATE INDEX queue_recipients_due ON queue_recipients(state, next_attempt);

-- Failed logins (POP3 and SMTP AUTH) per client IP (IPv6 per /64), for the
-- throttle. Rows older than the window are pruned on write.
CREATE TABLE auth_failures (
    ip_key   TEXT PRIMARY KEY NOT NULL,
    failures INTEGER NOT NULL,
    first_at INTEGER NOT NULL,
    last_at  INTEGER NOT NULL
);

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

-- Unknown-recipient refusals per client IP (IPv6 per /64), against address
-- harvesting (harvest_limit within 15 minutes of the last refusal).
CREATE TABLE harvest (
    ip_key   TEXT PRIMARY KEY NOT NULL,
    refusals INTEGER NOT NULL,
    first_at INTEGER NOT NULL,
    last_at  INTEGER NOT NULL
);

-- Messages sent per authenticated login, for max_messages_per_hour_per_login.
CREATE TABLE send_counts (
    login  TEXT NOT NULL,
    hour   INTEGER NOT NULL,              -- unix seconds / 3600
    count  INTEGER NOT NULL,
    PRIMARY KEY (login, hour)
);

-- TLS session-ticket keys shared by all handler processes, rotated daily.
CREATE TABLE tls_ticket_keys (
    created_at INTEGER PRIMARY KEY NOT NULL,
    key        BLOB NOT NULL
);

-- Mailing lists: what waits for a confirmation. A token is sent once and
-- stored only as its SHA-256 (hex). action: subscribe, unsubscribe (address
-- must confirm), post (a held post in spool_dir/held/<held>, the owner must
-- confirm), help (a reply sent, no token: kept a day to bound replies).
CREATE TABLE list_pending (
    token_hash TEXT PRIMARY KEY NOT NULL,
    list       TEXT NOT NULL COLLATE NOCASE,
    address    TEXT NOT NULL COLLATE NOCASE,
    action     TEXT NOT NULL CHECK (action IN ('subscribe', 'unsubscribe', 'post', 'help')),
    held       TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX list_pending_address ON list_pending(list, address, action);
CREATE INDEX list_pending_expiry ON list_pending(expires_at);

-- Mailing lists: each bounce of a member's copies (a report or any mail to
-- its VERP address, or the queue runner's own failure), for
-- list_bounce_limit within 30 days; gone when the member is disabled.
CREATE TABLE list_bounces (
    list    TEXT NOT NULL COLLATE NOCASE,
    address TEXT NOT NULL COLLATE NOCASE,
    at      INTEGER NOT NULL               -- unix seconds
);
CREATE INDEX list_bounces_member ON list_bounces(list, address, at);

PRAGMA user_version = 4;

COMMIT;
