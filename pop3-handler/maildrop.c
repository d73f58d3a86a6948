/* The locked Maildir snapshot behind a POP3 session (see maildrop.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strverscmp */
#endif
#include "maildrop.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "maildir.h"
#include "message.h"

/* Bytes read from a message file at a time. */
#define MAILDROP_READ_CHUNK 65536

static void message_base(const char *name, char *base, size_t cap)
{
	maildir_name_uid(name, base, cap);
}

static unsigned long long fnv1a(const char *s)
{
	unsigned long long h = 14695981039346656037ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 1099511628211ULL;
	}
	return h;
}

void pop3_uid_from_name(const char *name, char *uid, size_t cap)
{
	char base[MAILDROP_NAME_MAX + 1];
	size_t n = maildir_name_uid(name, base, sizeof(base));
	int ok = n >= 1 && n <= POP3_UID_MAX && n == strcspn(name, ":,");

	for (size_t i = 0; ok && i < n; i++)
		if ((unsigned char)base[i] < 0x21 || (unsigned char)base[i] > 0x7e)
			ok = 0;
	if (ok)
		snprintf(uid, cap, "%s", base);
	else
		snprintf(uid, cap, "H%016llx", fnv1a(name[0] ? base : "(empty)"));
}

/* A regular file we should offer: not a dot file, not a directory. */
static int is_message(int dfd, const struct dirent *e)
{
	struct stat st;

	if (e->d_name[0] == '.')
		return 0;
	if (e->d_type == DT_REG)
		return 1;
	if (e->d_type != DT_UNKNOWN && e->d_type != DT_LNK)
		return 0;
	if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return 0;
	return S_ISREG(st.st_mode);
}

/* new/ to cur/, adding the ":2," info part as Dovecot and Courier do. A
 * file another program moved first is skipped. */
static int move_new(struct maildrop *d)
{
	char path[PATH_MAX_POSTAGE];
	DIR *dir;
	struct dirent *e;
	int fd, moved = 0, failed = 0;

	snprintf(path, sizeof(path), "%s/new", d->dir);
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -1;
	}
	while ((e = readdir(dir)) != NULL) {
		char target[MAILDROP_NAME_MAX + 8];

		if (!is_message(fd, e))
			continue;
		if (strchr(e->d_name, ':'))
			snprintf(target, sizeof(target), "%s", e->d_name);
		else if ((size_t)snprintf(target, sizeof(target), "%s:2,", e->d_name) >= sizeof(target))
			continue;
		if (renameat(fd, e->d_name, d->cur_fd, target) == 0) {
			moved++;
		} else if (errno != ENOENT && !failed++) {
			char safe[300];
			log_event(LOG_WARNING, "event=maildrop result=move_failed dir=%s file=\"%s\" error=\"%s\"",
				  d->dir, log_printable(safe, sizeof(safe), e->d_name, strlen(e->d_name)),
				  strerror(errno));
		}
	}
	/* The renames must survive a crash before the client is told of
	 * the messages (and later deletes them). */
	if (moved && (fsync(d->cur_fd) < 0 || fsync(fd) < 0))
		failed++;
	closedir(dir);
	return failed ? -1 : 0;
}

static int compare_messages(const void *a, const void *b)
{
	const struct pop3_message *x = a, *y = b;
	char bx[MAILDROP_NAME_MAX + 1], by[MAILDROP_NAME_MAX + 1];
	int r;

	message_base(x->name, bx, sizeof(bx));
	message_base(y->name, by, sizeof(by));
	/* Dovecot names start with the delivery time: version order keeps
	 * "1700000000.M99" before "1700000000.M123". */
	r = strverscmp(bx, by);
	return r ? r : strcmp(x->name, y->name);
}

