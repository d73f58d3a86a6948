#include "io.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "limits.h"

void io_init(struct io *io, int rfd, int wfd, int timeout_ms)
{
	io->rfd = rfd;
	io->wfd = wfd;
	io->timeout_ms = timeout_ms;
	io->line_deadline = 0;
	io->transport = NULL;
	io->slow = NULL;
	io->slow_ms = io->slow_partial_ms = 0;
	io->line_start_bytes = 0;
	io->rstart = io->rend = io->wlen = 0;
	io->bytes_in = io->bytes_out = 0;
	io->write_failed = 0;
}

void io_set_transport(struct io *io, const struct io_transport *t)
{
	io->transport = t;
}

size_t io_pending(const struct io *io)
{
	size_t n = io->rend - io->rstart;

	if (io->transport && io->transport->pending)
		n += io->transport->pending(io->transport->ctx);
	return n;
}

void io_discard_input(struct io *io)
{
	io->rstart = io->rend = 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

enum io_result io_wait_readable(struct io *io, int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	long long deadline = now_ms() + timeout_ms;

	(void)io;
	for (;;) {
		long long left = deadline - now_ms();
		int r;

		if (left <= 0)
			return IO_TIMEOUT;
		r = poll(&p, 1, (int)left);
		if (r > 0)
			return IO_OK;
		if (r == 0)
			return IO_TIMEOUT;
		if (errno != EINTR)
			return IO_ERROR;
	}
}

static int wait_writable(int fd, long long deadline)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };

	for (;;) {
		long long left = deadline - now_ms();
		int r;

		if (left <= 0)
			return -1;
		r = poll(&p, 1, (int)left);
		if (r > 0)
			return 0;
		if (r == 0 || errno != EINTR)
			return -1;
	}
}

/* Writes all of buf within the timeout; -1 when the client is gone. */
static int write_out(struct io *io, const char *buf, size_t len)
{
	size_t off = 0;
	long long deadline = now_ms() + io->timeout_ms;

	while (off < len) {
		ssize_t n;

		if (io->transport)
			n = io->transport->write(io->transport->ctx, buf + off, len - off);
		else
			n = write(io->wfd, buf + off, len - off);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN && wait_writable(io->wfd, deadline) == 0)
			continue;
		/* The client will not see this reply: reading on would serve
		 * commands (a DATA) whose answers it never gets. */
		io->write_failed = 1;
		return -1;
	}
	io->bytes_out += len;
	return 0;
}

int io_flush(struct io *io)
{
	int r = write_out(io, io->wbuf, io->wlen);

	io->wlen = 0;
	return r;
}

int io_write(struct io *io, const void *data, size_t len)
{
	const char *p = data;

	/* A large block (a POP3 RETR) goes out directly, not through wbuf. */
	if (len >= sizeof(io->wbuf)) {
		if (io_flush(io) < 0)
			return -1;
		return write_out(io, p, len);
	}
	while (len > 0) {
		size_t room = sizeof(io->wbuf) - io->wlen;
		size_t n = len < room ? len : room;

		memcpy(io->wbuf + io->wlen, p, n);
		io->wlen += n;
		p += n;
		len -= n;
		if (io->wlen == sizeof(io->wbuf) && io_flush(io) < 0)
			return -1;
	}
	return 0;
}

long format_fit(char *buf, size_t cap, const char *fmt, va_list ap)
{
	int n = vsnprintf(buf, cap, fmt, ap);

	if (n < 0 || cap == 0)
		return -1;
	return (size_t)n >= cap ? (long)cap - 1 : n;
}

int io_reply_line(struct io *io, size_t max_line, const char *fmt, va_list ap)
{
	char buf[1024];
	long n;

	if (max_line > sizeof(buf) || max_line < 3)
		max_line = sizeof(buf);
	n = format_fit(buf, max_line - 2, fmt, ap);
	if (n < 0)
		return -1;
	buf[n++] = '\r';
	buf[n++] = '\n';
	return io_write(io, buf, (size_t)n);
}

int io_puts(struct io *io, const char *s)
{
	return io_write(io, s, strlen(s));
}

/* Refills rbuf (after moving what is left to the front). Flushes pending
 * output first when it must wait, so pipelined replies go out together. */
/* Waits for input until deadline, asking io->slow on the way. */
static enum io_result wait_input(struct io *io, long long deadline)
{
	for (;;) {
		long long now = now_ms(), until = deadline;
		enum io_result w;

		if (io->slow && io->slow_ms > 0 && io->line_deadline) {
			/* Bytes of the line came and the rest does not: a
			 * client trickling it (slowloris) is asked about sooner
			 * than one that is only quiet. */
			int every = io->bytes_in > io->line_start_bytes && io->slow_partial_ms > 0 ?
					    io->slow_partial_ms : io->slow_ms;
			long long check = io->line_deadline - io->timeout_ms + every;
			if (check <= now)
				check = now + every - (now - check) % every;
			if (check < until)
				until = check;
		}
		w = io_wait_readable(io, io->rfd, (int)(until - now));
		if (w != IO_TIMEOUT || until >= deadline)
			return w;
		if (io->slow(io))
			return IO_TIMEOUT;
	}
}

