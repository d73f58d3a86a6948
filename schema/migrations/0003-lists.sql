-- Version 3: mailing lists (lists, list_members; list_pending and
-- list_bounces, internal), and the queue's VERP flag for list copies.
--   sqlite3 /var/lib/postage/postage.db < schema/migrations/0003-lists.sql
BEGIN;

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

-- 1: a mailing list's copies; each recipient gets its own transaction
-- whose envelope sender is sender's local part, '+', and the recipient's
-- orig_rcpt (the member) with '@' as '=' (VERP).
ALTER TABLE queue_messages ADD COLUMN verp INTEGER NOT NULL DEFAULT 0;

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

PRAGMA user_version = 3;

COMMIT;
