/* shared/io.c: the bounded line reader over a pipe (CRLF and LF lines,
 * over-long lines, EOF, timeouts), io_read_chunk, pipelined input, and the
 * buffered writer. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "io.h"
#include "limits.h"

static struct io io; /* large: keep it off the stack */

static long fit_into(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static long fit_into(char *buf, size_t cap, const char *fmt, ...)
{
	va_list ap;
	long n;

	va_start(ap, fmt);
	n = format_fit(buf, cap, fmt, ap);
	va_end(ap);
	return n;
}

static const char *result_name(enum io_result r)
{
	switch (r) {
	case IO_OK:
		return "IO_OK";
	case IO_TOOLONG:
		return "IO_TOOLONG";
	case IO_EOF:
		return "IO_EOF";
	case IO_TIMEOUT:
		return "IO_TIMEOUT";
	case IO_ERROR:
		return "IO_ERROR";
	}
	return "?";
}

/* A pipe holding data (and closed for writing when close_it): io reads
 * from it. Returns the write end (or -1 when closed). */
static int pipe_with(const char *data, size_t len, int close_it, int timeout_ms)
{
	int fds[2];

	REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
	REQUIRE(len < 65536);
	if (len)
		REQUIRE(write(fds[1], data, len) == (ssize_t)len);
	if (close_it) {
		close(fds[1]);
		fds[1] = -1;
	}
	io_init(&io, fds[0], -1, timeout_ms);
	return fds[1];
}

static void done(int wfd)
{
	close(io.rfd);
	if (wfd >= 0)
		close(wfd);
}

/* Reads one line with cap and checks result and content. */
static void expect_line(const char *given, size_t cap, enum io_result want, const char *line,
			size_t line_len)
{
	char buf[70000];
	size_t len = 99999;
	enum io_result r;

	REQUIRE(cap <= sizeof(buf));
	r = io_read_line(&io, buf, cap, &len);
	if (!check_int_at(__FILE__, __LINE__, given, strlen(given), want, r, result_name(r)))
		return;
	if (r == IO_OK) {
		CHECK_MEM_N(given, strlen(given), line, line_len, buf, len);
		CHECK_INT(given, 0, buf[len]);
	} else if (r == IO_TOOLONG) {
		CHECK_INT(given, 0, len);
		CHECK_INT(given, 0, buf[0]);
	}
}

#define LINE(lit) lit, sizeof(lit) - 1

static void test_lines(void)
{
	char big[40000 + 64];
	int w;

	/* CRLF and LF lines; a CR inside a line stays */
	w = pipe_with(LINE("HELO a\r\nMAIL b\nx\ry\r\n\r\n\n"), 1, 1000);
	expect_line("HELO a CRLF", 64, IO_OK, LINE("HELO a"));
	expect_line("MAIL b LF", 64, IO_OK, LINE("MAIL b"));
	expect_line("x CR y CRLF", 64, IO_OK, LINE("x\ry"));
	expect_line("empty CRLF", 64, IO_OK, LINE(""));
	expect_line("empty LF", 64, IO_OK, LINE(""));
	expect_line("end", 64, IO_EOF, NULL, 0);
	expect_line("end, again", 64, IO_EOF, NULL, 0);
	done(w);

	/* NUL inside a line: the length tells */
	w = pipe_with(LINE("A\0B\r\n"), 1, 1000);
	expect_line("A NUL B CRLF", 64, IO_OK, LINE("A\0B"));
	done(w);

	/* a line without its end at EOF is not a line */
	w = pipe_with(LINE("QUIT\r\nQUI"), 1, 1000);
	expect_line("QUIT CRLF", 64, IO_OK, LINE("QUIT"));
	expect_line("QUI then EOF", 64, IO_EOF, NULL, 0);
	done(w);

	/* the cap holds the line and its LF (and the NUL): with cap 16, 14
	 * octets and LF fit, as do 13 and CRLF */
	w = pipe_with(LINE("12345678901234\n1234567890123\r\n123456789012345\n12345678901234\r\nnext\r\n"), 1, 1000);
	expect_line("14 octets LF, cap 16", 16, IO_OK, LINE("12345678901234"));
	expect_line("13 octets CRLF, cap 16", 16, IO_OK, LINE("1234567890123"));
	expect_line("15 octets LF, cap 16", 16, IO_TOOLONG, NULL, 0);
	expect_line("14 octets CRLF, cap 16", 16, IO_TOOLONG, NULL, 0);
	expect_line("next line after the long ones", 16, IO_OK, LINE("next"));
	done(w);

	/* RFC 5321 4.5.3.1.4: a command line is 512 octets with its CRLF */
	{
		size_t cap = SMTP_COMMAND_LINE_MAX + 1;
		size_t o = 0;

		memset(big, 'a', 510);
		memcpy(big + 510, "\r\n", 2);
		o = 512;
		memset(big + o, 'b', 511);
		memcpy(big + o + 511, "\r\n", 2);
		o += 513;
		memcpy(big + o, "NOOP\r\n", 6);
		o += 6;
		w = pipe_with(big, o, 1, 1000);
		expect_line("510 octets + CRLF", cap, IO_OK, big, 510);
		expect_line("511 octets + CRLF", cap, IO_TOOLONG, NULL, 0);
		expect_line("NOOP after the long line", cap, IO_OK, LINE("NOOP"));
		done(w);
	}

	/* a line far longer than the read buffer: dropped whole, and the next
	 * line is read intact */
	memset(big, 'z', 40000);
	memcpy(big + 40000, "\r\nRSET\r\n", 8);
	w = pipe_with(big, 40008, 1, 1000);
	expect_line("40000 octets, cap 513", 513, IO_TOOLONG, NULL, 0);
	expect_line("RSET after 40000 octets", 513, IO_OK, LINE("RSET"));
	expect_line("then EOF", 513, IO_EOF, NULL, 0);
	done(w);

	/* an over-long line cut by EOF */
	w = pipe_with(big, 1000, 1, 1000);
	expect_line("1000 octets then EOF", 513, IO_EOF, NULL, 0);
	done(w);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_timeout_and_flush(void)
{
	int out[2], w;
	long long t0, elapsed;
	char buf[64];
	ssize_t n;

	/* nothing comes and the writer stays: a timeout, after about
	 * timeout_ms, with the pending output flushed first */
	REQUIRE(pipe2(out, O_CLOEXEC | O_NONBLOCK) == 0);
	w = pipe_with(LINE("EHLO x\r\n"), 0, 150);
	io.wfd = out[1];
	expect_line("EHLO x CRLF", 64, IO_OK, LINE("EHLO x"));
	io_puts(&io, "250-first\r\n");
	io_puts(&io, "250 second\r\n");
	CHECK_INT("output before reading", -1, read(out[0], buf, sizeof(buf)));
	t0 = now_ms();
	expect_line("nothing, timeout 150 ms", 64, IO_TIMEOUT, NULL, 0);
	elapsed = now_ms() - t0;
	CHECK_INT("timeout 150 ms: waited long enough", 1, elapsed >= 140);
	CHECK_INT("timeout 150 ms: not much longer", 1, elapsed < 3000);
	n = read(out[0], buf, sizeof(buf));
	CHECK_MEM_N("replies flushed before blocking", 31, "250-first\r\n250 second\r\n", 23, buf,
		    n < 0 ? 0 : (size_t)n);
	CHECK_INT("bytes_out", 23, io.bytes_out);
	CHECK_INT("bytes_in", 8, io.bytes_in);

	/* part of a line, then silence: a timeout too */
	REQUIRE(write(w, "MAIL FROM", 9) == 9);
	expect_line("MAIL FROM without CRLF, timeout", 64, IO_TIMEOUT, NULL, 0);
	done(w);
	close(out[0]);
	close(out[1]);
}

/* A client trickling one byte every 40 ms never lets a single read wait
 * the whole timeout, but the line as a whole must arrive within it
 * (slowloris). */
static void test_line_deadline(void)
{
	int fds[2];
	pid_t child;
	long long t0, elapsed;

	REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
	child = fork();
	REQUIRE(child >= 0);
	if (child == 0) {
		close(fds[0]);
		for (int i = 0; i < 100; i++) {
			struct timespec ts = { 0, 40 * 1000 * 1000 };
			if (write(fds[1], "x", 1) != 1)
				_exit(0);
			nanosleep(&ts, NULL);
		}
		_exit(0);
	}
	close(fds[1]);
	io_init(&io, fds[0], -1, 300);
	t0 = now_ms();
	expect_line("trickled line, timeout 300 ms", 64, IO_TIMEOUT, NULL, 0);
	elapsed = now_ms() - t0;
	CHECK_INT("trickle cut near the line timeout", 1, elapsed >= 280 && elapsed < 2000);
	/* the same for a raw chunk (DATA) */
	{
		char buf[64];
		size_t n;
		t0 = now_ms();
		CHECK_INT("trickled chunk times out", IO_TIMEOUT, io_read_chunk(&io, buf, sizeof(buf), &n));
		elapsed = now_ms() - t0;
		CHECK_INT("chunk cut near the timeout", 1, elapsed >= 280 && elapsed < 2000);
	}
	close(fds[0]);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
}

static void test_chunks(void)
{
	char buf[64];
	size_t len;
	int w;
	enum io_result r;

	/* up to and including LF, or cap bytes */
	w = pipe_with(LINE("abc\ndef"), 1, 1000);
	r = io_read_chunk(&io, buf, 2, &len);
	CHECK_INT("abc LF def, cap 2", IO_OK, r);
	CHECK_MEM_N("abc LF def, cap 2", 10, "ab", 2, buf, len);
	r = io_read_chunk(&io, buf, 2, &len);
	CHECK_MEM_N("abc LF def, cap 2, second", 18, "c\n", 2, buf, len);
	r = io_read_chunk(&io, buf, 2, &len);
	CHECK_MEM_N("abc LF def, cap 2, third", 17, "de", 2, buf, len);
	r = io_read_chunk(&io, buf, 2, &len);
	CHECK_INT("abc LF def, cap 2, fourth", IO_OK, r);
	CHECK_MEM_N("abc LF def, cap 2, fourth (at EOF)", 34, "f", 1, buf, len);
	r = io_read_chunk(&io, buf, 2, &len);
	CHECK_INT("abc LF def, cap 2, fifth", IO_EOF, r);
	CHECK_INT("abc LF def, cap 2, fifth", 0, len);
	done(w);

	w = pipe_with(LINE("abc\r\ndef\r\n.\r\n"), 1, 1000);
	r = io_read_chunk(&io, buf, sizeof(buf), &len);
	CHECK_MEM_N("abc CRLF", 8, "abc\r\n", 5, buf, len);
	r = io_read_chunk(&io, buf, sizeof(buf), &len);
	CHECK_MEM_N("def CRLF", 8, "def\r\n", 5, buf, len);
	r = io_read_chunk(&io, buf, sizeof(buf), &len);
	CHECK_MEM_N(". CRLF", 6, ".\r\n", 3, buf, len);
	done(w);

	/* pipelined input is buffered, counted, and can be dropped (as before
	 * a TLS handshake) */
	w = pipe_with(LINE("STARTTLS\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"), 0, 100);
	expect_line("STARTTLS CRLF (pipelined)", 64, IO_OK, LINE("STARTTLS"));
	CHECK_INT("pending after STARTTLS", 32, io_pending(&io));
	io_discard_input(&io);
	CHECK_INT("pending after discard", 0, io_pending(&io));
	expect_line("after discard", 64, IO_TIMEOUT, NULL, 0);
	REQUIRE(write(w, "EHLO y\r\n", 8) == 8);
	expect_line("EHLO y after discard", 64, IO_OK, LINE("EHLO y"));
	done(w);
}

/* A writer process sends many lines of varying length in small and large
 * writes; the reader must see each exactly, in order. */
static void test_stream(void)
{
	enum { LINES = 20000 };
	int fds[2];
	pid_t pid;
	char expect[1100];
	int bad = 0, status;

	REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		static char out[1 << 16];
		size_t o = 0;

		close(fds[0]);
		for (int i = 0; i < LINES; i++) {
			size_t n = (size_t)(i * 7919) % 1000;

			if (o + n + 2 > sizeof(out) || i % 97 == 0) {
				if (write(fds[1], out, o) != (ssize_t)o)
					_exit(1);
				o = 0;
			}
			memset(out + o, 'a' + i % 26, n);
			o += n;
			if (i % 3 == 0) {
				out[o++] = '\n';
			} else {
				out[o++] = '\r';
				out[o++] = '\n';
			}
		}
		if (write(fds[1], out, o) != (ssize_t)o)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	io_init(&io, fds[0], -1, 10000);
	for (int i = 0; i < LINES && bad < 5; i++) {
		size_t n = (size_t)(i * 7919) % 1000, len;
		char buf[1100];
		enum io_result r = io_read_line(&io, buf, sizeof(buf), &len);

		memset(expect, 'a' + i % 26, n);
		if (r != IO_OK || len != n || memcmp(buf, expect, n) != 0) {
			char given[64];
			snprintf(given, sizeof(given), "streamed line %d", i);
			CHECK_INT(given, IO_OK, r);
			CHECK_MEM_N(given, strlen(given), expect, n, buf, r == IO_OK ? len : 0);
			bad++;
		}
	}
	CHECK_INT("20000 streamed lines", 0, bad);
	expect_line("after 20000 streamed lines", 1100, IO_EOF, NULL, 0);
	close(fds[0]);
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK_INT("writer process", 0, WIFEXITED(status) ? WEXITSTATUS(status) : 128);
}

static void test_writer(void)
{
	int fds[2];
	static char data[40000], back[50000];
	size_t got = 0;
	ssize_t n;
	char line[3000];

	/* more than the buffer: flushed as it fills, all of it arrives */
	REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
	io_init(&io, -1, fds[1], 1000);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (char)('0' + i % 10);
	CHECK_INT("io_write 40000", 0, io_write(&io, data, sizeof(data)));
	CHECK_INT("io_flush", 0, io_flush(&io));
	CHECK_INT("bytes_out", sizeof(data), io.bytes_out);
	close(fds[1]);
	while ((n = read(fds[0], back + got, sizeof(back) - got)) > 0)
		got += (size_t)n;
	close(fds[0]);
	CHECK_MEM_N("io_write 40000", 14, data, sizeof(data), back, got);

	/* format_fit cuts at its buffer, never beyond */
	memset(line, 'p', sizeof(line) - 1);
	line[sizeof(line) - 1] = '\0';
	{
		char small[2048];
		long fit = fit_into(small, sizeof(small), "%s", line);
		CHECK_INT("format_fit of 2999 octets", 2047, fit);
		CHECK_INT("format_fit: terminated", 0, small[2047]);
		CHECK_INT("format_fit: the octets", 0, memcmp(small, line, 2047));
		CHECK_INT("format_fit into 0 bytes", -1, fit_into(small, 0, "%s", "x"));
		CHECK_INT("format_fit that fits", 3, fit_into(small, sizeof(small), "%d", 250));
	}

	/* a reader that went away: an error, not a signal */
	REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
	close(fds[0]);
	io_init(&io, -1, fds[1], 1000);
	io_puts(&io, "221 bye\r\n");
	CHECK_INT("flush to a closed pipe", -1, io_flush(&io));
	close(fds[1]);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	test_lines();
	test_timeout_and_flush();
	test_line_deadline();
	test_chunks();
	test_stream();
	test_writer();
	return check_finish("io");
}
