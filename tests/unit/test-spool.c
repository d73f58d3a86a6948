/* shared/spool.c: queue ids, staging files, and queue_enqueue: the file
 * linked into the queue and the rows written together, or neither (a
 * database held by an administrator's open transaction). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "db.h"
#include "limits.h"
#include "spool.h"
#include "testdir.h"

static int count_rows(const char *sql, const char *id)
{
	sqlite3_stmt *st;
	int n = -1;

	REQUIRE(sqlite3_prepare_v2(db_handle(), sql, -1, &st, NULL) == SQLITE_OK);
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return n;
}

static void test_ids(void)
{
	char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1], now_hex[16];
	int hex = 1;

	queue_new_id(a, sizeof(a));
	queue_new_id(b, sizeof(b));
	CHECK_INT(a, QUEUE_ID_LEN, strlen(a));
	for (const char *c = a; *c; c++)
		hex &= (*c >= '0' && *c <= '9') || (*c >= 'A' && *c <= 'F');
	CHECK_TRUE(a, hex);
	CHECK_TRUE(a, strcmp(a, b) != 0);
	/* time-ordered: the first 8 digits are the time */
	snprintf(now_hex, sizeof(now_hex), "%08llX", (unsigned long long)time(NULL) & 0xffffffffULL);
	CHECK_TRUE(a, strncmp(a, now_hex, 6) == 0);
}

static void test_enqueue(const char *dir)
{
	const char *db = testdb_make(dir);
	char sql[8400], id[QUEUE_ID_LEN + 1], id2[QUEUE_ID_LEN + 1], path[4096], qpath[4096];
	static const char body[] = "Received: by x\nSubject: q\n\nbody\n";
	struct queue_rcpt rcpts[] = {
		{ "a@remote.example", "list@example.org" },
		{ "b@remote.example", "b@remote.example" },
		{ "a@remote.example", "dup@example.org" }, /* the same recipient once */
	};
	struct stat st;
	int fd, fd2;

	snprintf(sql, sizeof(sql), "INSERT INTO settings VALUES ('spool_dir', '%s/spool');", dir);
	testdb_exec(db, sql);
	REQUIRE(db_open() == DB_OK);

	queue_new_id(id, sizeof(id));
	fd = spool_staging_open(id, path, sizeof(path));
	CHECK_TRUE("spool_staging_open makes the spool", fd >= 0);
	REQUIRE(fd >= 0);
	snprintf(qpath, sizeof(qpath), "%s/spool/tmp/%s", dir, id);
	CHECK_STR("staging path", qpath, path);
	if (CHECK_INT(path, 0, stat(path, &st)))
		CHECK_INT(path, 0600, st.st_mode & 07777);
	errno = 0;
	CHECK_INT("the same id again", -1, spool_staging_open(id, qpath, sizeof(qpath)));
	CHECK_INT("the same id again", EEXIST, errno);
	REQUIRE(write(fd, body, sizeof(body) - 1) == (ssize_t)sizeof(body) - 1);

	CHECK_INT("enqueue", 0, queue_enqueue(fd, path, id, "sender@example.org", sizeof(body) - 1, 1, 0,
					       "192.0.2.7", "", rcpts, 3));
	queue_path(id, qpath, sizeof(qpath));
	if (CHECK_INT(qpath, 0, stat(qpath, &st))) {
		CHECK_INT(qpath, sizeof(body) - 1, st.st_size);
		CHECK_INT("queue file is a link of the staging file", 2, st.st_nlink);
	}
	CHECK_INT("queue_messages row", 1,
		  count_rows("SELECT count(*) FROM queue_messages WHERE id = ?1 AND sender = "
			     "'sender@example.org' AND size = 32 AND body_8bit = 1 AND smtputf8 = 0 "
			     "AND client_ip = '192.0.2.7' AND auth_login IS NULL",
			     id));
	CHECK_INT("queue_recipients rows", 2,
		  count_rows("SELECT count(*) FROM queue_recipients WHERE message_id = ?1 AND "
			     "state = 'queued' AND attempts = 0",
			     id));
	CHECK_INT("orig_rcpt kept", 1,
		  count_rows("SELECT count(*) FROM queue_recipients WHERE message_id = ?1 AND "
			     "recipient = 'a@remote.example' AND orig_rcpt = 'list@example.org'",
			     id));
	/* the same id twice: refused, the first stays as it was */
	CHECK_INT("enqueue the same id again", -1,
		  queue_enqueue(fd, path, id, "x@example.org", 1, 0, 0, "", "", rcpts, 1));
	CHECK_INT("after a refused second enqueue", 0, stat(qpath, &st));
	CHECK_INT("after a refused second enqueue", 1,
		  count_rows("SELECT count(*) FROM queue_messages WHERE id = ?1", id));
	close(fd);
	unlink(path);

	/* an administrator holds the database: after the busy timeout the
	 * enqueue fails and leaves neither file nor rows */
	queue_new_id(id2, sizeof(id2));
	if (strcmp(id2, id) == 0)
		id2[QUEUE_ID_LEN - 1] = id2[QUEUE_ID_LEN - 1] == 'A' ? 'B' : 'A';
	fd2 = spool_staging_open(id2, path, sizeof(path));
	REQUIRE(fd2 >= 0);
	REQUIRE(write(fd2, "x\n", 2) == 2);
	{
		sqlite3 *admin;
		time_t t0;

		REQUIRE(sqlite3_open(db, &admin) == SQLITE_OK);
		REQUIRE(sqlite3_exec(admin, "BEGIN EXCLUSIVE", NULL, NULL, NULL) == SQLITE_OK);
		t0 = time(NULL);
		CHECK_INT("enqueue while the database is held", -1,
			  queue_enqueue(fd2, path, id2, "", 2, 0, 0, "", "login", rcpts, 1));
		CHECK_TRUE("waited for the busy timeout", time(NULL) - t0 >= DB_BUSY_TIMEOUT_MS / 1000 - 1);
		sqlite3_exec(admin, "ROLLBACK", NULL, NULL, NULL);
		sqlite3_close(admin);
	}
	queue_path(id2, qpath, sizeof(qpath));
	CHECK_INT("no queue file after the failure", -1, stat(qpath, &st));
	CHECK_INT("no row after the failure", 0,
		  count_rows("SELECT count(*) FROM queue_messages WHERE id = ?1", id2));
	/* and once the administrator is gone it works */
	CHECK_INT("enqueue after the database is free", 0,
		  queue_enqueue(fd2, path, id2, "", 2, 0, 1, "", "login", rcpts, 1));
	CHECK_INT("auth_login kept", 1,
		  count_rows("SELECT count(*) FROM queue_messages WHERE id = ?1 AND auth_login = 'login' "
			     "AND sender = '' AND smtputf8 = 1",
			     id2));
	close(fd2);
}

