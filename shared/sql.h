/* Every SQL statement the programs run, in one list: its name, which
 * callers hand to db_stmt(), and its text. A statement is prepared the
 * first time it is used and kept (db.c), so the cache is exactly as long
 * as this list (SQL_COUNT), and a second database engine would need a
 * second list of texts, not changes in the callers.
 *
 * An X-macro list, with no include guard on purpose: define
 * SQL(id, text), include this file, undefine SQL (db.h makes the enum,
 * db.c the table of texts).
 *
 * Parameters are numbered (?1, ?2 ...). A LIMIT that equals a C constant
 * is a parameter bound from that constant, so the two cannot drift apart. */

/* ---- transactions and durability (db.c only) ---- */
SQL(SQL_BEGIN_IMMEDIATE, "BEGIN IMMEDIATE")
SQL(SQL_BEGIN, "BEGIN")
SQL(SQL_COMMIT, "COMMIT")
SQL(SQL_ROLLBACK, "ROLLBACK")
SQL(SQL_SYNCHRONOUS_FULL, "PRAGMA synchronous = FULL")
SQL(SQL_SYNCHRONOUS_NORMAL, "PRAGMA synchronous = NORMAL")

/* ---- settings (config.c; compose/signing.c keeps the SRS secret there) ---- */
SQL(SQL_SETTINGS_LOAD, "SELECT key, value FROM settings")
SQL(SQL_SRS_SECRET_INSERT,
    "INSERT INTO settings (key, value) VALUES ('srs_secret', ?1) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value "
    "WHERE settings.value IS NULL OR settings.value = ''")
SQL(SQL_SRS_SECRET_SELECT, "SELECT value FROM settings WHERE key = 'srs_secret'")

/* ---- domains, addresses, forwards (address.c) ---- */
SQL(SQL_DOMAIN_IS_LOCAL, "SELECT 1 FROM domains WHERE name = ?1")
/* ?1 POSTMASTER_DOMAINS_MAX */
SQL(SQL_DOMAIN_NAMES, "SELECT name FROM domains ORDER BY name LIMIT ?1")
SQL(SQL_ADDRESS_MAILBOX,
    "SELECT m.login, m.quota_bytes, m.enabled FROM addresses a "
    "JOIN mailboxes m ON m.login = a.mailbox WHERE a.address = ?1")
/* ?2 FORWARD_TARGETS_MAX */
SQL(SQL_FORWARD_TARGETS, "SELECT target FROM forwards WHERE address = ?1 LIMIT ?2")

/* ---- mailboxes and who may send as whom (auth.c, smtp-handler) ---- */
SQL(SQL_MAILBOX_PASSWORD, "SELECT password, enabled FROM mailboxes WHERE login = ?1")
/* a password to hash when the login is unknown, so time tells nothing */
SQL(SQL_MAILBOX_ANY_PASSWORD, "SELECT password FROM mailboxes LIMIT 1")
/* a list's archive mailbox */
SQL(SQL_MAILBOX_QUOTA, "SELECT quota_bytes, enabled FROM mailboxes WHERE login = ?1")
SQL(SQL_SEND_AS, "SELECT 1 FROM send_as WHERE login = ?1 AND address IN (?2, ?3)")

/* ---- the login throttle: auth_failures, auth_pending (auth.c) ---- */
SQL(SQL_AUTH_FAILURES, "SELECT failures FROM auth_failures WHERE ip_key = ?1 AND last_at >= ?2")
/* ?3 THROTTLE_REFUSE_AT */
SQL(SQL_AUTH_SLOT_TAKE,
    "INSERT INTO auth_pending (ip_key, at) SELECT ?1, ?2 WHERE "
    "(SELECT count(*) FROM auth_pending WHERE ip_key = ?1 AND at >= ?5) + "
    "coalesce((SELECT failures FROM auth_failures WHERE ip_key = ?1 AND last_at >= ?4), 0) "
    "< ?3 RETURNING rowid")