static int snapshot(struct maildrop *d)
{
	size_t cap = 0;
	DIR *dir;
	struct dirent *e;
	int fd = dup(d->cur_fd);

	if (fd < 0)
		return -1;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -1;
	}
	while ((e = readdir(dir)) != NULL) {
		struct pop3_message *m;

		if (!is_message(fd, e))
			continue;
		if (d->count == POP3_MESSAGES_MAX) {
			d->truncated = 1;
			break;
		}
		if (d->count == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			struct pop3_message *n;

			if (ncap > POP3_MESSAGES_MAX)
				ncap = POP3_MESSAGES_MAX;
			n = realloc(d->msgs, ncap * sizeof(*n));
			if (!n)
				goto fail;
			d->msgs = n;
			cap = ncap;
		}
		m = &d->msgs[d->count];
		memset(m, 0, sizeof(*m));
		m->name = strdup(e->d_name);
		if (!m->name)
			goto fail;
		pop3_uid_from_name(m->name, m->uid, sizeof(m->uid));
		d->count++;
	}
	closedir(dir);
	if (d->count > 1)
		qsort(d->msgs, d->count, sizeof(*d->msgs), compare_messages);
	/* Two files with one base name (a broken Maildir): keep every UIDL
	 * unique by naming the later ones after their full file name. */
	for (size_t i = 1; i < d->count; i++) {
		char prev[MAILDROP_NAME_MAX + 1], this[MAILDROP_NAME_MAX + 1];

		message_base(d->msgs[i - 1].name, prev, sizeof(prev));
		message_base(d->msgs[i].name, this, sizeof(this));
		if (strcmp(prev, this) == 0)
			snprintf(d->msgs[i].uid, sizeof(d->msgs[i].uid), "H%016llx", fnv1a(d->msgs[i].name));
	}
	if (d->truncated)
		log_event(LOG_WARNING, "event=maildrop result=truncated dir=%s messages=%zu", d->dir,
			  d->count);
	return 0;
fail:
	closedir(dir);
	return -1;
}

enum maildrop_status maildrop_open(struct maildrop *d, const char *mail_root, const char *login,
				   const char *uidl_format)
{
	char path[PATH_MAX_POSTAGE + 32];
	struct stat st;

	memset(d, 0, sizeof(*d));
	d->lock_fd = d->cur_fd = -1;
	if (maildir_path(mail_root, login, d->dir, sizeof(d->dir), 0) < 0) {
		log_event(LOG_ERR, "event=maildrop result=error mail_root=%s error=\"%s\"", mail_root,
			  strerror(errno));
		return MAILDROP_ERROR;
	}
	if (stat(d->dir, &st) < 0) {
		if (errno == ENOENT)
			return MAILDROP_OK; /* nothing delivered yet: an empty maildrop */
		log_event(LOG_ERR, "event=maildrop result=error dir=%s error=\"%s\"", d->dir, strerror(errno));
		return MAILDROP_ERROR;
	}
	/* Creates cur/ new/ tmp/ if one is missing; one stat when all are. */
	if (maildir_path(mail_root, login, d->dir, sizeof(d->dir), 1) < 0)
		goto error;

	snprintf(path, sizeof(path), "%s/%s", d->dir, MAILDROP_LOCK_NAME);
	d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (d->lock_fd < 0)
		goto error;
	if (flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int busy = errno == EWOULDBLOCK;

		if (!busy)
			goto error;
		close(d->lock_fd);
		d->lock_fd = -1;
		return MAILDROP_IN_USE;
	}

	snprintf(path, sizeof(path), "%s/cur", d->dir);
	d->cur_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (d->cur_fd < 0)
		goto error;
	if (move_new(d) < 0)
		goto error;
	if (snapshot(d) < 0)
		goto error;
	if (uidl_format && uidl_format[0])
		maildrop_dovecot_uids(d, uidl_format);
	/* The owner's login is the "next run" for what a delivery killed
	 * half-way left in tmp/. */
	if (maildir_sweep_tmp(d->dir) > 0)
		log_event(LOG_NOTICE, "event=maildrop result=swept_tmp dir=%s", d->dir);
	return MAILDROP_OK;
error:
	log_event(LOG_ERR, "event=maildrop result=error dir=%s error=\"%s\"", d->dir, strerror(errno));
	maildrop_close(d);
	return MAILDROP_ERROR;
}

