/* The statements of sql.h in PostgreSQL's dialect, for the tables several
 * hosts share (schema/postgresql.sql): the same names, the same
 * parameters by number ($1 for ?1) and the same columns in each row, so
 * a caller of db_stmt() cannot tell the engines apart. The outbound
 * queue's statements (SQL_QUEUE_*) have no twin: the queue stays in each
 * host's SQLite file. Issue 25 is under way: no program reads this list
 * yet; tests/protocol/test_postgresql_schema.py prepares every text on a
 * real PostgreSQL and runs them beside SQLite's.
 *
 * What differs from SQLite's texts: a parameter whose type PostgreSQL
 * cannot infer is cast; a comparison or EXISTS that SQLite returns as 0/1
 * is cast to integer; instr() is position(); INSERT OR REPLACE is an
 * upsert; auth_pending's rowid is its id column. */

/* ---- transactions and durability ---- */
SQL(SQL_BEGIN_IMMEDIATE, "BEGIN")
SQL(SQL_BEGIN, "BEGIN")
SQL(SQL_COMMIT, "COMMIT")
SQL(SQL_ROLLBACK, "ROLLBACK")
SQL(SQL_SYNCHRONOUS_FULL, "SET synchronous_commit = on")
SQL(SQL_SYNCHRONOUS_NORMAL, "SET synchronous_commit = off")

/* ---- settings ---- */
SQL(SQL_SETTINGS_LOAD, "SELECT key, value FROM settings")
SQL(SQL_SRS_SECRET_INSERT,
    "INSERT INTO settings (key, value) VALUES ('srs_secret', $1) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value "
    "WHERE settings.value IS NULL OR settings.value = ''")
SQL(SQL_SRS_SECRET_SELECT, "SELECT value FROM settings WHERE key = 'srs_secret'")

/* ---- domains, addresses, forwards ---- */
SQL(SQL_DOMAIN_IS_LOCAL, "SELECT 1 FROM domains WHERE name = $1")
SQL(SQL_DOMAIN_NAMES, "SELECT name FROM domains ORDER BY name LIMIT $1")
SQL(SQL_ADDRESS_MAILBOX,
    "SELECT m.login, m.quota_bytes, m.enabled FROM addresses a "
    "JOIN mailboxes m ON m.login = a.mailbox WHERE a.address = $1")
SQL(SQL_FORWARD_TARGETS, "SELECT target FROM forwards WHERE address = $1 LIMIT $2")

/* ---- mailboxes and who may send as whom ---- */
SQL(SQL_MAILBOX_PASSWORD, "SELECT password, enabled FROM mailboxes WHERE login = $1")
SQL(SQL_MAILBOX_ANY_PASSWORD, "SELECT password FROM mailboxes LIMIT 1")
SQL(SQL_MAILBOX_QUOTA, "SELECT quota_bytes, enabled FROM mailboxes WHERE login = $1")
SQL(SQL_SEND_AS, "SELECT 1 FROM send_as WHERE login = $1 AND address IN ($2, $3)")

/* ---- the login throttle ---- */
SQL(SQL_AUTH_FAILURES, "SELECT failures FROM auth_failures WHERE ip_key = $1 AND last_at >= $2")
SQL(SQL_AUTH_SLOT_TAKE,
    "INSERT INTO auth_pending (ip_key, at) SELECT $1::text, $2::bigint WHERE "
    "(SELECT count(*) FROM auth_pending WHERE ip_key = $1 AND at >= $5::bigint) + "
    "coalesce((SELECT failures FROM auth_failures WHERE ip_key = $1 AND last_at >= $4::bigint), 0) "
    "< $3::bigint RETURNING id")
SQL(SQL_AUTH_SLOT_RELEASE, "DELETE FROM auth_pending WHERE id = $1")
SQL(SQL_AUTH_FAILURE_RECORD,
    "INSERT INTO auth_failures AS f (ip_key, failures, first_at, last_at) "
    "VALUES ($1, 1, $2, $2) ON CONFLICT (ip_key) DO UPDATE SET "
    "failures = CASE WHEN f.last_at < $3 THEN 1 ELSE f.failures + 1 END, "
    "first_at = CASE WHEN f.last_at < $3 THEN excluded.first_at ELSE f.first_at END, "
    "last_at = excluded.last_at")
SQL(SQL_AUTH_FAILURES_PRUNE, "DELETE FROM auth_failures WHERE last_at < $1")
SQL(SQL_AUTH_PENDING_PRUNE, "DELETE FROM auth_pending WHERE at < $1")

/* ---- address harvesting ---- */
SQL(SQL_HARVEST_REFUSALS, "SELECT refusals FROM harvest WHERE ip_key = $1 AND last_at >= $2")
SQL(SQL_HARVEST_COUNT,
    "INSERT INTO harvest AS h (ip_key, refusals, first_at, last_at) VALUES ($1, 1, $2, $2) "
    "ON CONFLICT (ip_key) DO UPDATE SET "
    "refusals = CASE WHEN h.last_at < $3 THEN 1 ELSE h.refusals + 1 END, "
    "first_at = CASE WHEN h.last_at < $3 THEN excluded.first_at ELSE h.first_at END, "
    "last_at = excluded.last_at RETURNING refusals")

