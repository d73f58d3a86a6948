#include "db.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "limits.h"
#include "log.h"
#include "pgwire.h"

static const char *const sql_text[SQL_COUNT] = {
#define SQL(id, text) [id] = text,
#include "sql.h"
#undef SQL
};

/* PostgreSQL's texts; NULL for a statement that stays on the host's
 * SQLite file (the queue's). */
static const char *const pg_text[SQL_COUNT] = {
#define SQL(id, text) [id] = text,
#include "sql-postgresql.h"
#undef SQL
};

/* A statement: on SQLite, st; on PostgreSQL (st NULL), its parameters,
 * then the rows of its one run. */
struct db_q {
	sqlite3_stmt *st;
	enum sql_id id;
	int scanned;      /* nparams is known */
	int nparams;      /* the highest $N of its text */
	int ran;          /* run since the last reset */
	int row;          /* the current row, -1 before the first */
	const char *val[PGWIRE_PARAMS_MAX];
	int len[PGWIRE_PARAMS_MAX], fmt[PGWIRE_PARAMS_MAX];
	char num[PGWIRE_PARAMS_MAX][24];
	struct pgwire_result res;
	unsigned char *blob; /* a bytea column, decoded */
	size_t blob_len;
};

static const char *path_override, *host_path_override;
/* SQLite: the database; with PostgreSQL, the host's own file (its queue
 * and the settings that differ per host). */
static sqlite3 *db;
static int db_state = -1; /* -1 not tried, else enum db_status */

/* PostgreSQL (--db postgresql://...): the shared tables there, the
 * queue's in the host file. */
static int pg;
static struct pgwire_target pg_target;
/* A transaction begun by db_begin (1) or db_read_begin (2) starts on each
 * engine at its first statement there; pg_in / lite_in say where it did. */
static int tx_kind, pg_in, lite_in;
/* What db_changes and db_errmsg report: the last statement's engine. */
static int last_pg, pg_changes;
static char pg_error[300];

/* One slot a statement of sql.h, prepared on first use. */
static struct db_q cache[SQL_COUNT];

void db_set_path(const char *path)
{
	path_override = path;
}

const char *db_path(void)
{
	const char *env;

	if (path_override && *path_override)
		return path_override;
	env = getenv("POSTAGE_DB");
	if (env && *env)
		return env;
	return DB_DEFAULT_PATH;
}

void db_set_host_path(const char *path)
{
	host_path_override = path;
}

const char *db_host_path(void)
{
	const char *env;

	if (host_path_override && *host_path_override)
		return host_path_override;
	env = getenv("POSTAGE_HOST_DB");
	if (env && *env)
		return env;
	return DB_DEFAULT_HOST_PATH;
}

int db_is_postgresql(void)
{
	return pgwire_is_uri(db_path());
}

sqlite3 *db_handle(void)
{
	return db_state == DB_OK ? db : NULL;
}

static struct db_q *prepared(enum sql_id id);

/* ---- PostgreSQL's side of a statement ---- */

static void pg_reset(struct db_q *q)
{
	q->ran = 0;
	q->row = -1;
	pgwire_result_clear(&q->res);
	free(q->blob);
	q->blob = NULL;
	q->blob_len = 0;
}

/* The highest $N of a text (0 when none); -1 beyond PGWIRE_PARAMS_MAX. */
static int pg_param_scan(const char *t)
{
	int max = 0;

	for (; *t; t++) {
		if (*t == '$' && t[1] >= '1' && t[1] <= '9') {
			int n = (int)strtol(t + 1, NULL, 10);

			if (n > max)
				max = n;
		}
	}
	return max > PGWIRE_PARAMS_MAX ? -1 : max;
}

/* A failure of PostgreSQL as a step's result: what a failover, a
 * restart, a lost connection or a standby that cannot write look like
 * is DB_BUSY (try again), anything else DB_ERROR. Both reach the client
 * as a temporary error. */
static enum db_rc pg_failure(const struct pgwire_result *r)
{
	static const char *const busy[] = { "08", "40", "53", "57", "58" };