static enum io_result fill(struct io *io)
{
	long long deadline = now_ms() + io->timeout_ms;

	if (io->line_deadline && io->line_deadline < deadline)
		deadline = io->line_deadline;

	if (io->rstart > 0) {
		memmove(io->rbuf, io->rbuf + io->rstart, io->rend - io->rstart);
		io->rend -= io->rstart;
		io->rstart = 0;
	}
	if (io->rend == sizeof(io->rbuf))
		return IO_OK;
	for (;;) {
		ssize_t n;
		int ready = io->transport && io->transport->pending &&
			    io->transport->pending(io->transport->ctx) > 0;

		if (!ready) {
			enum io_result w;

			if (io->wlen > 0 && io_flush(io) < 0)
				return IO_ERROR;
			w = wait_input(io, deadline);
			if (w != IO_OK)
				return w;
		}
		if (io->transport)
			n = io->transport->read(io->transport->ctx, io->rbuf + io->rend,
						sizeof(io->rbuf) - io->rend);
		else
			n = read(io->rfd, io->rbuf + io->rend, sizeof(io->rbuf) - io->rend);
		if (n > 0) {
			io->rend += (size_t)n;
			io->bytes_in += (unsigned long long)n;
			return IO_OK;
		}
		if (n == 0)
			return IO_EOF;
		if (errno == EINTR || errno == EAGAIN)
			continue;
		return IO_ERROR;
	}
}

static enum io_result read_chunk(struct io *io, char *buf, size_t cap, size_t *len);

/* The whole line (or chunk) must arrive within timeout_ms. */
enum io_result io_read_chunk(struct io *io, char *buf, size_t cap, size_t *len)
{
	enum io_result r;
	int own = io->line_deadline == 0;

	if (own) {
		io->line_deadline = now_ms() + io->timeout_ms;
		io->line_start_bytes = io->bytes_in;
	}
	r = read_chunk(io, buf, cap, len);
	if (own)
		io->line_deadline = 0;
	return r;
}

static enum io_result read_chunk(struct io *io, char *buf, size_t cap, size_t *len)
{
	*len = 0;
	if (io->write_failed)
		return IO_ERROR;
	for (;;) {
		size_t avail = io->rend - io->rstart;
		char *start = io->rbuf + io->rstart;
		char *lf = memchr(start, '\n', avail);
		size_t take = lf ? (size_t)(lf - start) + 1 : avail;
		enum io_result r;

		if (take > cap - *len)
			take = cap - *len;
		if (lf || take == cap - *len) {
			memcpy(buf + *len, start, take);
			*len += take;
			io->rstart += take;
			return IO_OK;
		}
		/* No LF yet: keep what we have and read more. */
		memcpy(buf + *len, start, take);
		*len += take;
		io->rstart += take;
		r = fill(io);
		if (r != IO_OK) {
			if (r == IO_EOF && *len > 0)
				return IO_OK;
			return r;
		}
	}
}

static enum io_result read_line(struct io *io, char *buf, size_t cap, size_t *len);

enum io_result io_read_line(struct io *io, char *buf, size_t cap, size_t *len)
{
	enum io_result r;

	io->line_deadline = now_ms() + io->timeout_ms;
	io->line_start_bytes = io->bytes_in;
	r = read_line(io, buf, cap, len);
	io->line_deadline = 0;
	return r;
}

static enum io_result read_line(struct io *io, char *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	int toolong = 0;

	for (;;) {
		size_t got;
		enum io_result r = io_read_chunk(io, buf + n, cap - 1 - n, &got);

		if (r != IO_OK)
			return r;
		n += got;
		if (n > 0 && buf[n - 1] == '\n')
			break;
		if (got == 0 && n < cap - 1)
			return IO_EOF;
		/* Full and no LF: discard until the end of this line. */
		toolong = 1;
		n = 0;
	}
	if (toolong) {
		*len = 0;
		buf[0] = '\0';
		return IO_TOOLONG;
	}
	n--;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	*len = n;
	return IO_OK;
}

void io_linger_close(struct io *io)
{
	static char drop[4096];
	long long deadline;
	size_t total = 0;

	if (shutdown(io->wfd, SHUT_WR) < 0)
		return;
	deadline = now_ms() + LINGER_CLOSE_MS;
	while (total < LINGER_CLOSE_BYTES_MAX) {
		long long left = deadline - now_ms();
		ssize_t n;

		if (left <= 0 || io_wait_readable(io, io->rfd, (int)left) != IO_OK)
			return;
		n = read(io->rfd, drop, sizeof(drop));
		if (n <= 0)
			return;
		total += (size_t)n;
	}
}
