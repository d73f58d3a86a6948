#include "db.h"

#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "limits.h"
#include "log.h"

#define DB_STMT_CACHE 96

static const char *path_override;
static sqlite3 *db;
static int db_state = -1; /* -1 not tried, else enum db_status */

static struct {
	const char *sql;
	sqlite3_stmt *stmt;
} cache[DB_STMT_CACHE];

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

int db_is_temporary(int rc)
{
	rc &= 0xff;
	return rc == SQLITE_BUSY || rc == SQLITE_LOCKED || rc == SQLITE_IOERR ||
	       rc == SQLITE_FULL || rc == SQLITE_CANTOPEN || rc == SQLITE_PROTOCOL ||
	       rc == SQLITE_NOMEM;
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
	if (config_load(db) < 0) {
		db_state = DB_TEMPFAIL;
		return DB_TEMPFAIL;
	}
	db_state = DB_OK;
	return DB_OK;
}

sqlite3_stmt *db_stmt(const char *sql)
{
	size_t i;

	if (db_open() != DB_OK)
		return NULL;
	for (i = 0; i < DB_STMT_CACHE && cache[i].sql; i++) {
		if (cache[i].sql == sql) {
			sqlite3_reset(cache[i].stmt);
			sqlite3_clear_bindings(cache[i].stmt);
			return cache[i].stmt;
		}
	}
	if (i == DB_STMT_CACHE) {
		log_event(LOG_ERR, "event=db_prepare result=error error=\"statement cache full\"");
		return NULL;
	}
	if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &cache[i].stmt, NULL) !=
	    SQLITE_OK) {
		log_event(LOG_ERR, "event=db_prepare result=error error=\"%s\"", sqlite3_errmsg(db));
		return NULL;
	}
	cache[i].sql = sql;
	return cache[i].stmt;
}

static int exec_simple(const char *sql)
{
	sqlite3_stmt *st = db_stmt(sql);
	int rc;

	if (!st)
		return -1;
	rc = sqlite3_step(st);
	sqlite3_reset(st);
	if (rc != SQLITE_DONE) {
		log_event(LOG_WARNING, "event=db_exec result=error sql=\"%s\" error=\"%s\"", sql,
			  sqlite3_errmsg(db));
		return -1;
	}
	return 0;
}

int db_begin(void)
{
	return exec_simple("BEGIN IMMEDIATE");
}

int db_commit(void)
{
	if (exec_simple("COMMIT") < 0) {
		db_rollback();
		return -1;
	}
	return 0;
}

void db_durable(int on)
{
	sqlite3_stmt *st = db_stmt(on ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");

	if (st) {
		sqlite3_step(st);
		sqlite3_reset(st);
	}
}

void db_rollback(void)
{
	if (db && !sqlite3_get_autocommit(db))
		exec_simple("ROLLBACK");
}

int db_read_begin(void)
{
	return exec_simple("BEGIN");
}

void db_read_end(void)
{
	if (db && !sqlite3_get_autocommit(db) && exec_simple("COMMIT") < 0)
		db_rollback();
}

void db_close(void)
{
	if (db_state == DB_OK) {
		for (size_t i = 0; i < DB_STMT_CACHE && cache[i].sql; i++) {
			sqlite3_finalize(cache[i].stmt);
			cache[i].sql = NULL;
			cache[i].stmt = NULL;
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