	snprintf(pg_error, sizeof(pg_error), "%s (SQLSTATE %s)", r->error, r->sqlstate);
	for (size_t i = 0; i < sizeof(busy) / sizeof(busy[0]); i++)
		if (strncmp(r->sqlstate, busy[i], 2) == 0)
			return DB_BUSY;
	if (strcmp(r->sqlstate, "25006") == 0 || strcmp(r->sqlstate, "55P03") == 0)
		return DB_BUSY;
	return DB_ERROR;
}

/* A statement without parameters or rows (BEGIN, COMMIT, ROLLBACK); 0 or
 * -1. want: the tag it must answer (COMMIT of a failed transaction
 * answers ROLLBACK), or NULL. */
static int pg_simple(const char *sql, const char *want)
{
	static struct pgwire_result r;

	if (pgwire_exec(sql, 0, NULL, NULL, NULL, &r) < 0) {
		pg_failure(&r);
		return -1;
	}
	if (want && strcmp(r.tag, want) != 0) {
		snprintf(pg_error, sizeof(pg_error), "%s answered %s", sql, r.tag);
		return -1;
	}
	return 0;
}

/* Outside a transaction, a connection that broke (a failover, a restart
 * of pgbouncer) is made again once, so a handler's next command works. */
static int pg_ready(void)
{
	char err[256];

	if (pgwire_connected())
		return 0;
	if (tx_kind && pg_in)
		return -1; /* the transaction died with the connection */
	if (pgwire_connect(&pg_target, err, sizeof(err)) < 0) {
		snprintf(pg_error, sizeof(pg_error), "%s", err);
		return -1;
	}
	return 0;
}

static enum db_rc pg_step(struct db_q *q)
{
	last_pg = 1;
	if (!q->ran) {
		if (pg_ready() < 0)
			return DB_BUSY;
		if (tx_kind && !pg_in) {
			if (pg_simple("BEGIN", NULL) < 0)
				return DB_BUSY;
			pg_in = 1;
		}
		q->ran = 1;
		q->row = -1;
		if (pgwire_exec(pg_text[q->id], q->nparams, q->val, q->len, q->fmt, &q->res) < 0) {
			enum db_rc rc = pg_failure(&q->res);

			pgwire_result_clear(&q->res);
			return rc;
		}
		/* rows a write changed: "INSERT 0 n", "UPDATE n", "DELETE n" */
		if (strncmp(q->res.tag, "SELECT", 6) != 0) {
			const char *sp = strrchr(q->res.tag, ' ');

			pg_changes = sp ? atoi(sp + 1) : 0;
		}
	}
	free(q->blob);
	q->blob = NULL;
	if (q->row + 1 < q->res.nrows) {
		q->row++;
		return DB_ROW;
	}
	q->row = q->res.nrows;
	return DB_DONE;
}

static const char *pg_col(struct db_q *q, int col, int *len)
{
	return pgwire_value(&q->res, q->row, col, len);
}

/* ---- the host's SQLite file beside PostgreSQL ---- */

/* What each host keeps for itself: its outbound queue (the tables of
 * schema.sql, to the letter: tests/protocol/test_postgresql_backend.py
 * compares them) and the settings that differ per host (hostname,
 * spool_dir ...), which override the shared ones. */
