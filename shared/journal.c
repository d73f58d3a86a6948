#include "journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "limits.h"
#include "log.h"
#include "spool.h"

/* The file: this line, then NUL-terminated fields: "Q", <queue id> for
 * each queue id; "L", <Maildir>, <tmp/ name>, <new/ name> for each copy;
 * "E" at the end. */
#define JOURNAL_MAGIC "postage-journal 1"
/* A journal still being written (<id>.new) that no process holds and is
 * this old was never committed: its writer died. */
#define JOURNAL_NEW_STALE_SECONDS 3600
/* The largest journal read back: the message's own copies (at most
 * 1000, MESSAGE_DESTINATIONS_MAX) and its lists' (LIST_COPIES_MAX), each
 * a Maildir (mail_root/login) and two names. */
#define JOURNAL_MAX_BYTES \
	((1000 + LIST_COPIES_MAX) * (SETTING_VALUE_MAX + ADDRESS_LOCAL_MAX + 1024) + 65536)

static int jfd = -1;
static char jpath[PATH_MAX_POSTAGE];

static void links_dir(char *buf, size_t cap)
{
	snprintf(buf, cap, "%s/links", setting(SET_SPOOL_DIR));
}

static void put(char *buf, size_t *off, const char *field)
{
	size_t n = strlen(field) + 1;

	memcpy(buf + *off, field, n);
	*off += n;
}

int journal_begin(const char *id, const struct maildir_staged *st, size_t nst,
		  const char *const *queue_ids, size_t nids)
{
	char dir[PATH_MAX_POSTAGE], tmp[PATH_MAX_POSTAGE + 8];
	size_t len = sizeof(JOURNAL_MAGIC) + 2, off = 0;
	int renamed = 0, saved, made;
	char *buf;

	links_dir(dir, sizeof(dir));
	made = mkdir(dir, 0700) == 0;
	/* A message staged in memory may be the first to need the spool. */
	if (!made && errno == ENOENT) {
		if (spool_make() < 0)
			return -1;
		made = mkdir(dir, 0700) == 0;
	}
	if (made) {
		if (fsync_dir(setting(SET_SPOOL_DIR)) < 0)
			return -1;
	} else if (errno != EEXIST) {
		return -1;
	}
	for (size_t i = 0; i < nids; i++)
		len += 2 + strlen(queue_ids[i]) + 1;
	for (size_t i = 0; i < nst; i++)
		len += 2 + strlen(st[i].dir) + 1 + strlen(st[i].base) + 1 + strlen(st[i].name) + 1;
	buf = malloc(len);
	if (!buf)
		return -1;
	put(buf, &off, JOURNAL_MAGIC);
	for (size_t i = 0; i < nids; i++) {
		put(buf, &off, "Q");
		put(buf, &off, queue_ids[i]);
	}
	for (size_t i = 0; i < nst; i++) {
		put(buf, &off, "L");
		put(buf, &off, st[i].dir);
		put(buf, &off, st[i].base);
		put(buf, &off, st[i].name);
	}
	put(buf, &off, "E");

	snprintf(tmp, sizeof(tmp), "%s/%s.new", dir, id);
	snprintf(jpath, sizeof(jpath), "%s/%s", dir, id);
	/* Locked before anything is in it, and renamed into place only when
	 * whole: the runner never sees a journal that is half there and
	 * not held. */
	jfd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (jfd < 0) {
		free(buf);
		return -1;
	}
	if (flock(jfd, LOCK_EX) < 0 || fd_write_all(jfd, buf, off) < 0 || fsync(jfd) < 0 ||
	    rename(tmp, jpath) < 0 || !(renamed = 1) || fsync_dir(dir) < 0) {
		saved = errno;
		unlink(renamed ? jpath : tmp);
		close(jfd);
		jfd = -1;
		free(buf);
		errno = saved;
		return -1;
	}
	free(buf);
	return 0;
}

int journal_abort(void)
{
	char aborted[PATH_MAX_POSTAGE + 8], dir[PATH_MAX_POSTAGE];

	if (jfd < 0)
		return 0;
	snprintf(aborted, sizeof(aborted), "%s.abort", jpath);
	links_dir(dir, sizeof(dir));
	if (rename(jpath, aborted) < 0)
		return -1;
	snprintf(jpath, sizeof(jpath), "%s", aborted);
	return fsync_dir(dir);
}