static int hook_says;
static int hook_calls;

static int hook(void *ctx)
{
	(void)ctx;
	hook_calls++;
	/* a write of its own, in the same transaction */
	sqlite3_exec(db_handle(), "INSERT INTO settings VALUES ('hook-ran', '1')", NULL, NULL, NULL);
	return hook_says;
}

/* Several messages and the hook's writes in one transaction: all, or
 * (the hook gives up, or fails) none, files included. */
static void test_batch(const char *dir)
{
	struct queue_rcpt r1[] = { { "a@remote.example", "a@remote.example" },
				   { "b@remote.example", "b@remote.example" } };
	struct queue_rcpt r2[] = { { "c@remote.example", "carol@example.org" } };
	char ids[2][QUEUE_ID_LEN + 1], paths[2][4096], qpath[4096];
	struct queue_entry e[2];
	struct stat st;
	int fds[2];

	(void)dir;
	for (int i = 0; i < 2; i++) {
		queue_new_id(ids[i], sizeof(ids[i]));
		if (i == 1 && strcmp(ids[1], ids[0]) == 0)
			ids[1][QUEUE_ID_LEN - 1] = ids[1][QUEUE_ID_LEN - 1] == 'A' ? 'B' : 'A';
		fds[i] = spool_staging_open(ids[i], paths[i], sizeof(paths[i]));
		REQUIRE(fds[i] >= 0);
		REQUIRE(write(fds[i], "Subject: b\n\nx\n", 15) == 15);
	}
	memset(e, 0, sizeof(e));
	for (int i = 0; i < 2; i++) {
		e[i].id = ids[i];
		e[i].fd = fds[i];
		e[i].path = paths[i];
		e[i].size = 15;
	}
	e[0].sender = "team-bounces@example.org";
	e[0].verp = 1;
	e[0].rcpts = r1;
	e[0].n = 2;
	e[1].sender = "";
	e[1].rcpts = r2;
	e[1].n = 1;

	hook_says = 0;
	CHECK_INT("the hook gives up", 1, queue_enqueue_batch(e, 2, hook, NULL));
	CHECK_INT("hook called", 1, hook_calls);
	for (int i = 0; i < 2; i++) {
		queue_path(ids[i], qpath, sizeof(qpath));
		CHECK_INT("no queue file", -1, stat(qpath, &st));
		CHECK_INT("no row", 0, count_rows("SELECT count(*) FROM queue_messages WHERE id = ?1", ids[i]));
	}
	CHECK_INT("nor the hook's write", 0,
		  count_rows("SELECT count(*) FROM settings WHERE key = 'hook-ran' AND ?1 IS NOT NULL", "x"));

	hook_says = 1;
	CHECK_INT("batch", 0, queue_enqueue_batch(e, 2, hook, NULL));
	CHECK_INT("the hook's write", 1,
		  count_rows("SELECT count(*) FROM settings WHERE key = 'hook-ran' AND ?1 IS NOT NULL", "x"));
	CHECK_INT("verp", 1, count_rows("SELECT verp FROM queue_messages WHERE id = ?1", ids[0]));
	CHECK_INT("not verp", 0, count_rows("SELECT verp FROM queue_messages WHERE id = ?1", ids[1]));
	CHECK_INT("rows", 2, count_rows("SELECT count(*) FROM queue_recipients WHERE message_id = ?1", ids[0]));
	CHECK_INT("orig_rcpt", 1,
		  count_rows("SELECT count(*) FROM queue_recipients WHERE message_id = ?1 AND "
			     "orig_rcpt = 'carol@example.org'", ids[1]));
	for (int i = 0; i < 2; i++) {
		queue_path(ids[i], qpath, sizeof(qpath));
		CHECK_INT("queue file", 0, stat(qpath, &st));
		close(fds[i]);
		unlink(paths[i]);
	}
	/* nothing to queue, only the hook: one transaction all the same */
	sqlite3_exec(db_handle(), "DELETE FROM settings WHERE key = 'hook-ran'", NULL, NULL, NULL);
	CHECK_INT("hook alone", 0, queue_enqueue_batch(NULL, 0, hook, NULL));
	CHECK_INT("hook alone wrote", 1,
		  count_rows("SELECT count(*) FROM settings WHERE key = 'hook-ran' AND ?1 IS NOT NULL", "x"));
}