static const char host_schema[] =
	"CREATE TABLE settings (\n"
	"    key   TEXT PRIMARY KEY NOT NULL,\n"
	"    value TEXT\n"
	");\n"
	"CREATE TABLE queue_messages (\n"
	"    id          TEXT PRIMARY KEY NOT NULL,\n"
	"    sender      TEXT NOT NULL,\n"
	"    size        INTEGER NOT NULL,\n"
	"    body_8bit   INTEGER NOT NULL DEFAULT 0,\n"
	"    smtputf8    INTEGER NOT NULL DEFAULT 0,\n"
	"    created_at  INTEGER NOT NULL,\n"
	"    client_ip   TEXT,\n"
	"    auth_login  TEXT,\n"
	"    warned      INTEGER NOT NULL DEFAULT 0\n"
	", verp INTEGER NOT NULL DEFAULT 0);\n"
	"CREATE TABLE queue_recipients (\n"
	"    message_id   TEXT NOT NULL REFERENCES queue_messages(id) ON DELETE CASCADE,\n"
	"    recipient    TEXT NOT NULL,\n"
	"    orig_rcpt    TEXT,\n"
	"    state        TEXT NOT NULL DEFAULT 'queued'\n"
	"        CHECK (state IN ('queued', 'sent', 'bounced')),\n"
	"    attempts     INTEGER NOT NULL DEFAULT 0,\n"
	"    next_attempt INTEGER NOT NULL DEFAULT 0,\n"
	"    last_error   TEXT,\n"
	"    last_status  TEXT,\n"
	"    last_mta     TEXT,\n"
	"    last_command TEXT,\n"
	"    dsn_sent     INTEGER NOT NULL DEFAULT 0,\n"
	"    PRIMARY KEY (message_id, recipient)\n"
	");\n"
	"CREATE INDEX queue_recipients_due ON queue_recipients(state, next_attempt);\n";

/* PRAGMA user_version of the open SQLite file, or -1. */
static int lite_version(void)
{
	sqlite3_stmt *st = NULL;
	int v = -1;

	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return v;
}

/* Opens path as the SQLite handle: read-write (a file opened read-only
 * would make a runner resend mail), the busy timeout, short WALs.
 * create: make the file when it is missing. 0 or -1 (logged). */
static int lite_open(const char *path, int create)
{
	int rc = sqlite3_open_v2(path, &db,
				 SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX |
					 (create ? SQLITE_OPEN_CREATE : 0),
				 NULL);

	if (rc != SQLITE_OK) {
		log_event(LOG_ERR, "event=db_open result=error db=%s error=\"%s\"", path,
			  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		db = NULL;
		return -1;
	}
	/* When opening for writing fails (EACCES, EROFS after the file
	 * system went read-only on an error, EIO), SQLite quietly opens the
	 * file read-only instead. Every program here must write (the queue
	 * runner its results: read-only, it would send the same mail on every
	 * run), so that is a temporary failure too. */
	if (sqlite3_db_readonly(db, "main") != 0) {
		log_event(LOG_ERR, "event=db_open result=error db=%s error=\"opened read-only: the "
			  "database or its directory cannot be written\"", path);
		sqlite3_close(db);
		db = NULL;
		return -1;
	}
	sqlite3_busy_timeout(db, DB_BUSY_TIMEOUT_MS);
	/* Every handler opens the database alone, and a process that finds
	 * no other connection open rebuilds the WAL index from the whole WAL
	 * file: a long WAL costs every connection (bench/README.md). Keep it
	 * short by checkpointing often. */
	sqlite3_wal_autocheckpoint(db, DB_WAL_AUTOCHECKPOINT_PAGES);
	return 0;
}

static void version_refused(const char *where, int version, const char *how)
{
	if (version < DB_SCHEMA_VERSION)
		log_event(LOG_ERR,
			  "event=db_open result=version db=%s user_version=%d wanted=%d "
			  "action=\"run: %s (new database) or apply schema/migrations/ in order\"",
			  where, version, DB_SCHEMA_VERSION, how);
	else
		log_event(LOG_ERR,
			  "event=db_open result=version db=%s user_version=%d wanted=%d "
			  "action=\"the database is newer than this program: install the "
			  "postage that made it\"",
			  where, version, DB_SCHEMA_VERSION);
}

/* The host file: made on first use (the queue is postage's own), else
 * checked. 0, or the failure. */
static enum db_status host_open(void)
{
	const char *path = db_host_path();
	char *err = NULL;
	int version;

	if (lite_open(path, 1) < 0)
		return DB_TEMPFAIL;
	version = lite_version();
	if (version == 0) {
		/* WAL cannot be turned on inside a transaction; two processes
		 * making the file at once both ask, harmlessly. */
		sqlite3_exec(db, "PRAGMA journal_mode = WAL", NULL, NULL, NULL);
		if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &err) != SQLITE_OK)
			goto failed;
		version = lite_version();
		if (version == 0 &&
		    (sqlite3_exec(db, host_schema, NULL, NULL, &err) != SQLITE_OK ||
		     sqlite3_exec(db, "PRAGMA user_version = " DB_SCHEMA_VERSION_TEXT, NULL, NULL,
				  &err) != SQLITE_OK)) {
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			goto failed;
		}
		if (sqlite3_exec(db, "COMMIT", NULL, NULL, &err) != SQLITE_OK) {
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
			goto failed;
		}
		if (version == 0) {
			version = DB_SCHEMA_VERSION;
			log_event(LOG_NOTICE, "event=db_open result=created db=%s", path);
		}
	}
	if (version != DB_SCHEMA_VERSION) {
		version_refused(path, version, "remove it: postage makes it again (after the queue is empty)");
		return DB_VERSION;
	}
	return DB_OK;
