/* Dovecot's dovecot-uidlist and pop3_uidl_format (see uidlist.h). Read
 * from Dovecot 2.3's maildir-uidlist.c, var-expand.c and file-dotlock.c
 * (the file format, the template syntax, the lock); written afresh. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "uidlist.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "limits.h"
#include "log.h"
#include "maildir.h"

/* ---- pop3_uidl_format ------------------------------------------------ */

static int is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* Dovecot's X: the value read as a decimal number (0 when it is not one),
 * written in lower-case hex ("%llx"; Dovecot 2.3 has no upper-case form). */
static void modifier_hex(char *v)
{
	unsigned long long n = 0;
	const char *p = v;
	int ok = *p != '\0';

	for (; ok && *p; p++) {
		if (!is_digit(*p) || n > (~0ULL - 9) / 10)
			ok = 0;
		else
			n = n * 10 + (unsigned long long)(*p - '0');
	}
	snprintf(v, 24, "%llx", ok ? n : 0ULL);
}

static void modifier_case(char *v, int upper)
{
	for (; *v; v++) {
		if (upper && *v >= 'a' && *v <= 'z')
			*v = (char)(*v - 'a' + 'A');
		else if (!upper && *v >= 'A' && *v <= 'Z')
			*v = (char)(*v - 'A' + 'a');
	}
}

struct out {
	char *buf; /* NULL: only parsing */
	size_t cap, len;
	int overflow;
};

static void out_add(struct out *o, const char *s, size_t n)
{
	if (!o->buf)
		return;
	if (o->len + n >= o->cap) {
		o->overflow = 1;
		return;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
	o->buf[o->len] = '\0';
}

/* One walk of the template, as Dovecot's var_expand_with_funcs reads it;
 * v NULL only checks it. 0, or -1 with *why. */
static int format_walk(const char *text, const struct uidl_values *v, struct out *o,
		       unsigned *keys, const char **why)
{
	*keys = 0;
	for (const char *s = text; *s; s++) {
		char mods[10], value[UIDL_VALUE_MAX];
		int sign = 1, zero = 0, nmods = 0;
		long width = 0, offset = 0;
		size_t vlen;
		const char *p;

		if (*s != '%') {
			out_add(o, s, 1);
			continue;
		}
		s++;
		/* [-][0][width][.[0][-]offset-width] */
		if (*s == '-') {
			sign = -1;
			s++;
		}
		if (*s == '0') {
			zero = 1;
			s++;
		}
		while (is_digit(*s)) {
			if (width > 100000) {
				*why = "width too large";
				return -1;
			}
			width = width * 10 + (*s++ - '0');
		}
		if (*s == '.') {
			offset = sign * width;
			sign = 1;
			width = 0;
			zero = 0;
			s++;
			if (*s == '0') {
				zero = 1;
				s++;
			}
			if (*s == '-') {
				sign = -1;
				s++;
			}
			while (is_digit(*s)) {
				if (width > 100000) {
					*why = "width too large";
					return -1;
				}
				width = width * 10 + (*s++ - '0');
			}
			width *= sign;
		}
		/* Dovecot's modifiers; we make L U X exactly, and refuse the
		 * others rather than send something else. */
		while (*s && strchr("LUEXRHNMDT", *s) && nmods < (int)sizeof(mods)) {
			if (!strchr("LUX", *s)) {
				*why = "modifier not supported (only L, U and X are)";
				return -1;
			}
			mods[nmods++] = *s++;
		}
		if (*s == '\0')
			break; /* Dovecot drops a '%' left unfinished at the end */
		switch (*s) {
		case 'u':
			*keys |= UIDL_KEY_UID;
			if (v)
				snprintf(value, sizeof(value), "%u", v->uid);
			break;
		case 'v':
			*keys |= UIDL_KEY_UIDVALIDITY;
			if (v)
				snprintf(value, sizeof(value), "%u", v->uidvalidity);
			break;
		case 'f':
			*keys |= UIDL_KEY_FILENAME;
			if (v)
				snprintf(value, sizeof(value), "%s", v->filename);
			break;
		case 'g':
			*keys |= UIDL_KEY_GUID;
			if (v)
				snprintf(value, sizeof(value), "%s", v->guid ? v->guid : v->filename);
			break;
		case '%':
			strcpy(value, "%");
			break;
		case 'm':
			*why = "%m (the header MD5) is not supported";
			return -1;
		case '{':
			*why = "%{name} variables are not supported";
			return -1;
		default:
			*why = "unknown variable";
			return -1;
		}
		if (!v)
			continue;
		for (int i = 0; i < nmods; i++) {
			if (mods[i] == 'X')
				modifier_hex(value);
			else
				modifier_case(value, mods[i] == 'U');
		}
		vlen = strlen(value);
		p = value;
		if (offset < 0) {
			if (vlen > (size_t)-offset)
				p += vlen - (size_t)-offset;
		} else {
			while (*p && offset-- > 0)
				p++;
		}
		vlen = strlen(p);
		if (width == 0) {
			out_add(o, p, vlen);
		} else if (!zero) {
			/* a width cuts; a negative one cuts that many off the end */
			long keep = width > 0 ? width : (long)vlen + width;

			if (keep >= 0 && (size_t)keep < vlen)
				vlen = (size_t)keep;
			out_add(o, p, vlen);
		} else {
			/* "%05d"-like: padded, never cut */
			for (long pad = width - (long)vlen; pad > 0; pad--)
				out_add(o, "0", 1);
			out_add(o, p, vlen);
		}
	}
	return 0;
}

int uidl_format_parse(const char *text, struct uidl_format *f, const char **why)
{
	struct out none = { NULL, 0, 0, 0 };
	size_t len = strlen(text);

	memset(f, 0, sizeof(*f));
	if (len > UIDL_FORMAT_MAX) {
		*why = "too long";
		return -1;
	}
	if (format_walk(text, NULL, &none, &f->keys, why) < 0)
		return -1;
	if (!f->keys) {
		*why = "no variable (%u %v %f %g)";
		return -1;
	}
	memcpy(f->text, text, len + 1);
	return 0;
}

long uidl_format_expand(const struct uidl_format *f, const struct uidl_values *v, char *out,
			size_t cap)
{
	struct out o = { out, cap, 0, 0 };
	unsigned keys;
	const char *why;

	if (cap == 0)
		return -1;
	out[0] = '\0';
	if (format_walk(f->text, v, &o, &keys, &why) < 0 || o.overflow)
		return -1;
	return (long)o.len;
}

/* ---- reading ----------------------------------------------------------- */

/* Dovecot's str_to_uint for a 32-bit value: digits only, no overflow. */
static int parse_u32(const char *s, size_t len, uint32_t *value)
{
	uint64_t n = 0;

	if (len == 0 || len > 10)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!is_digit(s[i]))
			return -1;
		n = n * 10 + (uint64_t)(s[i] - '0');
	}
	if (n > UINT32_MAX)
		return -1;
	*value = (uint32_t)n;
	return 0;
}