/* In-memory staging: no file until spool_staging_to_disk, which moves the
 * bytes written so far to spool_dir/tmp/<id> and leaves the fd at its end. */
static void test_staging_in_memory(const char *dir)
{
	char id[QUEUE_ID_LEN + 1], path[4096], want[4096], buf[64];
	struct stat st;
	int fd, before;

	queue_new_id(id, sizeof(id));
	strcpy(path, "unset");
	fd = spool_staging_begin(id, path, sizeof(path));
	REQUIRE(fd >= 0);
	CHECK_STR("in memory: no path", "", path);
	snprintf(want, sizeof(want), "%s/spool/tmp/%s", dir, id);
	CHECK_INT("in memory: no file", -1, stat(want, &st));
	REQUIRE(write(fd, "first part\n", 11) == 11);
	before = fd;
	CHECK_INT("to disk", 0, spool_staging_to_disk(&fd, id, path, sizeof(path)));
	CHECK_STR("to disk: the path", want, path);
	CHECK_TRUE("to disk: another fd", fd != before);
	REQUIRE(write(fd, "second\n", 7) == 7);
	if (CHECK_INT(path, 0, stat(path, &st)))
		CHECK_INT("both parts in the file", 18, st.st_size);
	CHECK_INT("read back", 18, pread(fd, buf, sizeof(buf), 0));
	CHECK_TRUE("read back", memcmp(buf, "first part\nsecond\n", 18) == 0);
	CHECK_INT("on disk already: nothing to do", 0, spool_staging_to_disk(&fd, id, path, sizeof(path)));
	CHECK_STR("on disk already: the same path", want, path);
	close(fd);
	unlink(path);
}

int main(void)
{
	const char *dir = testdir_make("spool");

	test_ids();
	test_enqueue(dir);
	test_batch(dir);
	test_staging_in_memory(dir);
	return check_finish("spool");
}