failed:
	log_event(LOG_ERR, "event=db_open result=error db=%s error=\"%s\"", path,
		  err ? err : sqlite3_errmsg(db));
	sqlite3_free(err);
	return DB_TEMPFAIL;
}

/* The shared database on PostgreSQL, then the host file, then the
 * settings of both (the host's win). */
static enum db_status pg_open(void)
{
	static struct pgwire_result r;
	struct db_q q = { 0 };
	sqlite3_stmt *st = NULL;
	enum db_status hs;
	const char *v;
	int version, len;

	if (pgwire_parse_uri(db_path(), &pg_target) < 0) {
		log_event(LOG_ERR, "event=db_open result=error error=\"--db: not a postgresql:// URI "
			  "postage understands (host, port, user, password, dbname, connect_timeout)\"");
		return DB_TEMPFAIL;
	}
	pg = 1;
	if (pg_ready() < 0) {
		log_event(LOG_ERR, "event=db_open result=error engine=postgresql error=\"%s\"", pg_error);
		return DB_TEMPFAIL;
	}
	if (pgwire_exec("SELECT version FROM postage_schema", 0, NULL, NULL, NULL, &r) < 0 ||
	    !(v = pgwire_value(&r, 0, 0, &len))) {
		log_event(LOG_ERR, "event=db_open result=error engine=postgresql error=\"%s\"",
			  r.failed ? r.error : "postage_schema has no row");
		return DB_TEMPFAIL;
	}
	version = atoi(v);
	if (version != DB_SCHEMA_VERSION) {
		version_refused("postgresql", version, "psql -d postage -f schema/postgresql.sql");
		return DB_VERSION;
	}
	hs = host_open();
	if (hs != DB_OK)
		return hs;
	if (config_load(prepared(SQL_SETTINGS_LOAD)) < 0)
		return DB_TEMPFAIL;
	if (sqlite3_prepare_v2(db, "SELECT key, value FROM settings", -1, &st, NULL) != SQLITE_OK) {
		log_event(LOG_ERR, "event=settings result=error db=%s error=\"%s\"", db_host_path(),
			  sqlite3_errmsg(db));
		return DB_TEMPFAIL;
	}
	q.st = st;
	version = config_load(&q);
	sqlite3_finalize(st);
	return version < 0 ? DB_TEMPFAIL : DB_OK;
}

/* The statement id, prepared (once) on the open database, reset and
 * unbound. NULL when it cannot be prepared (not logged). */
static struct db_q *prepared(enum sql_id id)
{
	struct db_q *q = &cache[id];

	if (pg && pg_text[id]) {
		if (!q->scanned) {
			int n = pg_param_scan(pg_text[id]);

			if (n < 0)
				return NULL;
			q->nparams = n;
			q->scanned = 1;
		}
		pg_reset(q);
		q->id = id;
		for (int i = 0; i < PGWIRE_PARAMS_MAX; i++)
			q->val[i] = NULL;
		return q;
	}
	if (q->st) {
		sqlite3_reset(q->st);
		sqlite3_clear_bindings(q->st);
		return q;
	}
	if (sqlite3_prepare_v3(db, sql_text[id], -1, SQLITE_PREPARE_PERSISTENT, &q->st, NULL) !=
	    SQLITE_OK)
		return NULL; /* and q->st is NULL */
	return q;
}