void maildrop_close(struct maildrop *d)
{
	for (size_t i = 0; i < d->count; i++) {
		free(d->msgs[i].name);
		free(d->msgs[i].dovecot_uid);
	}
	free(d->msgs);
	d->msgs = NULL;
	d->count = 0;
	if (d->cur_fd >= 0)
		close(d->cur_fd);
	if (d->lock_fd >= 0)
		close(d->lock_fd); /* releases the flock */
	d->cur_fd = d->lock_fd = -1;
}

/* The file of message i was renamed in cur/ (flags added by an IMAP
 * server): find it again by its base name. 0 found, -1 not. */
static int relocate(struct maildrop *d, size_t i)
{
	char want[MAILDROP_NAME_MAX + 1], base[MAILDROP_NAME_MAX + 1];
	DIR *dir;
	struct dirent *e;
	int fd = dup(d->cur_fd), found = -1;

	if (fd < 0)
		return -1;
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return -1;
	}
	rewinddir(dir);
	message_base(d->msgs[i].name, want, sizeof(want));
	while ((e = readdir(dir)) != NULL) {
		if (!is_message(fd, e))
			continue;
		message_base(e->d_name, base, sizeof(base));
		if (strcmp(base, want) == 0) {
			char *n = strdup(e->d_name);
			if (n) {
				free(d->msgs[i].name);
				d->msgs[i].name = n;
				found = 0;
			}
			break;
		}
	}
	closedir(dir);
	return found;
}

int maildrop_open_message(struct maildrop *d, size_t i)
{
	int fd;

	if (i >= d->count || d->cur_fd < 0) {
		errno = ENOENT;
		return -1;
	}
	fd = openat(d->cur_fd, d->msgs[i].name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT && relocate(d, i) == 0)
		fd = openat(d->cur_fd, d->msgs[i].name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0 && errno == ENOENT)
		d->msgs[i].missing = 1;
	return fd;
}

/* read(2), again when a signal cut it short: bytes read, 0 at the end,
 * -1 on error. */
static ssize_t read_more(int fd, void *buf, size_t len)
{
	ssize_t n;

	do
		n = read(fd, buf, len);
	while (n < 0 && errno == EINTR);
	return n;
}

/* Octets of the wire form: every LF not after a CR becomes CRLF, and a
 * last line without LF gets a CRLF before the terminator (maildrop_send
 * does the same, through wire_encode). */
static int wire_size(int fd, unsigned long long *size)
{
	static char buf[MAILDROP_READ_CHUNK];
	unsigned long long bytes = 0, lfs = 0;
	char last = '\n';

	for (;;) {
		ssize_t n = read_more(fd, buf, sizeof(buf));

		if (n <= 0) {
			if (n < 0)
				return -1;
			break;
		}
		bytes += (unsigned long long)n;
		for (ssize_t k = 0; k < n; k++) {
			if (buf[k] == '\n' && last != '\r')
				lfs++;
			last = buf[k];
		}
	}
	*size = bytes + lfs + (last != '\n' ? 2 : 0);
	return 0;
}

int maildrop_size(struct maildrop *d, size_t i, unsigned long long *size)
{
	struct pop3_message *m = &d->msgs[i];
	int fd, r;

	if (m->size_known) {
		*size = m->size;
		return 0;
	}
	if (maildir_name_size(m->name, 'W', &m->size)) {
		m->size_known = 1;
		*size = m->size;
		return 0;
	}
	/* Not in the name (a message from another MDA): read it once and
	 * keep the count for the rest of the session. */
	fd = maildrop_open_message(d, i);
	if (fd < 0) {
		*size = 0;
		return -1;
	}
	r = wire_size(fd, &m->size);
	close(fd);
	if (r < 0) {
		*size = 0;
		return -1;
	}
	m->size_known = 1;
	*size = m->size;
	return 0;
}

int maildrop_stat(struct maildrop *d, size_t *count, unsigned long long *octets)
{
	int r = 0;

	*count = 0;
	*octets = 0;
	for (size_t i = 0; i < d->count; i++) {
		unsigned long long s;

		if (d->msgs[i].deleted)
			continue;
		if (maildrop_size(d, i, &s) < 0)
			r = -1;
		(*count)++;
		*octets += s;
	}
	return r;
}