static int is_hex(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int uidlist_parse_header(const char *line, size_t len, struct uidlist_header *h, const char **why)
{
	const char *p = line + 2, *end = line + len;

	memset(h, 0, sizeof(h[0]));
	if (len < 2 || !is_digit(line[0]) || line[1] != ' ') {
		*why = "no version number";
		return -1;
	}
	h->version = (unsigned)(line[0] - '0');
	if (h->version == 1) {
		/* "1 <uidvalidity> <nextuid>", as sscanf("%u %u") reads it */
		const char *a = p, *b;

		while (p < end && is_digit(*p))
			p++;
		if (parse_u32(a, (size_t)(p - a), &h->uidvalidity) < 0 || p == end || *p != ' ') {
			*why = "bad version 1 header";
			return -1;
		}
		while (p < end && *p == ' ')
			p++;
		b = p;
		while (p < end && is_digit(*p))
			p++;
		if (parse_u32(b, (size_t)(p - b), &h->next_uid) < 0) {
			*why = "bad version 1 header";
			return -1;
		}
	} else if (h->version == 3) {
		while (p < end) {
			const char *value, *vend;
			char key = *p++;

			value = p;
			while (p < end && *p != ' ')
				p++;
			vend = p;
			switch (key) {
			case 'V':
				if (parse_u32(value, (size_t)(vend - value), &h->uidvalidity) < 0) {
					*why = "bad UIDVALIDITY (V)";
					return -1;
				}
				break;
			case 'N':
				if (parse_u32(value, (size_t)(vend - value), &h->next_uid) < 0) {
					*why = "bad next UID (N)";
					return -1;
				}
				break;
			case 'G':
				/* the mailbox GUID: 128 bits in hex */
				if (vend - value != 32) {
					*why = "bad mailbox GUID (G)";
					return -1;
				}
				for (const char *c = value; c < vend; c++)
					if (!is_hex(*c)) {
						*why = "bad mailbox GUID (G)";
						return -1;
					}
				break;
			default:
				break; /* other fields are Dovecot's to keep */
			}
			while (p < end && *p == ' ')
				p++;
		}
	} else {
		*why = "unsupported version";
		return -1;
	}
	if (h->uidvalidity == 0 || h->next_uid == 0) {
		*why = "no UIDVALIDITY or next UID";
		return -1;
	}
	return 0;
}

int uidlist_parse_record(unsigned version, const char *line, size_t len, struct uidlist_record *r,
			 const char **why)
{
	const char *p = line, *end = line + len, *name;
	uint64_t uid = 0;

	memset(r, 0, sizeof(*r));
	while (p < end && is_digit(*p) && uid < UINT32_MAX)
		uid = uid * 10 + (uint64_t)(*p++ - '0');
	/* UID 0 and 2^32-1 are not UIDs (RFC 3501 2.3.1.1) */
	if (uid == 0 || uid >= UINT32_MAX || p == end || *p != ' ') {
		*why = "bad UID";
		return -1;
	}
	r->uid = (uint32_t)uid;
	while (p < end && *p == ' ')
		p++;
	if (version == 3) {
		/* extension fields up to the ':' that starts the name */
		while (p < end && *p != ':') {
			const char *field = p;

			while (p < end && *p != ' ')
				p++;
			/* Dovecot drops a field that is not <capital><value>
			 * (and rewrites the file); so do we, reading. */
			if (*field == 'G' && !r->guid && p - field > 1) {
				r->guid = field + 1;
				r->guid_len = (size_t)(p - field - 1);
			} else if (*field == 'P' && !r->pop3_uidl) {
				r->pop3_uidl = field + 1;
				r->pop3_uidl_len = (size_t)(p - field - 1);
			}
			while (p < end && *p == ' ')
				p++;
		}
		if (p < end && *p == ':')
			p++;
	}
	if (p == end) {
		*why = "no file name";
		return -1;
	}
	if (memchr(p, '/', (size_t)(end - p))) {
		*why = "'/' in a file name";
		return -1;
	}
	name = p;
	while (p < end && *p != ':')
		p++;
	if (p == name) {
		*why = "empty file name";
		return -1;
	}
	r->name = name;
	r->name_len = (size_t)(p - name);
	return 0;
}

/* One complete line (without its LF). */
static enum uidlist_result reader_line(struct uidlist_reader *r, const char *line, size_t len)
{
	struct uidlist_record rec;

	r->lines++;
	if (len > UIDLIST_LINE_MAX) {
		r->why = "line too long";
		return UIDLIST_BROKEN;
	}
	if (memchr(line, '\0', len)) {
		r->why = "NUL in a line";
		return UIDLIST_BROKEN;
	}
	if (r->lines == 1)
		return uidlist_parse_header(line, len, &r->header, &r->why) < 0 ? UIDLIST_BROKEN
										 : UIDLIST_OK;
	if (uidlist_parse_record(r->header.version, line, len, &rec, &r->why) < 0)
		return UIDLIST_BROKEN;
	if (rec.uid <= r->last_uid) {
		r->why = "UIDs not in rising order";
		return UIDLIST_BROKEN;
	}
	if (r->header.version == 1 && rec.uid >= r->header.next_uid) {
		r->why = "UID past the header's next UID";
		return UIDLIST_BROKEN;
	}
	r->last_uid = rec.uid;
	if (r->record)
		r->record(r->ctx, &rec);
	return UIDLIST_OK;
}

static void reader_reset(struct uidlist_reader *r)
{
	memset(&r->header, 0, sizeof(r->header));
	r->last_uid = 0;
	r->lines = 0;
	r->bytes = 0;
	r->why = NULL;
}

/* Feeds the complete lines of buf[0..len); *used: octets consumed. */
static enum uidlist_result reader_feed(struct uidlist_reader *r, const char *buf, size_t len,
				       size_t *used)
{
	size_t start = 0;
	const char *lf;

	while ((lf = memchr(buf + start, '\n', len - start)) != NULL) {
		size_t n = (size_t)(lf - (buf + start));
		enum uidlist_result res = reader_line(r, buf + start, n);

		if (res != UIDLIST_OK)
			return res;
		start += n + 1;
		r->bytes += n + 1;
	}
	*used = start;
	return UIDLIST_OK;
}

enum uidlist_result uidlist_parse(struct uidlist_reader *r, const char *buf, size_t len)
{
	enum uidlist_result res;
	size_t used;

	reader_reset(r);
	if (len > UIDLIST_BYTES_MAX)
		return UIDLIST_TOO_BIG;
	res = reader_feed(r, buf, len, &used);
	if (res != UIDLIST_OK)
		return res;
	if (len - used > UIDLIST_LINE_MAX) {
		r->why = "line too long";
		return UIDLIST_BROKEN;
	}
	if (r->lines == 0) {
		r->why = "no header";
		return UIDLIST_BROKEN;
	}
	return UIDLIST_OK;
}

enum uidlist_result uidlist_read_fd(struct uidlist_reader *r, int fd)
{
	/* room for a whole longest line after a partial one */
	char buf[4 * (UIDLIST_LINE_MAX + 1)];
	size_t have = 0;
	off_t off = 0;

	reader_reset(r);
	for (;;) {
		ssize_t n = pread(fd, buf + have, sizeof(buf) - have, off);
		enum uidlist_result res;
		size_t used;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return UIDLIST_IO;
		}
		if (n == 0)
			break;
		off += n;
		if (off > UIDLIST_BYTES_MAX)
			return UIDLIST_TOO_BIG;
		have += (size_t)n;
		res = reader_feed(r, buf, have, &used);
		if (res != UIDLIST_OK)
			return res;
		memmove(buf, buf + used, have - used);
		have -= used;
		if (have > UIDLIST_LINE_MAX) {
			r->lines++;
			r->why = "line too long";
			return UIDLIST_BROKEN;
		}
	}
	if (r->lines == 0) {
		r->why = "no header";
		return UIDLIST_BROKEN;
	}
	return UIDLIST_OK;
}