enum db_status db_open(void)
{
	int version;

	if (db_state >= 0)
		return (enum db_status)db_state;
	if (pgwire_is_uri(db_path())) {
		db_state = pg_open();
		return (enum db_status)db_state;
	}
	if (lite_open(db_path(), 0) < 0) {
		db_state = DB_TEMPFAIL;
		return DB_TEMPFAIL;
	}
	version = lite_version();
	if (version < 0) {
		log_event(LOG_ERR, "event=db_open result=error db=%s error=\"%s\"", db_path(),
			  sqlite3_errmsg(db));
		db_state = DB_TEMPFAIL;
		return DB_TEMPFAIL;
	}
	if (version != DB_SCHEMA_VERSION) {
		char how[600];

		snprintf(how, sizeof(how), "sqlite3 %s < schema/schema.sql", db_path());
		version_refused(db_path(), version, how);
		db_state = DB_VERSION;
		return DB_VERSION;
	}
	if (config_load(prepared(SQL_SETTINGS_LOAD)) < 0) {
		db_state = DB_TEMPFAIL;
		return DB_TEMPFAIL;
	}
	db_state = DB_OK;
	return DB_OK;
}

struct db_q *db_stmt(enum sql_id id)
{
	struct db_q *q;

	if (db_open() != DB_OK)
		return NULL;
	q = prepared(id);
	if (!q)
		log_event(LOG_ERR, "event=db_prepare result=error error=\"%s\"",
			  pg && pg_text[id] ? "too many parameters" : sqlite3_errmsg(db));
	return q;
}

void db_bind_text(struct db_q *q, int i, const char *s)
{
	if (q->st) {
		sqlite3_bind_text(q->st, i, s, -1, SQLITE_STATIC);
	} else if (i >= 1 && i <= PGWIRE_PARAMS_MAX) {
		q->val[i - 1] = s;
		q->fmt[i - 1] = 0;
	}
}

void db_bind_int64(struct db_q *q, int i, long long v)
{
	if (q->st) {
		sqlite3_bind_int64(q->st, i, (sqlite3_int64)v);
	} else if (i >= 1 && i <= PGWIRE_PARAMS_MAX) {
		snprintf(q->num[i - 1], sizeof(q->num[i - 1]), "%lld", v);
		q->val[i - 1] = q->num[i - 1];
		q->fmt[i - 1] = 0;
	}
}

void db_bind_blob(struct db_q *q, int i, const void *p, size_t n)
{
	if (q->st) {
		sqlite3_bind_blob(q->st, i, p, (int)n, SQLITE_STATIC);
	} else if (i >= 1 && i <= PGWIRE_PARAMS_MAX) {
		/* binary format: the bytes as they are, for a bytea */
		q->val[i - 1] = p ? p : "";
		q->len[i - 1] = (int)n;
		q->fmt[i - 1] = 1;
	}
}

int db_param_count(struct db_q *q)
{
	return q->st ? sqlite3_bind_parameter_count(q->st) : q->nparams;
}

/* With PostgreSQL, a transaction reaches the host file at its first
 * statement there. 0 or -1. */
static int lite_join(void)
{
	if (!tx_kind || lite_in)
		return 0;
	if (sqlite3_exec(db, tx_kind == 1 ? "BEGIN IMMEDIATE" : "BEGIN", NULL, NULL, NULL) !=
	    SQLITE_OK)
		return -1;
	lite_in = 1;
	return 0;
}

enum db_rc db_step(struct db_q *q)
{
	if (!q->st)
		return pg_step(q);
	if (pg) {
		last_pg = 0;
		if (!sqlite3_stmt_busy(q->st) && lite_join() < 0)
			return DB_BUSY;
	}
	switch (sqlite3_step(q->st) & 0xff) {
	case SQLITE_ROW:
		return DB_ROW;
	case SQLITE_DONE:
		return DB_DONE;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return DB_BUSY;
	default:
		return DB_ERROR;
	}
}