SQL(SQL_AUTH_SLOT_RELEASE, "DELETE FROM auth_pending WHERE rowid = ?1")
SQL(SQL_AUTH_FAILURE_RECORD,
    "INSERT INTO auth_failures (ip_key, failures, first_at, last_at) VALUES (?1, 1, ?2, ?2) "
    "ON CONFLICT(ip_key) DO UPDATE SET "
    "failures = CASE WHEN last_at < ?3 THEN 1 ELSE failures + 1 END, "
    "first_at = CASE WHEN last_at < ?3 THEN excluded.first_at ELSE first_at END, "
    "last_at = excluded.last_at")
SQL(SQL_AUTH_FAILURES_PRUNE, "DELETE FROM auth_failures WHERE last_at < ?1")
SQL(SQL_AUTH_PENDING_PRUNE, "DELETE FROM auth_pending WHERE at < ?1")

/* ---- address harvesting: harvest (smtp-handler/harvest.c) ---- */
SQL(SQL_HARVEST_REFUSALS, "SELECT refusals FROM harvest WHERE ip_key = ?1 AND last_at >= ?2")
SQL(SQL_HARVEST_COUNT,
    "INSERT INTO harvest (ip_key, refusals, first_at, last_at) VALUES (?1, 1, ?2, ?2) "
    "ON CONFLICT(ip_key) DO UPDATE SET "
    "refusals = CASE WHEN last_at < ?3 THEN 1 ELSE refusals + 1 END, "
    "first_at = CASE WHEN last_at < ?3 THEN excluded.first_at ELSE first_at END, "
    "last_at = excluded.last_at RETURNING refusals")

/* ---- messages per login and hour: send_counts (smtp-handler/ratelimit.c) ---- */
SQL(SQL_SEND_COUNT, "SELECT count FROM send_counts WHERE login = ?1 AND hour = ?2")
SQL(SQL_SEND_COUNT_ADD,
    "INSERT INTO send_counts (login, hour, count) VALUES (?1, ?2, ?3) "
    "ON CONFLICT(login, hour) DO UPDATE SET count = count + excluded.count")
SQL(SQL_SEND_COUNTS_PRUNE, "DELETE FROM send_counts WHERE hour < ?1")

/* ---- relaying: relay_networks, POP-before-SMTP's pop_logins ---- */
SQL(SQL_RELAY_NETWORKS, "SELECT network FROM relay_networks")
SQL(SQL_POP_LOGIN_RECENT, "SELECT login FROM pop_logins WHERE ip = ?1 AND at >= ?2")
SQL(SQL_POP_LOGIN_RECORD,
    "INSERT INTO pop_logins (ip, login, at) VALUES (?1, ?2, ?3) "
    "ON CONFLICT(ip) DO UPDATE SET login = excluded.login, at = excluded.at")

/* ---- TLS session-ticket master keys: tls_ticket_keys (tls.c) ---- */
SQL(SQL_TLS_TICKET_KEY_FRESH,
    "SELECT key FROM tls_ticket_keys WHERE created_at > ?1 ORDER BY created_at DESC LIMIT 1")
SQL(SQL_TLS_TICKET_KEY_STORE, "INSERT OR REPLACE INTO tls_ticket_keys (created_at, key) VALUES (?1, ?2)")
SQL(SQL_TLS_TICKET_KEYS_PRUNE, "DELETE FROM tls_ticket_keys WHERE created_at < ?1")

/* ---- DKIM signing keys: dkim_keys (compose/signing.c) ---- */
/* ?2 DKIM_SIGN_MAX */
SQL(SQL_DKIM_KEYS,
    "SELECT selector, algorithm, private_key_path FROM dkim_keys "
    "WHERE domain = ?1 AND enabled = 1 "
    "ORDER BY algorithm = 'ed25519-sha256', selector LIMIT ?2")

/* ---- mailing lists: lists, list_members (list.c, smtp-handler/lists.c) ---- */
SQL(SQL_LIST_LOOKUP,
    "SELECT address, owner, posting, archive, subject_prefix, address = ?1 "
    "FROM lists WHERE address = ?1 OR address = ?2 "
    "ORDER BY address = ?1 DESC LIMIT 1")