uint32_t uidlist_next_uid(const struct uidlist_reader *r)
{
	uint64_t next = r->header.next_uid;

	if ((uint64_t)r->last_uid + 1 > next)
		next = (uint64_t)r->last_uid + 1;
	return next >= UINT32_MAX ? 0 : (uint32_t)next;
}

/* ---- the lock ---------------------------------------------------------- */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void host_name(char *buf, size_t cap)
{
	if (gethostname(buf, cap - 1) < 0)
		snprintf(buf, cap, "localhost");
	buf[cap - 1] = '\0';
}

/* The process named in a lock, when it is one on this host; else 0. */
static pid_t lock_local_pid(const char *path)
{
	char buf[512], host[256], *colon, *end;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	ssize_t n;
	long pid;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	if (buf[n - 1] == '\n')
		n--;
	buf[n] = '\0';
	colon = strchr(buf, ':');
	if (!colon)
		return 0;
	*colon = '\0';
	host_name(host, sizeof(host));
	if (strcmp(colon + 1, host) != 0)
		return 0;
	errno = 0;
	pid = strtol(buf, &end, 10);
	if (errno || end == buf || *end || pid <= 0 || (pid_t)pid != pid)
		return 0;
	return (pid_t)pid;
}

/* Dovecot's rules for a lock left behind: its process on this host is
 * gone (looked at once the lock is UIDLIST_LOCK_PID_CHECK_SECONDS old),
 * or it has not been touched for UIDLIST_LOCK_STALE_SECONDS. A stale
 * lock is removed if it is still the same file. 1 when the lock is gone
 * (try again), 0 when it is held. */