void db_reset(struct db_q *q)
{
	if (q->st)
		sqlite3_reset(q->st);
	else
		pg_reset(q);
}

const char *db_col_text(struct db_q *q, int col)
{
	int len;

	if (q->st)
		return (const char *)sqlite3_column_text(q->st, col);
	return pg_col(q, col, &len);
}

long long db_col_int64(struct db_q *q, int col)
{
	int len;
	const char *v;

	if (q->st)
		return sqlite3_column_int64(q->st, col);
	v = pg_col(q, col, &len);
	return v ? strtoll(v, NULL, 10) : 0;
}

int db_col_int(struct db_q *q, int col)
{
	return q->st ? sqlite3_column_int(q->st, col) : (int)db_col_int64(q, col);
}

/* A bytea column arrives as text, "\x" and hex digits. */
static void pg_blob(struct db_q *q, int col)
{
	int len;
	const char *v = pg_col(q, col, &len);
	size_t n;

	free(q->blob);
	q->blob = NULL;
	q->blob_len = 0;
	if (!v || len < 2 || v[0] != '\\' || v[1] != 'x' || len % 2 != 0)
		return;
	n = (size_t)(len - 2) / 2;
	q->blob = malloc(n ? n : 1);
	if (!q->blob)
		return;
	for (size_t i = 0; i < n; i++) {
		unsigned hi, lo;

		if (sscanf(v + 2 + 2 * i, "%1x%1x", &hi, &lo) != 2) {
			free(q->blob);
			q->blob = NULL;
			return;
		}
		q->blob[i] = (unsigned char)(hi << 4 | lo);
	}
	q->blob_len = n;
}

const void *db_col_blob(struct db_q *q, int col)
{
	if (q->st)
		return sqlite3_column_blob(q->st, col);
	pg_blob(q, col);
	return q->blob;
}

size_t db_col_bytes(struct db_q *q, int col)
{
	if (q->st)
		return (size_t)sqlite3_column_bytes(q->st, col);
	if (!q->blob)
		pg_blob(q, col);
	return q->blob_len;
}

int db_col_is_null(struct db_q *q, int col)
{
	int len;

	if (q->st)
		return sqlite3_column_type(q->st, col) == SQLITE_NULL;
	return pg_col(q, col, &len) == NULL;
}

void db_col_copy(struct db_q *q, int col, char *out, size_t cap)
{
	const char *v = db_col_text(q, col);

	snprintf(out, cap, "%s", v ? v : "");
}

int db_row_int(struct db_q *q, long long *out)
{
	enum db_rc rc = db_step(q);

	if (rc == DB_ROW)
		*out = db_col_int64(q, 0);
	db_reset(q);
	if (rc == DB_ROW)
		return 1;
	return rc == DB_DONE ? 0 : -1;
}

long long db_int_lookup(enum sql_id id, const char *text, long long num)
{
	struct db_q *q = db_stmt(id);
	long long n = 0;

	if (!q)
		return -1;
	db_bind_text(q, 1, text);
	db_bind_int64(q, 2, num);
	return db_row_int(q, &n) < 0 ? -1 : n;
}

void db_prune(enum sql_id id, long long before)
{
	struct db_q *q = db_stmt(id);

	if (!q)
		return;
	db_bind_int64(q, 1, before);
	db_step(q);
	db_reset(q);
}

int db_changes(void)
{
	return pg && last_pg ? pg_changes : sqlite3_changes(db);
}

const char *db_errmsg(void)
{
	if (pg && last_pg)
		return pg_error;
	return db ? sqlite3_errmsg(db) : "the database is not open";
}

