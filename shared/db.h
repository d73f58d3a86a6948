/* The database: opened on first use, version-checked, with a busy timeout
 * so an administrator's open sqlite3 session costs the client a 4xx, never
 * a 5xx. Every statement is one of the list in sql.h, prepared on first
 * use and kept; callers bind, step and read columns through the functions
 * below, so none of them includes <sqlite3.h> or knows the engine.
 *
 * Two engines stand behind it. --db PATH: one SQLite file holds
 * everything (the default, one machine). --db postgresql://...: the tables
 * several hosts share are on PostgreSQL (sql-postgresql.h has their texts,
 * pgwire.c speaks to it), and each host keeps its outbound queue, and the
 * settings that differ per host, in its own SQLite file (--host-db, made
 * on first use). A transaction spans both; it starts on each engine at
 * its first statement there, and PostgreSQL commits first. */
#ifndef POSTAGE_DB_H
#define POSTAGE_DB_H

#include <stddef.h>

/* The name of each statement of sql.h; SQL_COUNT of them. */
enum sql_id {
#define SQL(id, text) id,
#include "sql.h"
#undef SQL
	SQL_COUNT
};

/* A prepared statement (opaque). */
struct db_q;

/* What a step did. */
enum db_rc {
	DB_ROW,        /* a row is ready for db_col_*() */
	DB_DONE,       /* the statement has run to its end */
	DB_BUSY,       /* busy or locked beyond the busy timeout: try again */
	DB_ERROR,      /* anything else (logged by the caller: db_errmsg) */
};

#define DB_SCHEMA_VERSION 4
#define DB_SCHEMA_VERSION_TEXT "4"
#define DB_DEFAULT_PATH "/var/lib/postage/postage.db"
#define DB_DEFAULT_HOST_PATH "/var/lib/postage/host.db"

enum db_status {
	DB_OK = 0,
	DB_TEMPFAIL,  /* busy, locked, cannot open: try again later */
	DB_VERSION,   /* a user_version this program does not know */
};

/* --db PATH or URI, else $POSTAGE_DB, else the default. */
void db_set_path(const char *path);
const char *db_path(void);
/* With PostgreSQL: --host-db PATH, else $POSTAGE_HOST_DB, else the
 * default. */
void db_set_host_path(const char *path);
const char *db_host_path(void);
/* 1 when --db names PostgreSQL. */
int db_is_postgresql(void);

/* Opens (once) and checks the version; loads the settings. */
enum db_status db_open(void);
/* The SQLite handle (with PostgreSQL, the host file's), NULL unless open:
 * for tests and tools only (they include <sqlite3.h> themselves). */
struct sqlite3 *db_handle(void);

/* Closes the database for good (its file descriptors too; the settings
 * stay loaded): for a process about to give up the right to open it. */
void db_close(void);

/* The prepared statement id of sql.h, reset and unbound (every parameter
 * NULL). NULL on error (logged). */
struct db_q *db_stmt(enum sql_id id);

/* Parameters count from 1, columns from 0, as in SQL. A text or blob is
 * bound without a copy: the caller's buffer must stay as it is until the
 * statement is reset (db_reset, or db_stmt of the same id). A NULL text
 * binds NULL. */
void db_bind_text(struct db_q *q, int i, const char *s);
void db_bind_int64(struct db_q *q, int i, long long v);
void db_bind_blob(struct db_q *q, int i, const void *p, size_t n);
/* The highest parameter number of the statement. */
int db_param_count(struct db_q *q);

enum db_rc db_step(struct db_q *q);
/* Ends the statement's run (a RETURNING statement finishes its write
 * here) and releases its locks; the bindings stay. */
void db_reset(struct db_q *q);

/* Columns of the current row, valid until the next step or reset. A
 * NULL reads as a NULL text, a 0 number or an empty blob. */
const char *db_col_text(struct db_q *q, int col);
long long db_col_int64(struct db_q *q, int col);
int db_col_int(struct db_q *q, int col);
const void *db_col_blob(struct db_q *q, int col);
size_t db_col_bytes(struct db_q *q, int col);
int db_col_is_null(struct db_q *q, int col);
/* A text column into out (cap bytes, truncated), "" for NULL. */
void db_col_copy(struct db_q *q, int col, char *out, size_t cap);

/* Steps q (bound) once and resets it: the first column of its row as an
 * integer into *out (left as it is when there is no row). 1 a row, 0 none,
 * -1 trouble. */
int db_row_int(struct db_q *q, long long *out);

/* The integer in the first column of the first row of statement id, run
 * with ?1 = text and ?2 = num: 0 when there is no row, -1 on trouble.
 * (The counts within a window: login failures, harvest refusals,
 * messages sent in an hour.) */
long long db_int_lookup(enum sql_id id, const char *text, long long num);

/* Runs statement id, a DELETE of rows older than ?1 = before, to its
 * end. A failure is not reported: the next write prunes again. */
void db_prune(enum sql_id id, long long before);

/* Rows changed by the last INSERT, UPDATE or DELETE. */
int db_changes(void);
/* The last error, for a log line. */
const char *db_errmsg(void);

/* Short write transactions. */
int db_begin(void);   /* BEGIN IMMEDIATE; 0 or -1 */
int db_commit(void);  /* 0 or -1 (and rolled back) */
void db_rollback(void);
/* Bookkeeping whose loss in a power failure harms nobody (the login
 * throttle's counts) is written with synchronous=NORMAL: in WAL mode its
 * commits then cost no fsync. durable(1) goes back to FULL, which every
 * write that answers a client (a queue commit before 250) needs. */
void db_durable(int on);

/* A read transaction around many lookups (a list's members): one
 * snapshot and one lock for all of them instead of one per statement.
 * 0 or -1; db_read_end always ends it. */
int db_read_begin(void);
void db_read_end(void);

/* A big commit (a list's copies) need not copy the WAL into the database
 * while its client waits: db_checkpoint_defer() before it, db_checkpoint()
 * once the reply is out (a passive checkpoint, then the usual automatic
 * ones again). */
void db_checkpoint_defer(void);
void db_checkpoint(void);

#endif
