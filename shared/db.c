#include "db.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "limits.h"
#include "log.h"

static const char *const sql_text[SQL_COUNT] = {
#define SQL(id, text) [id] = text,
#include "sql.h"
#undef SQL
};

/* The SQLite statement behind a struct db_q. */
struct db_q {
	sqlite3_stmt *st;
};

static const char *path_override;
static sqlite3 *db;
static int db_state = -1; /* -1 not tried, else enum db_status */

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

sqlite3 *db_handle(void)
{
	return db_state == DB_OK ? db : NULL;
}

/* The statement id, prepared (once) on the open database, reset and
 * unbound. NULL when it cannot be prepared (not logged). */
static struct db_q *prepared(enum sql_id id)
{
	struct db_q *q = &cache[id];

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
	sqlite3_stmt *st = NULL;
	int rc, version;

	if (db_state >= 0)
		return (enum db_status)db_state;

	rc = sqlite3_open_v2(db_path(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		log_event(LOG_ERR, "event=db_open result=error db=%s error=\"%s\"", db_path(),
			  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
		sqlite3_close(db);
		db = NULL;
		db_state = DB_TEMPFAIL;
		return DB_TEMPFAIL;
	}
	/* When opening for writing fails (EACCES, EROFS after the file
	 * system went read-only on an error, EIO), SQLite quietly opens the
	 * file read-only instead. Every program here must write (the queue
	 * runner its results: read-only, it would send the same mail on every
	 * run), so that is a temporary failure too. */
	if (sqlite3_db_readonly(db, "main") != 0) {
		log_event(LOG_ERR, "event=db_open result=error db=%s error=\"opened read-only: the "
			  "database or its directory cannot be written\"", db_path());
		sqlite3_close(db);
		db = NULL;
		db_state = DB_TEMPFAIL;
		return DB_TEMPFAIL;
	}
	sqlite3_busy_timeout(db, DB_BUSY_TIMEOUT_MS);
	/* Every handler opens the database alone, and a process that finds
	 * no other connection open rebuilds the WAL index from the whole WAL
	 * file: a long WAL costs every connection (bench/README.md). Keep it
	 * short by checkpointing often. */
	sqlite3_wal_autocheckpoint(db, DB_WAL_AUTOCHECKPOINT_PAGES);

	rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		log_event(LOG_ERR, "event=db_open result=error db=%s error=\"%s\"", db_path(),
			  sqlite3_errmsg(db));
		sqlite3_finalize(st);
		db_state = DB_TEMPFAIL;
		return DB_TEMPFAIL;
	}
	version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (version != DB_SCHEMA_VERSION) {
		if (version < DB_SCHEMA_VERSION)
			log_event(LOG_ERR,
				  "event=db_open result=version db=%s user_version=%d wanted=%d "
				  "action=\"run: sqlite3 %s < schema/schema.sql (new database) or apply "
				  "schema/migrations/ in order\"",
				  db_path(), version, DB_SCHEMA_VERSION, db_path());
		else
			log_event(LOG_ERR,
				  "event=db_open result=version db=%s user_version=%d wanted=%d "
				  "action=\"the database is newer than this program: install the "
				  "postage that made it\"",
				  db_path(), version, DB_SCHEMA_VERSION);
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
		log_event(LOG_ERR, "event=db_prepare result=error error=\"%s\"", sqlite3_errmsg(db));
	return q;
}

void db_bind_text(struct db_q *q, int i, const char *s)
{
	sqlite3_bind_text(q->st, i, s, -1, SQLITE_STATIC);
}

void db_bind_int64(struct db_q *q, int i, long long v)
{
	sqlite3_bind_int64(q->st, i, (sqlite3_int64)v);
}

void db_bind_blob(struct db_q *q, int i, const void *p, size_t n)
{
	sqlite3_bind_blob(q->st, i, p, (int)n, SQLITE_STATIC);
}

int db_param_count(struct db_q *q)
{
	return sqlite3_bind_parameter_count(q->st);
}

enum db_rc db_step(struct db_q *q)
{
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
	sqlite3_reset(q->st);
}

const char *db_col_text(struct db_q *q, int col)
{
	return (const char *)sqlite3_column_text(q->st, col);
}

long long db_col_int64(struct db_q *q, int col)
{
	return sqlite3_column_int64(q->st, col);
}

int db_col_int(struct db_q *q, int col)
{
	return sqlite3_column_int(q->st, col);
}

const void *db_col_blob(struct db_q *q, int col)
{
	return sqlite3_column_blob(q->st, col);
}

size_t db_col_bytes(struct db_q *q, int col)
{
	return (size_t)sqlite3_column_bytes(q->st, col);
}

int db_col_is_null(struct db_q *q, int col)
{
	return sqlite3_column_type(q->st, col) == SQLITE_NULL;
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
	return sqlite3_changes(db);
}

const char *db_errmsg(void)
{
	return sqlite3_errmsg(db);
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

int db_begin(void)
{
	return exec_simple(SQL_BEGIN_IMMEDIATE);
}

int db_commit(void)
{
	if (exec_simple(SQL_COMMIT) < 0) {
		db_rollback();
		return -1;
	}
	return 0;
}

void db_durable(int on)
{
	struct db_q *q = db_stmt(on ? SQL_SYNCHRONOUS_FULL : SQL_SYNCHRONOUS_NORMAL);

	if (q) {
		db_step(q);
		db_reset(q);
	}
}

void db_rollback(void)
{
	if (db && !sqlite3_get_autocommit(db))
		exec_simple(SQL_ROLLBACK);
}

int db_read_begin(void)
{
	return exec_simple(SQL_BEGIN);
}

void db_read_end(void)
{
	if (db && !sqlite3_get_autocommit(db) && exec_simple(SQL_COMMIT) < 0)
		db_rollback();
}

void db_close(void)
{
	if (db_state == DB_OK) {
		for (size_t i = 0; i < SQL_COUNT; i++) {
			sqlite3_finalize(cache[i].st);
			cache[i].st = NULL;
		}
		/* As at exit: the WAL is left for the next writer's
		 * autocheckpoint, not checkpointed (with fsyncs) here. */
		sqlite3_db_config(db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, (int *)NULL);
	}
	if (db)
		sqlite3_close(db);
	db = NULL;
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
