#include "maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "limits.h"

int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

static int mkdir_durable(const char *path, const char *parent)
{
	if (mkdir(path, 0700) == 0)
		return fsync_dir(parent);
	return errno == EEXIST ? 0 : -1;
}

int maildir_path(const char *mail_root, const char *login, char *dir, size_t cap, int create)
{
	char sub[PATH_MAX_POSTAGE];
	static const char *const subs[] = { "tmp", "new", "cur" };
	int n = snprintf(dir, cap, "%s/%s", mail_root, login);
	struct stat st;

	if (n < 0 || (size_t)n >= cap || strchr(login, '/') || login[0] == '.' || !login[0]) {
		errno = EINVAL;
		return -1;
	}
	if (!create)
		return 0;
	/* Fast path: an existing Maildir needs one stat. */
	snprintf(sub, sizeof(sub), "%s/cur", dir);
	if (stat(sub, &st) == 0)
		return 0;
	if (mkdir(mail_root, 0700) < 0 && errno != EEXIST)
		return -1;
	if (mkdir_durable(dir, mail_root) < 0)
		return -1;
	for (size_t i = 0; i < 3; i++) {
		snprintf(sub, sizeof(sub), "%s/%s", dir, subs[i]);
		if (mkdir_durable(sub, dir) < 0)
			return -1;
	}
	return 0;
}

void maildir_unique_name(char *buf, size_t cap)
{
	static char host[256];
	static unsigned long seq;
	struct timeval tv;

	if (!host[0]) {
		char raw[200];
		size_t o = 0;

		if (gethostname(raw, sizeof(raw) - 1) < 0)
			strcpy(raw, "localhost");
		raw[sizeof(raw) - 1] = '\0';
		/* Dovecot's escapes for the two characters a name cannot hold. */
		for (char *c = raw; *c && o + 5 < sizeof(host); c++) {
			if (*c == '/') {
				memcpy(host + o, "\\057", 4);
				o += 4;
			} else if (*c == ':') {
				memcpy(host + o, "\\072", 4);
				o += 4;
			} else {
				host[o++] = *c;
			}
		}
		host[o] = '\0';
	}
	gettimeofday(&tv, NULL);
	/* Q<seq> keeps names unique within one process and microsecond. */
	if (seq++ == 0)
		snprintf(buf, cap, "%lld.M%ldP%d.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
			 (int)getpid(), host);
	else
		snprintf(buf, cap, "%lld.M%ldP%dQ%lu.%s", (long long)tv.tv_sec, (long)tv.tv_usec,
			 (int)getpid(), seq, host);
}

int fd_write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int fd_copy_range(int out, int in, off_t from, off_t to)
{
	static char buf[65536];

	while (from < to) {
		size_t want = (size_t)(to - from) < sizeof(buf) ? (size_t)(to - from) : sizeof(buf);
		ssize_t n = pread(in, buf, want, from);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		if (fd_write_all(out, buf, (size_t)n) < 0)
			return -1;
		from += n;
	}
	return 0;
}

static int stage(const char *maildir, const char *prefix, size_t prefix_len, int src_fd,
		 off_t src_len, unsigned long long lf_count, struct maildir_staged *st, int sync);

int maildir_stage(const char *maildir, const char *prefix, size_t prefix_len, int src_fd,
		  off_t src_len, unsigned long long lf_count, struct maildir_staged *st)
{
	return stage(maildir, prefix, prefix_len, src_fd, src_len, lf_count, st, 1);
}

int maildir_stage_unsynced(const char *maildir, const char *prefix, size_t prefix_len, int src_fd,
			   off_t src_len, unsigned long long lf_count, struct maildir_staged *st)
{
	return stage(maildir, prefix, prefix_len, src_fd, src_len, lf_count, st, 0);
}