/* ---- messages per login and hour ---- */
SQL(SQL_SEND_COUNT, "SELECT count FROM send_counts WHERE login = $1 AND hour = $2")
SQL(SQL_SEND_COUNT_ADD,
    "INSERT INTO send_counts AS s (login, hour, count) VALUES ($1, $2, $3) "
    "ON CONFLICT (login, hour) DO UPDATE SET count = s.count + excluded.count")
SQL(SQL_SEND_COUNTS_PRUNE, "DELETE FROM send_counts WHERE hour < $1")

/* ---- relaying ---- */
SQL(SQL_RELAY_NETWORKS, "SELECT network FROM relay_networks")
SQL(SQL_POP_LOGIN_RECENT, "SELECT login FROM pop_logins WHERE ip = $1 AND at >= $2")
SQL(SQL_POP_LOGIN_RECORD,
    "INSERT INTO pop_logins (ip, login, at) VALUES ($1, $2, $3) "
    "ON CONFLICT (ip) DO UPDATE SET login = excluded.login, at = excluded.at")

/* ---- TLS session-ticket master keys ---- */
SQL(SQL_TLS_TICKET_KEY_FRESH,
    "SELECT key FROM tls_ticket_keys WHERE created_at > $1 ORDER BY created_at DESC LIMIT 1")
SQL(SQL_TLS_TICKET_KEY_STORE,
    "INSERT INTO tls_ticket_keys (created_at, key) VALUES ($1, $2) "
    "ON CONFLICT (created_at) DO UPDATE SET key = excluded.key")
SQL(SQL_TLS_TICKET_KEYS_PRUNE, "DELETE FROM tls_ticket_keys WHERE created_at < $1")

/* ---- DKIM signing keys ---- */
SQL(SQL_DKIM_KEYS,
    "SELECT selector, algorithm, private_key_path FROM dkim_keys "
    "WHERE domain = $1 AND enabled = 1 "
    "ORDER BY algorithm = 'ed25519-sha256', selector LIMIT $2")

/* ---- mailing lists ---- */
SQL(SQL_LIST_LOOKUP,
    "SELECT address, owner, posting, archive, subject_prefix, (address = $1)::int "
    "FROM lists WHERE address = $1 OR address = $2 "
    "ORDER BY address = $1 DESC LIMIT 1")
SQL(SQL_LIST_LOAD, "SELECT address, owner, posting, archive, subject_prefix FROM lists WHERE address = $1")
SQL(SQL_LIST_IS_MEMBER, "SELECT 1 FROM list_members WHERE list = $1 AND address = $2")
SQL(SQL_LIST_MEMBER_ENABLED, "SELECT enabled FROM list_members WHERE list = $1 AND address = $2")
SQL(SQL_LIST_MEMBER_COUNT, "SELECT count(*) FROM list_members WHERE list = $1 AND enabled = 1")
SQL(SQL_LIST_MEMBERS,
    "SELECT m.address, EXISTS (SELECT 1 FROM domains d WHERE "
    "d.name = substr(m.address, position('@' IN m.address) + 1))::int "
    "FROM list_members m WHERE m.list = $1 AND m.enabled = 1 LIMIT $2")
SQL(SQL_LIST_MEMBER_JOIN,
    "INSERT INTO list_members (list, address, enabled) VALUES ($1, $2, 1) "
    "ON CONFLICT (list, address) DO UPDATE SET enabled = 1")
SQL(SQL_LIST_MEMBER_DISABLE, "UPDATE list_members SET enabled = 0 WHERE list = $1 AND address = $2")
SQL(SQL_LIST_MEMBER_DELETE, "DELETE FROM list_members WHERE list = $1 AND address = $2")

/* ---- a list's bounces ---- */
SQL(SQL_LIST_BOUNCES_RECENT,
    "SELECT count(*) FROM list_bounces WHERE list = $1 AND address = $2 AND at > $3")
SQL(SQL_LIST_BOUNCE_ADD, "INSERT INTO list_bounces (list, address, at) VALUES ($1, $2, $3)")
SQL(SQL_LIST_BOUNCES_CLEAR, "DELETE FROM list_bounces WHERE list = $1 AND address = $2")
SQL(SQL_LIST_BOUNCES_EXPIRE, "DELETE FROM list_bounces WHERE at <= $1")

/* ---- confirmations and held posts ---- */
SQL(SQL_LIST_PENDING_FIND,
    "SELECT list, address, action, held, expires_at FROM list_pending "
    "WHERE token_hash = $1 AND list = $2 AND expires_at > $3 AND action <> 'help'")
SQL(SQL_LIST_PENDING_TAKE,
    "DELETE FROM list_pending WHERE token_hash = $1 AND list = $2 AND expires_at > $3 "
    "AND action <> 'help' RETURNING list, address, action, held, expires_at")
SQL(SQL_LIST_PENDING_COUNT,
    "SELECT count(*), count(*) FILTER (WHERE address = $2 AND action = $3) FROM list_pending "
    "WHERE list = $1 AND expires_at > $4")
SQL(SQL_LIST_PENDING_ADD,
    "INSERT INTO list_pending (token_hash, list, address, action, held, created_at, "
    "expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
SQL(SQL_LIST_PENDING_HELD_EXPIRED,
    "SELECT held FROM list_pending WHERE expires_at <= $1 AND held IS NOT NULL LIMIT $2")
SQL(SQL_LIST_PENDING_EXPIRE, "DELETE FROM list_pending WHERE expires_at <= $1")
SQL(SQL_LIST_PENDING_HOLDS, "SELECT 1 FROM list_pending WHERE held = $1")