static int lock_clear_stale(const char *path)
{
	struct stat st, again;
	time_t age;
	int stale = 0;
	pid_t pid;

	if (lstat(path, &st) < 0)
		return errno == ENOENT;
	if (!S_ISREG(st.st_mode))
		return 0; /* not a lock we know: never removed */
	age = time(NULL) - st.st_mtime;
	if (age > UIDLIST_LOCK_STALE_SECONDS)
		stale = 1;
	else if (age >= UIDLIST_LOCK_PID_CHECK_SECONDS && (pid = lock_local_pid(path)) > 0 &&
		 (pid == getpid() || (kill(pid, 0) < 0 && errno == ESRCH)))
		stale = 1;
	if (!stale)
		return 0;
	if (lstat(path, &again) < 0)
		return errno == ENOENT;
	if (again.st_ino != st.st_ino || again.st_dev != st.st_dev || again.st_mtime != st.st_mtime)
		return 1; /* replaced meanwhile: look again */
	if (unlink(path) < 0 && errno != ENOENT)
		return 0;
	log_event(LOG_WARNING, "event=uidlist_lock result=stale_removed path=%s age=%lld", path,
		  (long long)age);
	return 1;
}

enum uidlist_lock_result uidlist_lock(const char *maildir, long wait_ms, struct uidlist_lock *l)
{
	long long deadline = now_ms() + (wait_ms > 0 ? wait_ms : 0);
	unsigned tries = 0;

