/* Bounded line reader and buffered writer over a pair of fds, or over a
 * transport (TLS) that sits on them. Every read has a length cap and a
 * timeout; the commands above never see which transport is in use. */
#ifndef POSTAGE_IO_H
#define POSTAGE_IO_H

#include <stdarg.h>
#include <stddef.h>
#include <sys/types.h>

#define IO_BUFFER_SIZE 16384

enum io_result {
	IO_OK = 0,
	IO_TOOLONG, /* line over the cap: the rest of it was read and dropped */
	IO_EOF,
	IO_TIMEOUT,
	IO_ERROR,
};

/* A transport over the fds (TLS). read/write return bytes, 0 at EOF, -1
 * with errno (EAGAIN: call again after poll); pending says how many
 * decrypted bytes wait inside the transport. */
struct io_transport {
	ssize_t (*read)(void *ctx, void *buf, size_t len);
	ssize_t (*write)(void *ctx, const void *buf, size_t len);
	size_t (*pending)(void *ctx);
	void *ctx;
};

struct io {
	int rfd, wfd;
	int timeout_ms;
	/* When the line being read must be complete (monotonic ms, 0 none):
	 * a client sending one byte every few seconds cannot hold a session
	 * open past timeout_ms per line. */
	long long line_deadline;
	/* When a line has taken slow_ms and every slow_ms after that
	 * (slow_partial_ms once some of its bytes came), slow(io) is asked
	 * whether to go on waiting (0) or to give up as on a timeout (1):
	 * slow sessions make way under load (stress.h). */
	int (*slow)(struct io *io);
	int slow_ms, slow_partial_ms;
	unsigned long long line_start_bytes; /* bytes_in when the line began */
	const struct io_transport *transport; /* NULL: plain fds */
	size_t rstart, rend, wlen;
	unsigned long long bytes_in, bytes_out;
	int write_failed;   /* a write to the client failed: the session is over */
	char rbuf[IO_BUFFER_SIZE];
	char wbuf[IO_BUFFER_SIZE];
};

void io_init(struct io *io, int rfd, int wfd, int timeout_ms);
void io_set_transport(struct io *io, const struct io_transport *t);

/* One line, without its CRLF (or bare LF), NUL-terminated, at most cap-1
 * octets. A longer line is consumed to its end and IO_TOOLONG returned.
 * Output is flushed before the reader blocks. */
enum io_result io_read_line(struct io *io, char *buf, size_t cap, size_t *len);

/* Raw bytes up to and including the next LF, or cap bytes when no LF comes
 * first. Not NUL-terminated. */
enum io_result io_read_chunk(struct io *io, char *buf, size_t cap, size_t *len);

/* Bytes already received and not yet read (pipelined input). */
size_t io_pending(const struct io *io);
/* Drops everything received and not yet read (before a TLS handshake). */
void io_discard_input(struct io *io);
/* Waits until input is readable; for the TLS handshake. */
enum io_result io_wait_readable(struct io *io, int fd, int timeout_ms);

/* After the last reply (and TLS close_notify): half-closes wfd and reads
 * and drops what the client still sends, for up to LINGER_CLOSE_MS or
 * LINGER_CLOSE_BYTES_MAX, so unread input does not turn the close into a
 * reset that destroys the last reply. Does nothing when wfd is not a
 * socket. */
void io_linger_close(struct io *io);

/* vsnprintf into buf (cap bytes), cut to fit: the length written (less
 * than cap), or -1 (an encoding error, or cap 0). */
long format_fit(char *buf, size_t cap, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

int io_write(struct io *io, const void *data, size_t len);
int io_puts(struct io *io, const char *s);
int io_flush(struct io *io);
/* One protocol reply line: fmt, cut to at most max_line octets including
 * the CRLF that is added (max_line at most 1024). */
int io_reply_line(struct io *io, size_t max_line, const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

#endif