void journal_end(int durable)
{
	char dir[PATH_MAX_POSTAGE];

	if (jfd < 0)
		return;
	unlink(jpath);
	if (durable) {
		links_dir(dir, sizeof(dir));
		fsync_dir(dir);
	}
	close(jfd);
	jfd = -1;
}

/* ---- the queue runner's side ----------------------------------------- */

struct journal {
	char *data;
	size_t len;
	const char *ids[1000];
	size_t nids;
	struct maildir_staged *copies;
	size_t ncopies;
};

/* Splits j->data into its fields; 0 when it is a whole journal. */
static int parse(struct journal *j)
{
	const char *p = j->data, *end = j->data + j->len;
	const char *f[4];
	size_t cap = 0;

#define NEXT(v)                                          \
	do {                                             \
		const char *z = memchr(p, '\0', (size_t)(end - p)); \
		if (!z)                                  \
			return -1;                       \
		(v) = p;                                 \
		p = z + 1;                               \
	} while (0)

	NEXT(f[0]);
	if (strcmp(f[0], JOURNAL_MAGIC) != 0)
		return -1;
	for (;;) {
		NEXT(f[0]);
		if (strcmp(f[0], "E") == 0)
			return p == end ? 0 : -1;
		if (strcmp(f[0], "Q") == 0) {
			NEXT(f[1]);
			if (j->nids == sizeof(j->ids) / sizeof(j->ids[0]) || strlen(f[1]) > QUEUE_ID_LEN ||
			    strchr(f[1], '/'))
				return -1;
			j->ids[j->nids++] = f[1];
		} else if (strcmp(f[0], "L") == 0) {
			struct maildir_staged *c;

			NEXT(f[1]);
			NEXT(f[2]);
			NEXT(f[3]);
			if (strchr(f[2], '/') || strchr(f[3], '/') || !f[2][0] || !f[3][0])
				return -1;
			if (j->ncopies == cap) {
				size_t ncap = cap ? 2 * cap : 8;
				void *n = realloc(j->copies, ncap * sizeof(*j->copies));
				if (!n)
					return -1;
				j->copies = n;
				cap = ncap;
			}
			c = &j->copies[j->ncopies++];
			memset(c, 0, sizeof(*c));
			if ((size_t)snprintf(c->dir, sizeof(c->dir), "%s", f[1]) >= sizeof(c->dir) ||
			    (size_t)snprintf(c->base, sizeof(c->base), "%s", f[2]) >= sizeof(c->base) ||
			    (size_t)snprintf(c->name, sizeof(c->name), "%s", f[3]) >= sizeof(c->name))
				return -1;
		} else {
			return -1;
		}
	}
#undef NEXT
}

int journal_parse(const char *data, size_t len, size_t *nids, size_t *ncopies)
{
	struct journal j;
	int r;

	memset(&j, 0, sizeof(j));
	j.data = malloc(len ? len : 1);
	if (!j.data)
		return -1;
	memcpy(j.data, data, len);
	j.len = len;
	r = parse(&j);
	if (r == 0) {
		/* What finish() relies on. */
		for (size_t i = 0; i < j.ncopies; i++)
			if (strchr(j.copies[i].base, '/') || strchr(j.copies[i].name, '/') ||
			    !j.copies[i].base[0] || !j.copies[i].name[0])
				abort();
		for (size_t i = 0; i < j.nids; i++)
			if (strlen(j.ids[i]) > QUEUE_ID_LEN || strchr(j.ids[i], '/'))
				abort();
		*nids = j.nids;
		*ncopies = j.ncopies;
	}
	free(j.data);
	free(j.copies);
	return r;
}

static int read_journal(int fd, struct journal *j)
{
	struct stat sb;

	memset(j, 0, sizeof(*j));
	if (fstat(fd, &sb) < 0 || sb.st_size <= 0 || sb.st_size > JOURNAL_MAX_BYTES)
		return -1;
	j->data = malloc((size_t)sb.st_size);
	if (!j->data)
		return -1;
	j->len = (size_t)sb.st_size;
	if (pread(fd, j->data, j->len, 0) != (ssize_t)j->len)
		return -1;
	return parse(j);
}