	memset(l, 0, sizeof(*l));
	l->fd = -1;
	if ((size_t)snprintf(l->path, sizeof(l->path), "%s/%s", maildir, UIDLIST_LOCK_NAME) >=
	    sizeof(l->path)) {
		errno = ENAMETOOLONG;
		return UIDLIST_LOCK_ERROR;
	}
	for (;;) {
		struct timespec pause;
		long long left;
		int fd = open(l->path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);

		if (fd >= 0) {
			char text[300], host[256];
			struct stat st;
			int n;

			/* "<pid>:<host>", so that Dovecot (and we) can tell
			 * a lock whose process died */
			host_name(host, sizeof(host));
			n = snprintf(text, sizeof(text), "%ld:%s", (long)getpid(), host);
			if (n < 0 || (size_t)n >= sizeof(text) || fd_write_all(fd, text, (size_t)n) < 0)
				(void)!ftruncate(fd, 0);
			if (fstat(fd, &st) < 0) {
				int saved = errno;

				unlink(l->path);
				close(fd);
				errno = saved;
				return UIDLIST_LOCK_ERROR;
			}
			l->fd = fd;
			l->dev = st.st_dev;
			l->ino = st.st_ino;
			return UIDLIST_LOCKED;
		}
		if (errno != EEXIST)
			return UIDLIST_LOCK_ERROR;
		if (lock_clear_stale(l->path) && ++tries < 100)
			continue;
		left = deadline - now_ms();
		if (left <= 0)
			return UIDLIST_LOCK_BUSY;
		/* Dovecot waits 0.1 to 0.2 s between looks */
		left = left < 100 ? left : 100 + (long long)(((unsigned)getpid() * 7919u + tries++) % 100);
		pause.tv_sec = 0;
		pause.tv_nsec = (long)(left * 1000000);
		nanosleep(&pause, NULL);
	}
}

static int lock_is_ours(const struct uidlist_lock *l)
{
	struct stat st;

	return l->fd >= 0 && lstat(l->path, &st) == 0 && st.st_ino == l->ino &&
	       st.st_dev == l->dev;
}

void uidlist_unlock(struct uidlist_lock *l)
{
	if (l->fd < 0)
		return;
	if (lock_is_ours(l))
		unlink(l->path);
	close(l->fd);
	l->fd = -1;
}

/* ---- writing ----------------------------------------------------------- */

struct writer {
	int fd;
	size_t len;
	int failed;
	char buf[8192];
};

static void writer_flush(struct writer *w)
{
	if (!w->failed && w->len && fd_write_all(w->fd, w->buf, w->len) < 0)
		w->failed = 1;
	w->len = 0;
}

static void writer_add(struct writer *w, const char *s, size_t n)
{
	while (n > 0) {
		size_t take = sizeof(w->buf) - w->len;

		if (take > n)
			take = n;
		memcpy(w->buf + w->len, s, take);
		w->len += take;
		s += take;
		n -= take;
		if (w->len == sizeof(w->buf))
			writer_flush(w);
	}
}

