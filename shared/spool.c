#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include "spool.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "limits.h"
#include "log.h"
#include "maildir.h"

void queue_new_id(char *id, size_t cap)
{
	struct timespec ts;
	unsigned int rnd = 0;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = (unsigned int)ts.tv_nsec ^ (unsigned int)getpid();
	snprintf(id, cap, "%08llX%08X", (unsigned long long)ts.tv_sec & 0xffffffffULL, rnd);
}

static int ensure_dir(const char *path)
{
	if (mkdir(path, 0700) == 0 || errno == EEXIST)
		return 0;
	return -1;
}

int spool_make(void)
{
	const char *spool = setting(SET_SPOOL_DIR);
	char dir[PATH_MAX_POSTAGE];

	if (ensure_dir(spool) < 0)
		return -1;
	snprintf(dir, sizeof(dir), "%s/tmp", spool);
	if (ensure_dir(dir) < 0)
		return -1;
	snprintf(dir, sizeof(dir), "%s/queue", spool);
	return ensure_dir(dir);
}

/* The staging files this process made, newest last, for
 * spool_staging_abandon() in a signal handler: only async-signal-safe
 * reads happen there, so a slot is written before it is counted. */
static char staging_live[SPOOL_STAGING_LIVE_MAX][PATH_MAX_POSTAGE];
static volatile sig_atomic_t staging_live_n;

static void staging_remember(const char *path)
{
	size_t slot = (size_t)staging_live_n % SPOOL_STAGING_LIVE_MAX;

	if (strlen(path) >= sizeof(staging_live[0]))
		return;
	memcpy(staging_live[slot], path, strlen(path) + 1);
	staging_live_n = staging_live_n + 1;
}

void spool_staging_abandon(void)
{
	sig_atomic_t n = staging_live_n;

	/* unlink is async-signal-safe; a path already removed (delivered,
	 * queued, refused) is simply not there any more. The queue's and
	 * the Maildirs' own links to the same file are untouched. */
	for (sig_atomic_t i = 0; i < n && i < SPOOL_STAGING_LIVE_MAX; i++)
		unlink(staging_live[i]);
}

int spool_staging_open(const char *id, char *path, size_t cap)
{
	int fd;

	snprintf(path, cap, "%s/tmp/%s", setting(SET_SPOOL_DIR), id);
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		/* First use: make the spool. */
		if (spool_make() < 0)
			return -1;
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -1;
	/* Held while the file is in use, and gone with the process however
	 * it ends: the queue runner removes unlocked staging files, so a
	 * killed session leaves nothing behind for long. */
	if (flock(fd, LOCK_EX | LOCK_NB) < 0)
		log_event(LOG_WARNING, "event=spool result=unlocked file=%s error=\"%s\"", path,
			  strerror(errno));
	staging_remember(path);
	return fd;
}

int spool_staging_begin(const char *id, char *path, size_t cap)
{
#ifdef MFD_CLOEXEC
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
	/* MFD_NOEXEC_SEAL (Linux 6.3) keeps newer kernels from warning;
	 * older ones refuse the flag with EINVAL. */
	int fd = memfd_create("postage-staging", MFD_CLOEXEC | MFD_NOEXEC_SEAL);

	if (fd < 0 && errno == EINVAL)
		fd = memfd_create("postage-staging", MFD_CLOEXEC);
	if (fd >= 0) {
		if (cap > 0)
			path[0] = '\0';
		return fd;
	}
#endif
	return spool_staging_open(id, path, cap);
}

int spool_staging_to_disk(int *fd, const char *id, char *path, size_t cap)
{
	struct stat st;
	int nfd, saved;

	if (path[0])
		return 0;
	if (fstat(*fd, &st) < 0)
		return -1;
	nfd = spool_staging_open(id, path, cap);
	if (nfd < 0) {
		path[0] = '\0';
		return -1;
	}
	if (fd_copy_range(nfd, *fd, 0, st.st_size) < 0) {
		saved = errno;
		close(nfd);
		unlink(path);
		path[0] = '\0';
		errno = saved;
		return -1;
	}
	close(*fd);
	*fd = nfd;
	return 0;
}

void queue_path(const char *id, char *path, size_t cap)
{
	snprintf(path, cap, "%s/queue/%s", setting(SET_SPOOL_DIR), id);
}

int queue_enqueue(int fd, const char *path, const char *id, const char *sender,
		  unsigned long long size, int body_8bit, int smtputf8, const char *client_ip,
		  const char *auth_login, const struct queue_rcpt *rcpts, size_t n)
{
	struct queue_entry e = {
		.id = id, .fd = fd, .path = path, .sender = sender, .size = size,
		.body_8bit = body_8bit, .smtputf8 = smtputf8, .client_ip = client_ip,
		.auth_login = auth_login, .rcpts = rcpts, .n = n,
	};

	return queue_enqueue_batch(&e, 1, NULL, NULL) == 0 ? 0 : -1;
}