/* Commit happened: every copy still in tmp/ goes into new/. */
static int complete(struct journal *j)
{
	int failed = 0;

	for (size_t i = 0; i < j->ncopies; i++) {
		struct maildir_staged *c = &j->copies[i];
		char tmp[PATH_MAX_POSTAGE + 512];

		snprintf(tmp, sizeof(tmp), "%s/tmp/%s", c->dir, c->base);
		if (access(tmp, F_OK) < 0)
			continue; /* published before the crash */
		if (maildir_publish(c) < 0 && errno != EEXIST) {
			failed = 1;
			continue;
		}
		unlink(tmp);
		if (maildir_sync(c) < 0)
			failed = 1;
	}
	return failed ? -1 : 0;
}

/* No commit (or an aborted one): the queue entries and the staged copies
 * go, and after an abort the copies already published too. */
static int take_back(struct journal *j, int aborted)
{
	for (size_t i = 0; i < j->nids; i++)
		if (queue_exists(j->ids[i]) != 0 && queue_remove(j->ids[i]) < 0)
			return -1;
	for (size_t i = 0; i < j->ncopies; i++) {
		j->copies[i].published = aborted;
		maildir_discard(&j->copies[i]);
	}
	return 0;
}

static int finish(int dfd, const char *name, int fd, int aborted,
		  void (*hold)(const char *id, void *ctx), void *ctx)
{
	struct journal j;
	int committed = 1, r = -1;

	if (read_journal(fd, &j) < 0) {
		log_event(LOG_ERR, "event=journal result=unreadable file=links/%s", name);
		goto out;
	}
	for (size_t i = 0; !aborted && i < j.nids; i++) {
		int e = queue_exists(j.ids[i]);
		if (e < 0)
			goto out_hold;
		committed &= e;
	}
	if (!aborted && committed) {
		if (complete(&j) < 0)
			goto out_hold;
		log_event(LOG_NOTICE, "event=journal result=completed file=links/%s copies=%zu queued=%zu",
			  name, j.ncopies, j.nids);
	} else {
		if (take_back(&j, aborted) < 0)
			goto out_hold;
		for (size_t i = 0; i < j.nids; i++)
			hold(j.ids[i], ctx);
		log_event(LOG_NOTICE, "event=journal result=taken_back file=links/%s copies=%zu queued=%zu",
			  name, j.ncopies, j.nids);
	}
	if (unlinkat(dfd, name, 0) == 0)
		r = 0;
	goto out;
out_hold:
	/* Cannot tell or cannot finish now: next run. */
	for (size_t i = 0; i < j.nids; i++)
		hold(j.ids[i], ctx);
out:
	free(j.data);
	free(j.copies);
	return r;
}

int journal_recover(void (*hold)(const char *id, void *ctx), void *ctx)
{
	char dir[PATH_MAX_POSTAGE];
	time_t now = time(NULL);
	struct dirent *e;
	int done = 0;
	DIR *d;

	links_dir(dir, sizeof(dir));
	d = opendir(dir);
	if (!d)
		return 0;
	while ((e = readdir(d)) != NULL) {
		const char *dot = strchr(e->d_name, '.');
		int aborted = dot && strcmp(dot, ".abort") == 0;
		struct stat sb;
		int fd;

		if (e->d_name[0] == '.')
			continue;
		fd = openat(dirfd(d), e->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			continue;
		if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
			/* Its handler is at work (committing, or taking back
			 * after an abort): its queue ids wait. A journal still
			 * being written has none queued yet. */
			if (!dot || aborted) {
				struct journal j;
				if (read_journal(fd, &j) == 0)
					for (size_t i = 0; i < j.nids; i++)
						hold(j.ids[i], ctx);
				else
					hold(NULL, ctx); /* cannot say which: all */
				free(j.data);
				free(j.copies);
			}
			close(fd);
			continue;
		}
		if (dot && !aborted) {
			/* <id>.new: never committed. Young ones may be
			 * between their creation and their lock. */
			if (fstat(fd, &sb) == 0 && sb.st_mtime < now - JOURNAL_NEW_STALE_SECONDS &&
			    unlinkat(dirfd(d), e->d_name, 0) == 0)
				log_event(LOG_NOTICE, "event=journal result=removed file=links/%s reason=uncommitted",
					  e->d_name);
		} else if (finish(dirfd(d), e->d_name, fd, aborted, hold, ctx) == 0) {
			done++;
		}
		close(fd);
	}
	closedir(d);
	if (done)
		fsync_dir(dir);
	return done;
}
