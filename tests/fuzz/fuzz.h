/* What every libFuzzer target here shares: the entry points (declared, for
 * -Wmissing-prototypes) and a check that aborts with a message, so that a
 * broken invariant is a crash libFuzzer keeps as a reproducer; and, for
 * the targets built with world.c, the world they run in. */
#ifndef POSTAGE_FUZZ_H
#define POSTAGE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_ASSERT(cond)                                                                  \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, \
				#cond);                                                    \
			abort();                                                           \
		}                                                                          \
	} while (0)

/* Aborts after printing what broke and the bytes that show it (at most
 * 600, escaped), so libFuzzer keeps the input as a reproducer. */
__attribute__((noreturn)) static inline void fuzz_broken(const char *target, const char *what,
							 const char *p, size_t len)
{
	fprintf(stderr, "%s: %s (%zu octets): \"", target, what, len);
	for (size_t i = 0; i < len && i < 600; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02x", c);
	}
	fprintf(stderr, "\"\n");
	abort();
}

/* A NUL-terminated copy of the input (free it); a NUL inside ends it
 * early, as it would for a C string from the wire. */
static inline char *fuzz_cstring(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

/* ---- world.c ------------------------------------------------------- */

struct sqlite3;

/* Makes the work dir ($POSTAGE_FUZZ_DIR, else /dev/shm, else $TMPDIR or
 * /tmp; removed at exit unless $POSTAGE_KEEP_TMP is set) and in it
 * postage.db from schema/schema.sql, with the settings mail_root (its
 * mail/) and spool_dir (its spool/), then setup_sql (if not NULL) run on
 * it; names it in $POSTAGE_DB and sets $POSTAGE_LOG_FILE to /dev/null
 * unless set. Returns the work dir. Exits on failure. */
const char *fuzz_world(const char *setup_sql);

/* A sha512-crypt hash of password at its least number of rounds (a cheap
 * login); static, replaced by the next call. */
const char *fuzz_password_hash(const char *password);

/* sql run on db, or exit with the error. */
void fuzz_exec_sql(struct sqlite3 *db, const char *sql);

/* Removes path and everything under it. */
void fuzz_remove_tree(const char *path);

/* "<program>: what: strerror(errno)" on stderr, then exit(1). */
_Noreturn void fuzz_die(const char *what);

/* Readies the process for sessions: fds 0 and 1 become null_fd (between
 * sessions; libFuzzer reports on stderr) and the database is opened with
 * its WAL, so that what a session opens and keeps can be told apart from
 * what SQLite keeps. Returns sqlite3_total_changes() of the database. */
int fuzz_sessions_ready(int null_fd);

/* The lowest free file descriptor (a dup of null_fd, closed again): a
 * session that leaks a descriptor moves it. */
int fuzz_lowest_free_fd(int null_fd);

#endif