int pop3_parse_count(const char *s, size_t len, unsigned long max, unsigned long *value)
{
	unsigned long v = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v <= max)
			v = v * 10 + (unsigned long)(s[i] - '0');
	}
	*value = v > max ? max : v;
	return 0;
}

enum maildrop_lookup maildrop_find(const struct maildrop *d, const char *arg, size_t *index)
{
	unsigned long n;

	/* Up to POP3_MESSAGES_MAX + 1, so "no such message" stays apart from
	 * a number too large to be one. */
	if (pop3_parse_count(arg, strlen(arg), POP3_MESSAGES_MAX + 1UL, &n) < 0)
		return LOOKUP_SYNTAX;
	if (n < 1 || n > d->count)
		return LOOKUP_NO_SUCH;
	if (d->msgs[n - 1].deleted)
		return LOOKUP_DELETED;
	*index = n - 1;
	return LOOKUP_OK;
}

/* How much of chunk to send for TOP: scans for the end of the headers and
 * then counts body lines. Returns the bytes to send; *done is set when the
 * cut falls inside this chunk. */
struct top_state {
	long lines;     /* body lines still wanted */
	int in_headers;
	int line_start;
	int line_empty; /* nothing but CR on this line so far */
};

static size_t top_cut(struct top_state *t, const char *buf, size_t len, int *done)
{
	for (size_t i = 0; i < len; i++) {
		if (!t->in_headers && t->line_start && t->lines <= 0) {
			*done = 1;
			return i;
		}
		if (buf[i] == '\n') {
			if (t->in_headers && t->line_empty)
				t->in_headers = 0; /* the blank line is sent too */
			else if (!t->in_headers)
				t->lines--;
			t->line_start = 1;
			t->line_empty = 1;
		} else {
			t->line_start = 0;
			if (buf[i] != '\r')
				t->line_empty = 0;
		}
	}
	if (!t->in_headers && t->line_start && t->lines <= 0)
		*done = 1;
	return len;
}

int maildrop_send(int fd, long top_lines, struct io *io, unsigned long long *sent)
{
	static char in[MAILDROP_READ_CHUNK], out[2 * MAILDROP_READ_CHUNK];
	struct top_state top = { top_lines, 1, 1, 1 };
	int at_line_start = 1, done = 0;

	while (!done) {
		ssize_t n = read_more(fd, in, sizeof(in));
		size_t take, o;

		if (n <= 0) {
			if (n < 0)
				return -1;
			break;
		}
		take = top_lines < 0 ? (size_t)n : top_cut(&top, in, (size_t)n, &done);
		o = wire_encode(&at_line_start, in, take, out);
		if (io_write(io, out, o) < 0)
			return -1;
		*sent += o;
	}
	/* RFC 1939 3: the terminator follows a CRLF. */
	if (at_line_start != 1) {
		if (io_write(io, "\r\n", 2) < 0)
			return -1;
		*sent += 2;
	}
	if (io_write(io, ".\r\n", 3) < 0)
		return -1;
	return 0;
}

size_t maildrop_commit(struct maildrop *d, size_t *removed)
{
	size_t failed = 0;

	*removed = 0;
	for (size_t i = 0; i < d->count; i++) {
		struct pop3_message *m = &d->msgs[i];
		int r;

		if (!m->deleted)
			continue;
		r = unlinkat(d->cur_fd, m->name, 0);
		if (r < 0 && errno == ENOENT && relocate(d, i) == 0)
			r = unlinkat(d->cur_fd, m->name, 0);
		if (r == 0 || errno == ENOENT) {
			/* Gone already (another client deleted it): as wanted. */
			(*removed)++;
			continue;
		}
		if (!failed++) {
			char safe[300];
			log_event(LOG_ERR, "event=maildrop result=unlink_failed dir=%s file=\"%s\" error=\"%s\"",
				  d->dir, log_printable(safe, sizeof(safe), m->name, strlen(m->name)),
				  strerror(errno));
		}
	}
	if (*removed && d->cur_fd >= 0 && fsync(d->cur_fd) < 0) {
		log_event(LOG_ERR, "event=maildrop result=fsync_failed dir=%s error=\"%s\"", d->dir,
			  strerror(errno));
		return failed ? failed : 1;
	}
	return failed;
}