static int stage(const char *maildir, const char *prefix, size_t prefix_len, int src_fd,
		 off_t src_len, unsigned long long lf_count, struct maildir_staged *st, int sync)
{
	char tmp[PATH_MAX_POSTAGE + 512];
	unsigned long long size = (unsigned long long)prefix_len + (unsigned long long)src_len;
	int fd, saved;

	memset(st, 0, sizeof(*st));
	if ((size_t)snprintf(st->dir, sizeof(st->dir), "%s", maildir) >= sizeof(st->dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	maildir_unique_name(st->base, sizeof(st->base));
	snprintf(st->name, sizeof(st->name), "%s,S=%llu,W=%llu", st->base, size, size + lf_count);
	snprintf(tmp, sizeof(tmp), "%s/tmp/%s", maildir, st->base);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno == ENOENT) {
		/* A Maildir missing a subfolder (maildir_path looks at cur/
		 * only): make what is missing, then try again. */
		static const char *const subs[] = { "tmp", "new", "cur" };
		char sub[PATH_MAX_POSTAGE + 8];

		for (size_t i = 0; i < 3; i++) {
			snprintf(sub, sizeof(sub), "%s/%s", maildir, subs[i]);
			if (mkdir_durable(sub, maildir) < 0)
				return -1;
		}
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0)
		return -1;
	if (fd_write_all(fd, prefix, prefix_len) < 0 || fd_copy_range(fd, src_fd, 0, src_len) < 0 ||
	    (sync && fsync(fd) < 0))
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	errno = saved;
	return -1;
}

int maildir_stage_link(const char *maildir, const struct maildir_staged *from,
		       struct maildir_staged *st)
{
	char src[PATH_MAX_POSTAGE + 512], dst[PATH_MAX_POSTAGE + 512];
	size_t blen = strlen(from->base);

	memset(st, 0, sizeof(*st));
	if ((size_t)snprintf(st->dir, sizeof(st->dir), "%s", maildir) >= sizeof(st->dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	maildir_unique_name(st->base, sizeof(st->base));
	/* from->name is from->base followed by ",S=...,W=..." */
	snprintf(st->name, sizeof(st->name), "%s%s", st->base, from->name + blen);
	snprintf(src, sizeof(src), "%s/tmp/%s", from->dir, from->base);
	snprintf(dst, sizeof(dst), "%s/tmp/%s", maildir, st->base);
	if (link(src, dst) == 0)
		return 0;
	if (errno == ENOENT) {
		/* a Maildir missing tmp/ (maildir_path looks at cur/ only) */
		char sub[PATH_MAX_POSTAGE + 8];
		snprintf(sub, sizeof(sub), "%s/tmp", maildir);
		if (mkdir_durable(sub, maildir) == 0 && link(src, dst) == 0)
			return 0;
	}
	return -1;
}

int maildir_stage_sync(const struct maildir_staged *st)
{
	char path[PATH_MAX_POSTAGE + 512];
	int fd, r;

	snprintf(path, sizeof(path), "%s/tmp/%s", st->dir, st->base);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	r = fsync(fd);
	close(fd);
	return r;
}

int maildir_stage_open(const struct maildir_staged *st)
{
	char path[PATH_MAX_POSTAGE + 512];

	snprintf(path, sizeof(path), "%s/tmp/%s", st->dir, st->base);
	return open(path, O_RDONLY | O_CLOEXEC);
}

int maildir_publish(struct maildir_staged *st)
{
	char tmp[PATH_MAX_POSTAGE + 512], dst[PATH_MAX_POSTAGE + 512];

	snprintf(tmp, sizeof(tmp), "%s/tmp/%s", st->dir, st->base);
	snprintf(dst, sizeof(dst), "%s/new/%s", st->dir, st->name);
	/* link() refuses to replace: a clash can never overwrite a message. */
	if (link(tmp, dst) < 0)
		return -1;
	st->published = 1;
	unlink(tmp);
	return 0;
}

int maildir_sync(const struct maildir_staged *st)
{
	char newdir[PATH_MAX_POSTAGE + 8];

	snprintf(newdir, sizeof(newdir), "%s/new", st->dir);
	return fsync_dir(newdir);
}

/* Removes the file of dir/sub whose name is name followed by ':' (the
 * info part a reader adds when it moves a message to cur/). */
static int unlink_moved(const char *dir, const char *sub, const char *name)
{
	char path[PATH_MAX_POSTAGE + 8];
	size_t len = strlen(name);
	struct dirent *e;
	int found = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/%s", dir, sub);
	d = opendir(path);
	if (!d)
		return 0;
	while ((e = readdir(d)) != NULL) {
		if (strncmp(e->d_name, name, len) == 0 && e->d_name[len] == ':' &&
		    unlinkat(dirfd(d), e->d_name, 0) == 0)
			found = 1;
	}
	closedir(d);
	if (found)
		fsync_dir(path);
	return found;
}

void maildir_discard(struct maildir_staged *st)
{
	char path[PATH_MAX_POSTAGE + 512], sub[PATH_MAX_POSTAGE + 8];

	snprintf(path, sizeof(path), "%s/tmp/%s", st->dir, st->base);
	unlink(path);
	if (!st->published)
		return;
	snprintf(path, sizeof(path), "%s/new/%s", st->dir, st->name);
	if (unlink(path) == 0) {
		snprintf(sub, sizeof(sub), "%s/new", st->dir);
		fsync_dir(sub);
	} else if (errno == ENOENT) {
		unlink_moved(st->dir, "cur", st->name);
	}
	st->published = 0;
}

int maildir_deliver(const char *maildir, const char *prefix, size_t prefix_len, int src_fd,
		    off_t src_len, unsigned long long lf_count, char *name_out, size_t name_cap)
{
	/* not re-entered: maildir_stage and the calls after it do not deliver */
	static struct maildir_staged st;
	int saved;

	if (maildir_stage(maildir, prefix, prefix_len, src_fd, src_len, lf_count, &st) < 0)
		return -1;
	if (maildir_publish(&st) < 0 || maildir_sync(&st) < 0) {
		saved = errno;
		maildir_discard(&st);
		errno = saved;
		return -1;
	}
	snprintf(name_out, name_cap, "%s", st.name);
	return 0;
}

int maildir_sweep_tmp(const char *maildir)
{
	char path[PATH_MAX_POSTAGE + 8];
	time_t old = time(NULL) - MAILDIR_TMP_STALE_SECONDS;
	struct dirent *e;
	int removed = 0;
	DIR *d;

	snprintf(path, sizeof(path), "%s/tmp", maildir);
	d = opendir(path);
	if (!d)
		return 0;
	while ((e = readdir(d)) != NULL) {
		struct stat st;

		if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode) || st.st_mtime > old)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}

int maildir_name_size(const char *name, char tag, unsigned long long *value)
{
	const char *colon = strchr(name, ':');
	char pat[4] = { ',', tag, '=', '\0' };
	const char *p = name;

	while ((p = strstr(p, pat)) != NULL) {
		char *end;
		unsigned long long v;

		if (colon && p > colon)
			return 0;
		p += 3;
		if (*p < '0' || *p > '9')
			continue;
		errno = 0;
		v = strtoull(p, &end, 10);
		/* No file is larger than off_t can say: a bigger number is
		 * not a size (and would overflow a sum of sizes). */
		if (errno == ERANGE || v > (unsigned long long)INT64_MAX)
			continue;
		if (*end == '\0' || *end == ',' || *end == ':') {
			*value = v;
			return 1;
		}
	}
	return 0;
}

size_t maildir_name_uid(const char *name, char *buf, size_t cap)
{
	size_t n = strcspn(name, ":,");

	if (cap == 0)
		return 0;
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, name, n);
	buf[n] = '\0';
	return n;
}

/* Adds the sizes of the messages in dfd's sub (new/ or cur/) to *total,
 * saturating rather than overflowing (over any quota anyway). */
static void usage_add_dir(int dfd, const char *sub, long long *total)
{
	int fd = openat(dfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *e;

	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		unsigned long long s;
		struct stat st;

		if (e->d_name[0] == '.')
			continue;
		if (!maildir_name_size(e->d_name, 'S', &s)) {
			if (fstatat(fd, e->d_name, &st, 0) < 0)
				continue;
			s = (unsigned long long)st.st_size;
		}
		if (s > (unsigned long long)(INT64_MAX - *total))
			*total = INT64_MAX;
		else
			*total += (long long)s;
	}
	closedir(d);
}

/* A Maildir++ folder: a directory (not a link to one) named ".<name>". */
static int is_folder(int dfd, const struct dirent *e)
{
	struct stat st;

	if (e->d_name[0] != '.' || e->d_name[1] == '\0' ||
	    (e->d_name[1] == '.' && e->d_name[2] == '\0'))
		return 0;
	if (e->d_type == DT_DIR)
		return 1;
	if (e->d_type != DT_UNKNOWN)
		return 0;
	return fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
}

long long maildir_usage(const char *maildir)
{
	long long total = 0;
	size_t folders = 0;
	int fd = open(maildir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *d;
	struct dirent *e;

	if (fd < 0)
		return 0;
	usage_add_dir(fd, "new", &total);
	usage_add_dir(fd, "cur", &total);
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return total;
	}
	while ((e = readdir(d)) != NULL && folders < MAILDIR_FOLDERS_MAX) {
		int ffd;

		if (!is_folder(fd, e))
			continue;
		folders++;
		ffd = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (ffd < 0)
			continue;
		usage_add_dir(ffd, "new", &total);
		usage_add_dir(ffd, "cur", &total);
		close(ffd);
	}
	closedir(d);
	return total;
}