static int exec_simple(enum sql_id id)
{
	struct db_q *q = db_stmt(id);
	enum db_rc rc;

	if (!q)
		return -1;
	rc = db_step(q);
	db_reset(q);
	if (rc != DB_DONE) {
		log_event(LOG_WARNING, "event=db_exec result=error sql=\"%s\" error=\"%s\"",
			  sql_text[id], db_errmsg());
		return -1;
	}
	return 0;
}

/* With PostgreSQL: ends the transaction on both engines. PostgreSQL
 * commits first: where the two disagree after a crash, a shared row
 * (a list's confirmation token) stands without the queued mail that
 * would have told of it, and expires; the other order could send a
 * token that does not exist. 0 or -1 (then both rolled back, as far as
 * they can be). */
static int pg_tx_end(int commit)
{
	int rc = 0;

	if (pg_in) {
		if (commit)
			rc = pg_simple("COMMIT", "COMMIT");
		else if (pgwire_connected())
			pg_simple("ROLLBACK", NULL);
		if (commit && rc < 0)
			log_event(LOG_WARNING, "event=db_exec result=error sql=COMMIT engine=postgresql "
				  "error=\"%s\"", pg_error);
	}
	if (lite_in) {
		if (commit && rc == 0 && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
			log_event(LOG_WARNING, "event=db_exec result=error sql=COMMIT db=%s error=\"%s\"",
				  db_host_path(), sqlite3_errmsg(db));
			rc = -1;
		}
		if (!sqlite3_get_autocommit(db))
			sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
	}
	tx_kind = pg_in = lite_in = 0;
	return rc;
}

int db_begin(void)
{
	if (pg) {
		pg_tx_end(0);
		tx_kind = 1;
		return 0;
	}
	return exec_simple(SQL_BEGIN_IMMEDIATE);
}

int db_commit(void)
{
	if (pg)
		return pg_tx_end(1);
	if (exec_simple(SQL_COMMIT) < 0) {
		db_rollback();
		return -1;
	}
	return 0;
}

void db_durable(int on)
{
	struct db_q *q;

	/* PostgreSQL: every commit is durable. A session-wide
	 * synchronous_commit would outlive the statement on pgbouncer's
	 * shared server connections, and the throttle's few writes are not
	 * worth it. */
	if (pg)
		return;
	q = db_stmt(on ? SQL_SYNCHRONOUS_FULL : SQL_SYNCHRONOUS_NORMAL);
	if (q) {
		db_step(q);
		db_reset(q);
	}
}

void db_rollback(void)
{
	if (pg) {
		pg_tx_end(0);
		return;
	}
	if (db && !sqlite3_get_autocommit(db))
		exec_simple(SQL_ROLLBACK);
}

int db_read_begin(void)
{
	if (pg) {
		pg_tx_end(0);
		tx_kind = 2;
		return 0;
	}
	return exec_simple(SQL_BEGIN);
}

void db_read_end(void)
{
	if (pg) {
		pg_tx_end(1);
		return;
	}
	if (db && !sqlite3_get_autocommit(db) && exec_simple(SQL_COMMIT) < 0)
		db_rollback();
}

void db_close(void)
{
	for (size_t i = 0; i < SQL_COUNT; i++) {
		if (cache[i].st)
			sqlite3_finalize(cache[i].st);
		cache[i].st = NULL;
		pgwire_result_free(&cache[i].res);
		free(cache[i].blob);
		cache[i].blob = NULL;
	}
	if (db) {
		/* As at exit: the WAL is left for the next writer's
		 * autocheckpoint, not checkpointed (with fsyncs) here. */
		sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
		sqlite3_close(db);
	}
	db = NULL;
	pgwire_close();
	/* Never opened again: a later db_stmt() fails, as on a database
	 * that could not be opened. */
	db_state = DB_TEMPFAIL;
}

void db_checkpoint_defer(void)
{
	if (db_state == DB_OK)
		sqlite3_wal_autocheckpoint(db, 0);
}

void db_checkpoint(void)
{
	if (db_state != DB_OK)
		return;
	sqlite3_wal_autocheckpoint(db, DB_WAL_AUTOCHECKPOINT_PAGES);
	sqlite3_wal_checkpoint_v2(db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
}
