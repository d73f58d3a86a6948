/* The one SQLite database: opened on first use, version-checked, with a busy
 * timeout so an administrator's open sqlite3 session costs the client a 4xx,
 * never a 5xx. Statements are prepared on first use and kept. */
#ifndef POSTAGE_DB_H
#define POSTAGE_DB_H

#include <sqlite3.h>

#define DB_SCHEMA_VERSION 4
#define DB_DEFAULT_PATH "/var/lib/postage/postage.db"

enum db_status {
	DB_OK = 0,
	DB_TEMPFAIL,  /* busy, locked, cannot open: try again later */
	DB_VERSION,   /* a user_version this program does not know */
};

/* --db PATH, else $POSTAGE_DB, else the default. */
void db_set_path(const char *path);
const char *db_path(void);

/* Opens (once) and checks the version; loads the settings. */
enum db_status db_open(void);
sqlite3 *db_handle(void);

/* Closes the database for good (its file descriptors too; the settings
 * stay loaded): for a process about to give up the right to open it. */
void db_close(void);

/* A prepared statement for this SQL text (a string literal: the pointer is
 * the cache key), reset and unbound. NULL on error (logged). */
sqlite3_stmt *db_stmt(const char *sql);

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

/* A step result that means "try later" (busy, locked, I/O). */
int db_is_temporary(int rc);

#endif