SQL(SQL_LIST_LOAD, "SELECT address, owner, posting, archive, subject_prefix FROM lists WHERE address = ?1")
SQL(SQL_LIST_IS_MEMBER, "SELECT 1 FROM list_members WHERE list = ?1 AND address = ?2")
SQL(SQL_LIST_MEMBER_ENABLED, "SELECT enabled FROM list_members WHERE list = ?1 AND address = ?2")
SQL(SQL_LIST_MEMBER_COUNT, "SELECT count(*) FROM list_members WHERE list = ?1 AND enabled = 1")
/* each member, and whether its domain is ours; ?2 LIST_MEMBERS_MAX + 1 */
SQL(SQL_LIST_MEMBERS,
    "SELECT m.address, EXISTS (SELECT 1 FROM domains d WHERE "
    "d.name = substr(m.address, instr(m.address, '@') + 1)) "
    "FROM list_members m WHERE m.list = ?1 AND m.enabled = 1 LIMIT ?2")
SQL(SQL_LIST_MEMBER_JOIN,
    "INSERT INTO list_members (list, address, enabled) VALUES (?1, ?2, 1) "
    "ON CONFLICT (list, address) DO UPDATE SET enabled = 1")
SQL(SQL_LIST_MEMBER_DISABLE, "UPDATE list_members SET enabled = 0 WHERE list = ?1 AND address = ?2")
SQL(SQL_LIST_MEMBER_DELETE, "DELETE FROM list_members WHERE list = ?1 AND address = ?2")

/* ---- a list's bounces: list_bounces (list.c) ---- */
SQL(SQL_LIST_BOUNCES_RECENT,
    "SELECT count(*) FROM list_bounces WHERE list = ?1 AND address = ?2 AND at > ?3")
SQL(SQL_LIST_BOUNCE_ADD, "INSERT INTO list_bounces (list, address, at) VALUES (?1, ?2, ?3)")
SQL(SQL_LIST_BOUNCES_CLEAR, "DELETE FROM list_bounces WHERE list = ?1 AND address = ?2")
SQL(SQL_LIST_BOUNCES_EXPIRE, "DELETE FROM list_bounces WHERE at <= ?1")

/* ---- confirmations and held posts: list_pending (list.c) ---- */
SQL(SQL_LIST_PENDING_FIND,
    "SELECT list, address, action, held, expires_at FROM list_pending "
    "WHERE token_hash = ?1 AND list = ?2 AND expires_at > ?3 AND action <> 'help'")
/* the same row, deleted as it is read, so one token confirms once */
SQL(SQL_LIST_PENDING_TAKE,
    "DELETE FROM list_pending WHERE token_hash = ?1 AND list = ?2 AND expires_at > ?3 "
    "AND action <> 'help' RETURNING list, address, action, held, expires_at")
SQL(SQL_LIST_PENDING_COUNT,
    "SELECT count(*), sum(address = ?2 AND action = ?3) FROM list_pending "
    "WHERE list = ?1 AND expires_at > ?4")
