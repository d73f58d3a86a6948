-- postage database on PostgreSQL, schema version 4: the tables several
-- postage hosts share (README "Several machines"). The same tables,
-- columns, meanings and checks as schema.sql, in PostgreSQL's dialect;
-- what stays on each host (the outbound queue: queue_messages,
-- queue_recipients) stays in that host's SQLite file, as Postfix keeps one
-- queue per host.
--
-- Create it (PostgreSQL 15, as the database's owner):
--   createdb postage && psql -v ON_ERROR_STOP=1 -d postage -f schema/postgresql.sql
--
-- Dialect: SQLite's COLLATE NOCASE is the citext type (case-insensitive
-- comparison, uniqueness and LIKE); unix seconds are bigint; BLOB is
-- bytea; GLOB checks are regular expressions. The version is the one row
-- of postage_schema (SQLite keeps it in PRAGMA user_version).

\set ON_ERROR_STOP 1

BEGIN;

CREATE EXTENSION IF NOT EXISTS citext;

-- ------------------------------------------------------------------------
-- User-facing tables (schema.sql explains each; the settings keys too)
-- ------------------------------------------------------------------------

CREATE TABLE settings (
    key   text PRIMARY KEY NOT NULL,
    value text
);

CREATE TABLE domains (
    name citext PRIMARY KEY NOT NULL
        CHECK (length(name) BETWEEN 1 AND 253 AND position('@' IN name) = 0)
);

CREATE TABLE mailboxes (
    login       text PRIMARY KEY NOT NULL
        CHECK (length(login) BETWEEN 1 AND 64
               AND position('/' IN login) = 0 AND login NOT IN ('.', '..')
               AND substr(login, 1, 1) <> '.'),
    password    text NOT NULL
        CHECK (password ~ '^\$(y|6|2b|2y)\$'),
    quota_bytes bigint DEFAULT NULL CHECK (quota_bytes IS NULL OR quota_bytes >= 0),
    enabled     integer NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1))
);

CREATE TABLE addresses (
    address citext PRIMARY KEY NOT NULL
        CHECK (position('@' IN address) > 0),
    mailbox text NOT NULL REFERENCES mailboxes(login)
        ON UPDATE CASCADE ON DELETE CASCADE
);
CREATE INDEX addresses_mailbox ON addresses(mailbox);

CREATE TABLE forwards (
    address citext NOT NULL CHECK (position('@' IN address) > 0),
    target  citext NOT NULL CHECK (position('@' IN target) > 1),
    PRIMARY KEY (address, target)
);

CREATE TABLE relay_networks (
    network text PRIMARY KEY NOT NULL
);

CREATE TABLE pop_logins (
    ip    text PRIMARY KEY NOT NULL,
    login text NOT NULL,
    at    bigint NOT NULL
);

CREATE TABLE send_as (
    login   text NOT NULL REFERENCES mailboxes(login)
        ON UPDATE CASCADE ON DELETE CASCADE,
    address citext NOT NULL CHECK (position('@' IN address) > 0),
    PRIMARY KEY (login, address)
);

CREATE TABLE lists (
    address        citext PRIMARY KEY NOT NULL
        CHECK (position('@' IN address) > 1 AND position('+' IN address) = 0),
    owner          citext NOT NULL CHECK (position('@' IN owner) > 1),
    posting        text NOT NULL DEFAULT 'members'
        CHECK (posting IN ('members', 'anyone', 'moderated', 'announce')),
    archive        text DEFAULT NULL REFERENCES mailboxes(login)
        ON UPDATE CASCADE ON DELETE SET NULL,
    subject_prefix text DEFAULT NULL
);

CREATE TABLE list_members (
    list    citext NOT NULL REFERENCES lists(address)
        ON UPDATE CASCADE ON DELETE CASCADE,
    address citext NOT NULL CHECK (position('@' IN address) > 1),
    enabled integer NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    PRIMARY KEY (list, address)
);

-- The key files the rows name are copied to every host, at the same path.
CREATE TABLE dkim_keys (
    domain           citext NOT NULL,
    selector         text NOT NULL,
    algorithm        text NOT NULL DEFAULT 'rsa-sha256'
        CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    private_key_path text NOT NULL,
    enabled          integer NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    PRIMARY KEY (domain, selector)
);

-- ------------------------------------------------------------------------
-- Internal tables shared by the hosts: one throttle, one harvest count and
-- one sending count for all of them (else an attacker or a spammer would
-- get one allowance per host), one set of TLS ticket keys (a session
-- resumes on any host), the lists' confirmations and bounces.
-- ------------------------------------------------------------------------

CREATE TABLE auth_failures (
    ip_key   text PRIMARY KEY NOT NULL,
    failures integer NOT NULL,
    first_at bigint NOT NULL,
    last_at  bigint NOT NULL
);

-- id stands for SQLite's rowid, which names the row a check took.
CREATE TABLE auth_pending (
    ip_key text NOT NULL,
    at     bigint NOT NULL,
    id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY
);
CREATE INDEX auth_pending_ip ON auth_pending(ip_key, at);

CREATE TABLE harvest (
    ip_key   text PRIMARY KEY NOT NULL,
    refusals integer NOT NULL,
    first_at bigint NOT NULL,
    last_at  bigint NOT NULL
);

CREATE TABLE send_counts (
    login  text NOT NULL,
    hour   bigint NOT NULL,
    count  integer NOT NULL,
    PRIMARY KEY (login, hour)
);

CREATE TABLE tls_ticket_keys (
    created_at bigint PRIMARY KEY NOT NULL,
    key        bytea NOT NULL
);

CREATE TABLE list_pending (
    token_hash text PRIMARY KEY NOT NULL,
    list       citext NOT NULL,
    address    citext NOT NULL,
    action     text NOT NULL CHECK (action IN ('subscribe', 'unsubscribe', 'post', 'help')),
    held       text,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL
);
CREATE INDEX list_pending_address ON list_pending(list, address, action);
CREATE INDEX list_pending_expiry ON list_pending(expires_at);

CREATE TABLE list_bounces (
    list    citext NOT NULL,
    address citext NOT NULL,
    at      bigint NOT NULL
);
CREATE INDEX list_bounces_member ON list_bounces(list, address, at);

CREATE TABLE postage_schema (
    version integer NOT NULL
);
INSERT INTO postage_schema (version) VALUES (4);

COMMIT;
