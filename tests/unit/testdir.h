/* Temp directories and a database made from schema/schema.sql, for the unit
 * tests whose functions touch the disk or SQLite. SCHEMA_SQL is the path of
 * schema/schema.sql, set by tests/unit/meson.build (with -D_GNU_SOURCE, for
 * nftw). */
#ifndef POSTAGE_TEST_TESTDIR_H
#define POSTAGE_TEST_TESTDIR_H

#include <fcntl.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"

static char testdir_path[4096];

static inline int testdir_rm(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static inline void testdir_cleanup(void)
{
	if (testdir_path[0] && !getenv("POSTAGE_KEEP_TMP"))
		nftw(testdir_path, testdir_rm, 16, FTW_DEPTH | FTW_PHYS);
}

/* A fresh directory, removed at exit (unless $POSTAGE_KEEP_TMP is set). */
static inline const char *testdir_make(const char *module)
{
	const char *tmp = getenv("TMPDIR");

	snprintf(testdir_path, sizeof(testdir_path), "%s/postage-test-%s-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp", module);
	REQUIRE(mkdtemp(testdir_path) != NULL);
	atexit(testdir_cleanup);
	return testdir_path;
}

/* A new file in the directory testdir_make made, holding len bytes of
 * data, open for reading and writing (at its end); its fd. */
static inline int testdir_file(const char *data, size_t len)
{
	static int nfile;
	char path[sizeof(testdir_path) + 32];
	int fd;

	snprintf(path, sizeof(path), "%s/file%d", testdir_path, nfile++);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	REQUIRE(fd >= 0);
	REQUIRE(write(fd, data, len) == (ssize_t)len);
	return fd;
}

#ifdef SCHEMA_SQL
/* Runs sql (several statements) on the database at path. */
static inline void testdb_exec(const char *path, const char *sql)
{
	sqlite3 *db = NULL;
	char *err = NULL;

	REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "sql failed: %s\n  %s\n", err ? err : "?", sql);
		exit(1);
	}
	sqlite3_close(db);
}

/* dir/postage.db from schema/schema.sql, named in $POSTAGE_DB (before any
 * db_open). Returns its path. */
static inline const char *testdb_make(const char *dir)
{
	static char path[4096 + 16];
	static char sql[1 << 16];
	FILE *f = fopen(SCHEMA_SQL, "r");
	size_t n;

	REQUIRE(f != NULL);
	n = fread(sql, 1, sizeof(sql) - 1, f);
	fclose(f);
	REQUIRE(n > 0 && n < sizeof(sql) - 1);
	sql[n] = '\0';
	snprintf(path, sizeof(path), "%s/postage.db", dir);
	testdb_exec(path, sql);
	REQUIRE(setenv("POSTAGE_DB", path, 1) == 0);
	return path;
}
#endif

#endif
