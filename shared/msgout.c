#include "msgout.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io.h"
#include "maildir.h"

void msg_out_init(struct msg_out *o, int fd, int drop_cr)
{
	memset(o, 0, sizeof(*o));
	o->fd = fd;
	o->drop_cr = drop_cr;
}

int msg_out_flush(struct msg_out *o)
{
	if (o->len > 0 && !o->error && fd_write_all(o->fd, o->buf, o->len) < 0)
		o->error = errno ? errno : EIO;
	o->len = 0;
	return o->error ? -1 : 0;
}

void msg_out_write(struct msg_out *o, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (c == '\r' && o->drop_cr)
			continue;
		if (o->len == sizeof(o->buf))
			msg_out_flush(o);
		o->buf[o->len++] = (char)c;
		o->total++;
		o->lfs += c == '\n';
		o->eight_bit |= c >= 0x80;
	}
}

void msg_out_printf(struct msg_out *o, const char *fmt, ...)
{
	char line[4096];
	va_list ap;
	long n;

	va_start(ap, fmt);
	n = format_fit(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n >= 0)
		msg_out_write(o, line, (size_t)n);
}

void msg_out_copy(struct msg_out *o, int fd, off_t from, off_t to)
{
	char buf[16384];

	while (from < to && !o->error) {
		size_t want = (size_t)(to - from) < sizeof(buf) ? (size_t)(to - from) : sizeof(buf);
		ssize_t n = pread(fd, buf, want, from);

		if (n <= 0) {
			o->error = n < 0 ? errno : EIO;
			return;
		}
		msg_out_write(o, buf, (size_t)n);
		from += n;
	}
}

void rfc5322_date(long long t, char *buf, size_t cap)
{
	time_t tt = (time_t)t;
	struct tm tm;

	localtime_r(&tt, &tm);
	strftime(buf, cap, "%a, %d %b %Y %H:%M:%S %z", &tm);
}
