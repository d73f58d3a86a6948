/* The world the session and DSN targets run in (declared in fuzz.h): a
 * work directory, a database made from schema/schema.sql and named in
 * $POSTAGE_DB, logs sent to /dev/null, and the helpers their set-up and
 * resets share. Built into the targets that need it (tests/fuzz/meson.build). */
#include "fuzz.h"

#include <crypt.h>
#include <errno.h>
#include <ftw.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"

static char workdir[1024];

_Noreturn void fuzz_die(const char *what)
{
	fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what, strerror(errno));
	exit(1);
}

void fuzz_exec_sql(struct sqlite3 *db, const char *sql)
{
	char *err = NULL;

	if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
		fprintf(stderr, "%s: sql failed: %s\n%s\n", program_invocation_short_name,
			err ? err : "?", sql);
		exit(1);
	}
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

void fuzz_remove_tree(const char *path)
{
	nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void cleanup(void)
{
	if (workdir[0] && !getenv("POSTAGE_KEEP_TMP"))
		fuzz_remove_tree(workdir);
}

const char *fuzz_password_hash(const char *password)
{
	static struct crypt_data cd;
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];
	const char *hash;

	if (!crypt_gensalt_rn("$6$", 1000, NULL, 0, salt, sizeof(salt)))
		fuzz_die("crypt_gensalt");
	memset(&cd, 0, sizeof(cd));
	hash = crypt_r(password, salt, &cd);
	if (!hash || hash[0] != '$')
		fuzz_die("crypt");
	return hash;
}

/* The schema, read whole (free it). */
static char *read_schema(void)
{
	FILE *f = fopen(SCHEMA_SQL, "r");
	char *text = NULL;
	size_t len = 0, n;

	if (!f)
		fuzz_die(SCHEMA_SQL);
	do {
		char *grown = realloc(text, len + 65536 + 1);

		if (!grown)
			fuzz_die("realloc");
		text = grown;
		n = fread(text + len, 1, 65536, f);
		len += n;
	} while (n > 0);
	if (ferror(f))
		fuzz_die(SCHEMA_SQL);
	fclose(f);
	text[len] = '\0';
	return text;
}

const char *fuzz_world(const char *setup_sql)
{
	char path[1200], *schema;
	const char *base = getenv("POSTAGE_FUZZ_DIR");
	sqlite3 *db;
	sqlite3_stmt *st;

	if (!base || !*base)
		base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR");
	if (!base || !*base)
		base = "/tmp";
	snprintf(workdir, sizeof(workdir), "%s/postage-fuzz-XXXXXX", base);
	if (!mkdtemp(workdir))
		fuzz_die(workdir);
	atexit(cleanup);

	snprintf(path, sizeof(path), "%s/postage.db", workdir);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		fuzz_die(path);
	schema = read_schema();
	fuzz_exec_sql(db, schema);
	free(schema);

	/* mail_root and spool_dir: the work dir's mail/ and spool/ */
	if (sqlite3_prepare_v2(db,
			       "INSERT INTO settings VALUES ('mail_root', ?1 || '/mail'),"
			       " ('spool_dir', ?1 || '/spool')",
			       -1, &st, NULL) != SQLITE_OK)
		fuzz_die("prepare");
	sqlite3_bind_text(st, 1, workdir, -1, SQLITE_STATIC);
	if (sqlite3_step(st) != SQLITE_DONE)
		fuzz_die("settings");
	sqlite3_finalize(st);
	if (setup_sql)
		fuzz_exec_sql(db, setup_sql);
	sqlite3_close(db);

	if (setenv("POSTAGE_DB", path, 1) < 0)
		fuzz_die("setenv");
	/* logs would go to the journal; the file keeps them off the system */
	setenv("POSTAGE_LOG_FILE", "/dev/null", 0);
	return workdir;
}

int fuzz_sessions_ready(int null_fd)
{
	if (dup2(null_fd, 1) < 0 || dup2(null_fd, 0) < 0)
		fuzz_die("dup2");
	if (db_open() != DB_OK || db_begin() < 0 || db_commit() < 0)
		fuzz_die("database");
	return sqlite3_total_changes(db_handle());
}

int fuzz_lowest_free_fd(int null_fd)
{
	int fd = dup(null_fd);

	if (fd < 0)
		fuzz_die("dup");
	close(fd);
	return fd;
}