SQL(SQL_LIST_PENDING_ADD,
    "INSERT INTO list_pending (token_hash, list, address, action, held, created_at, "
    "expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
/* ?2 LIST_EXPIRE_HELD_MAX */
SQL(SQL_LIST_PENDING_HELD_EXPIRED,
    "SELECT held FROM list_pending WHERE expires_at <= ?1 AND held IS NOT NULL LIMIT ?2")
SQL(SQL_LIST_PENDING_EXPIRE, "DELETE FROM list_pending WHERE expires_at <= ?1")
SQL(SQL_LIST_PENDING_HOLDS, "SELECT 1 FROM list_pending WHERE held = ?1")

/* ---- the queue: queue_messages, queue_recipients (spool.c, queue/) ---- */
SQL(SQL_QUEUE_MESSAGE_INSERT,
    "INSERT INTO queue_messages (id, sender, size, body_8bit, smtputf8, "
    "created_at, client_ip, auth_login, verp) "
    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")
SQL(SQL_QUEUE_RECIPIENT_INSERT,
    "INSERT OR IGNORE INTO queue_recipients (message_id, recipient, orig_rcpt, "
    "next_attempt) VALUES (?1, ?2, ?3, ?4)")
SQL(SQL_QUEUE_MESSAGE_EXISTS, "SELECT 1 FROM queue_messages WHERE id = ?1")
SQL(SQL_QUEUE_RECIPIENTS_DELETE, "DELETE FROM queue_recipients WHERE message_id = ?1")
SQL(SQL_QUEUE_MESSAGE_DELETE, "DELETE FROM queue_messages WHERE id = ?1")
/* the recipients a pass delivers to; ?2 QUEUE_PASS_RECIPIENTS_MAX */
SQL(SQL_QUEUE_DUE,
    "SELECT r.message_id, r.recipient, r.attempts, m.sender, m.size, m.body_8bit, "
    "m.smtputf8, m.created_at, m.verp, r.orig_rcpt FROM queue_recipients r "
    "JOIN queue_messages m ON m.id = r.message_id "
    "WHERE r.state = 'queued' AND r.next_attempt <= ?1 "
    "ORDER BY m.created_at, r.message_id, r.rowid LIMIT ?2")
SQL(SQL_QUEUE_DUE_ANY,
    "SELECT 1 FROM queue_recipients WHERE state = 'queued' AND next_attempt <= ?1 LIMIT 1")
/* one delivery attempt's result */
SQL(SQL_QUEUE_RECORD,
    "UPDATE queue_recipients SET state = ?3, attempts = attempts + 1, "
    "next_attempt = ?4, last_error = ?5, last_status = ?6, last_mta = ?7, "
    "last_command = ?8, dsn_sent = 0 "
    "WHERE message_id = ?1 AND recipient = ?2 AND state = 'queued'")
SQL(SQL_QUEUE_MESSAGE_LOAD, "SELECT sender, created_at, verp FROM queue_messages WHERE id = ?1")
/* the recipients of a bounce (?2: how many fit in one) */
SQL(SQL_QUEUE_BOUNCED_UNTOLD,
    "SELECT recipient, orig_rcpt, last_status, last_error, last_command, last_mta "
    "FROM queue_recipients WHERE message_id = ?1 AND state = 'bounced' "
    "AND dsn_sent = 0 ORDER BY rowid LIMIT ?2")
/* the recipients of a delay warning (?2: how many fit in one) */
SQL(SQL_QUEUE_DEFERRED,
    "SELECT recipient, orig_rcpt, last_status, last_error, last_command, last_mta "
    "FROM queue_recipients WHERE message_id = ?1 AND state = 'queued' "
    "AND attempts > 0 ORDER BY rowid LIMIT ?2")
/* messages with recipients that failed and whose sender is not yet told */
SQL(SQL_QUEUE_TO_BOUNCE,
    "SELECT DISTINCT message_id FROM queue_recipients WHERE state = 'bounced' AND dsn_sent = 0")
SQL(SQL_QUEUE_MARK_TOLD,
    "UPDATE queue_recipients SET dsn_sent = 1 WHERE message_id = ?1 AND recipient = ?2")
/* messages waiting since before ?1 that have not had their delay warning */
SQL(SQL_QUEUE_TO_WARN,
    "SELECT m.id FROM queue_messages m WHERE m.warned = 0 AND m.created_at <= ?1 "
    "AND EXISTS (SELECT 1 FROM queue_recipients r WHERE r.message_id = m.id "
    "AND r.state = 'queued' AND r.attempts > 0)")
SQL(SQL_QUEUE_MARK_WARNED, "UPDATE queue_messages SET warned = 1 WHERE id = ?1")
/* messages whose every recipient is final and told */
SQL(SQL_QUEUE_FINISHED,
    "SELECT m.id FROM queue_messages m WHERE NOT EXISTS ("
    "SELECT 1 FROM queue_recipients r WHERE r.message_id = m.id AND "
    "(r.state = 'queued' OR (r.state = 'bounced' AND r.dsn_sent = 0)))")