static void new_guid(char *hex, size_t cap)
{
	unsigned char raw[16];

	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
		/* no entropy: unique enough from time, pid and address */
		unsigned long long a = (unsigned long long)time(NULL) ^ (unsigned long long)getpid() << 32;
		unsigned long long b = (unsigned long long)(uintptr_t)raw ^ (unsigned long long)clock();

		memcpy(raw, &a, 8);
		memcpy(raw + 8, &b, 8);
	}
	for (size_t i = 0; i < sizeof(raw) && 2 * i + 2 < cap; i++)
		snprintf(hex + 2 * i, 3, "%02x", raw[i]);
}

int uidlist_append(const char *maildir, const struct uidlist_lock *l, int old_fd,
		   const struct uidlist_reader *r, uint32_t first_uid, const char *const *names,
		   size_t n, uint32_t *uidvalidity)
{
	/* not re-entered: one append per POP3 login */
	static struct writer w;
	char tmp[PATH_MAX_POSTAGE + 32], path[PATH_MAX_POSTAGE + 32], line[64];
	unsigned version = old_fd >= 0 ? r->header.version : 3;
	uint32_t next;
	int saved;

	if (n == 0 || first_uid == 0 || (uint64_t)first_uid + n >= UINT32_MAX) {
		errno = EOVERFLOW;
		return -1;
	}
	next = first_uid + (uint32_t)n;
	if (!lock_is_ours(l)) {
		errno = ENOLCK;
		return -1;
	}
	snprintf(tmp, sizeof(tmp), "%s/%s", maildir, UIDLIST_TMP_NAME);
	snprintf(path, sizeof(path), "%s/%s", maildir, UIDLIST_NAME);
	memset(&w, 0, sizeof(w));
	w.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (w.fd < 0)
		return -1;
	if (old_fd >= 0) {
		struct stat st;
		off_t from = 0;

		/* the replacement keeps the file's permissions */
		if (fstat(old_fd, &st) == 0)
			(void)fchmod(w.fd, st.st_mode & 0666);
		*uidvalidity = r->header.uidvalidity;
		if (version == 1) {
			/* version 1 records must stay below the header's
			 * next UID: write the header anew */
			char head[64];
			int k = snprintf(head, sizeof(head), "1 %u %u\n", r->header.uidvalidity, next);
			char first[UIDLIST_LINE_MAX + 2];
			ssize_t got = pread(old_fd, first, sizeof(first), 0);
			const char *lf = got > 0 ? memchr(first, '\n', (size_t)got) : NULL;

			if (!lf) {
				errno = EIO;
				goto fail;
			}
			from = (off_t)(lf - first + 1);
			writer_add(&w, head, (size_t)k);
		}
		writer_flush(&w);
		/* the complete lines the reader read, as they are */
		if (w.failed || fd_copy_range(w.fd, old_fd, from, (off_t)r->bytes) < 0)
			goto fail;
	} else {
		char guid[40] = "";
		char head[128];
		int k;

		*uidvalidity = (uint32_t)time(NULL);
		new_guid(guid, sizeof(guid));
		k = snprintf(head, sizeof(head), "3 V%u N%u G%s\n", *uidvalidity, next, guid);
		writer_add(&w, head, (size_t)k);
	}
	for (size_t i = 0; i < n; i++) {
		size_t len = strcspn(names[i], ":");
		int k = snprintf(line, sizeof(line), version == 3 ? "%u :" : "%u ",
				 first_uid + (uint32_t)i);

		if (len == 0 || memchr(names[i], '\n', len) || memchr(names[i], '/', len)) {
			errno = EINVAL;
			goto fail;
		}
		writer_add(&w, line, (size_t)k);
		writer_add(&w, names[i], len);
		writer_add(&w, "\n", 1);
	}
	writer_flush(&w);
	if (w.failed || fsync(w.fd) < 0)
		goto fail;
	if (close(w.fd) < 0) {
		w.fd = -1;
		goto fail;
	}
	w.fd = -1;
	/* Someone who judged our lock stale may be writing now: then ours
	 * must not land. */
	if (!lock_is_ours(l)) {
		errno = ENOLCK;
		goto fail;
	}
	if (rename(tmp, path) < 0)
		goto fail;
	/* a crash now keeps the new records: a client may have their
	 * UIDLs once we answer */
	if (fsync_dir(maildir) < 0)
		return -1; /* in place, but maybe not for good */
	return 0;
fail:
	saved = errno;
	if (w.fd >= 0)
		close(w.fd);
	unlink(tmp);
	errno = saved;
	return -1;
}