/* Takes back the links of the first n entries. */
static void unlink_queued(const struct queue_entry *e, size_t n, const char *qdir)
{
	int saved = errno;

	for (size_t i = 0; i < n; i++) {
		char qpath[PATH_MAX_POSTAGE];
		queue_path(e[i].id, qpath, sizeof(qpath));
		unlink(qpath);
	}
	fsync_dir(qdir);
	errno = saved;
}

static int insert_rows(const struct queue_entry *e, time_t now)
{
	struct db_q *st = db_stmt(SQL_QUEUE_MESSAGE_INSERT);

	if (!st)
		return -1;
	db_bind_text(st, 1, e->id);
	db_bind_text(st, 2, e->sender);
	db_bind_int64(st, 3, e->size);
	db_bind_int64(st, 4, e->body_8bit);
	db_bind_int64(st, 5, e->smtputf8);
	db_bind_int64(st, 6, now);
	if (e->client_ip)
		db_bind_text(st, 7, e->client_ip);
	if (e->auth_login && *e->auth_login)
		db_bind_text(st, 8, e->auth_login);
	db_bind_int64(st, 9, e->verp);
	if (db_step(st) != DB_DONE) {
		db_reset(st);
		return -1;
	}
	db_reset(st);
	st = db_stmt(SQL_QUEUE_RECIPIENT_INSERT);
	if (!st)
		return -1;
	for (size_t i = 0; i < e->n; i++) {
		db_reset(st);
		db_bind_text(st, 1, e->id);
		db_bind_text(st, 2, e->rcpts[i].recipient);
		db_bind_text(st, 3, e->rcpts[i].orig_rcpt);
		db_bind_int64(st, 4, now);
		if (db_step(st) != DB_DONE) {
			db_reset(st);
			return -1;
		}
	}
	db_reset(st);
	return 0;
}

int queue_enqueue_batch(const struct queue_entry *e, size_t n, int (*hook)(void *ctx), void *ctx)
{
	char qdir[PATH_MAX_POSTAGE];
	time_t now = time(NULL);
	size_t linked = 0;
	int h = 1;

	snprintf(qdir, sizeof(qdir), "%s/queue", setting(SET_SPOOL_DIR));
	if (n > 0 && ensure_dir(qdir) < 0)
		return -1;
	for (; linked < n; linked++) {
		char qpath[PATH_MAX_POSTAGE];

		queue_path(e[linked].id, qpath, sizeof(qpath));
		if (fsync(e[linked].fd) < 0 || link(e[linked].path, qpath) < 0)
			goto fail;
	}
	if (n > 0 && fsync_dir(qdir) < 0)
		goto fail;

	if (db_begin() < 0)
		goto fail;
	for (size_t i = 0; i < n; i++) {
		if (insert_rows(&e[i], now) < 0) {
			log_event(LOG_WARNING, "event=enqueue result=db_error id=%s error=\"%s\"", e[i].id,
				  db_errmsg());
			goto fail_db;
		}
	}
	if (hook && (h = hook(ctx)) <= 0)
		goto fail_db;
	if (db_commit() < 0)
		goto fail;
	return 0;

fail_db:
	db_rollback();
fail:
	if (linked > 0)
		unlink_queued(e, linked, qdir);
	if (h == 0)
		return 1;
	return -1;
}

int queue_remove(const char *id)
{
	static const enum sql_id sql[] = { SQL_QUEUE_RECIPIENTS_DELETE, SQL_QUEUE_MESSAGE_DELETE };
	char path[PATH_MAX_POSTAGE];

	if (db_begin() < 0)
		return -1;
	for (size_t i = 0; i < 2; i++) {
		struct db_q *st = db_stmt(sql[i]);
		int rc;

		if (!st) {
			db_rollback();
			return -1;
		}
		db_bind_text(st, 1, id);
		rc = db_step(st);
		db_reset(st);
		if (rc != DB_DONE) {
			db_rollback();
			return -1;
		}
	}
	if (db_commit() < 0)
		return -1;
	queue_path(id, path, sizeof(path));
	unlink(path);
	return 0;
}

int queue_exists(const char *id)
{
	struct db_q *st = db_stmt(SQL_QUEUE_MESSAGE_EXISTS);
	char path[PATH_MAX_POSTAGE];
	struct stat sb;
	int rc;

	if (!st)
		return -1;
	db_bind_text(st, 1, id);
	rc = db_step(st);
	db_reset(st);
	if (rc == DB_DONE)
		return 0;
	if (rc != DB_ROW)
		return -1;
	queue_path(id, path, sizeof(path));
	if (stat(path, &sb) == 0)
		return 1;
	return errno == ENOENT ? 0 : -1;
}
