/* The machine's ceiling for an SMTP session with the load generator the
 * bench uses: the cheapest SMTP server a supervisor can start for a
 * connection. It speaks just enough SMTP for smtp-source (greeting, HELO,
 * EHLO, MAIL, RCPT, DATA up to the lone ".", RSET, NOOP, QUIT), answers
 * every command at once and keeps nothing: no file, no fsync, no lookup.
 * What a session costs against it (starting smtp-source, the spawn, the
 * protocol's round trips) plus one durable write per message is what the
 * machine allows any per-connection server. bench/run builds it with
 * gcc -static -O2.
 *
 * With a file as its argument it also appends one byte to that file for
 * each message it accepts: the lists workload counts there how many of a
 * list's copies have arrived, and when. */
#include <fcntl.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static int count_fd = -1;

static int say(const char *s)
{
	size_t n = strlen(s);

	return write(1, s, n) == (ssize_t)n ? 0 : -1;
}

/* One line (without its end) in the command state; returns 1 to go into
 * DATA, 2 to end the session, 0 otherwise, -1 when the client is gone. */
static int command(const char *line, size_t len)
{
	if (len >= 4 && strncasecmp(line, "DATA", 4) == 0)
		return say("354 End data with <CR><LF>.<CR><LF>\r\n") < 0 ? -1 : 1;
	if (len >= 4 && strncasecmp(line, "QUIT", 4) == 0)
		return say("221 2.0.0 Bye\r\n") < 0 ? -1 : 2;
	if (len >= 4 && (strncasecmp(line, "HELO", 4) == 0 || strncasecmp(line, "EHLO", 4) == 0))
		return say("250 sink\r\n");
	if (len >= 4 && (strncasecmp(line, "MAIL", 4) == 0 || strncasecmp(line, "RCPT", 4) == 0 ||
			 strncasecmp(line, "RSET", 4) == 0 || strncasecmp(line, "NOOP", 4) == 0))
		return say("250 2.0.0 Ok\r\n");
	return say("502 5.5.2 Not here\r\n");
}

int main(int argc, char **argv)
{
	static char buf[65536];
	size_t have = 0;
	int in_data = 0, skipping = 0;

	if (argc > 1)
		count_fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

	if (say("220 sink ESMTP\r\n") < 0)
		return 1;
	for (;;) {
		ssize_t n = read(0, buf + have, sizeof(buf) - have);
		size_t start = 0;

		if (n <= 0)
			return 0;
		have += (size_t)n;
		for (;;) {
			char *nl = memchr(buf + start, '\n', have - start);
			size_t len;

			if (!nl)
				break;
			len = (size_t)(nl - (buf + start));
			if (len > 0 && buf[start + len - 1] == '\r')
				len--;
			if (skipping) {
				skipping = 0; /* the end of an overlong line */
			} else if (in_data) {
				if (len == 1 && buf[start] == '.') {
					in_data = 0;
					/* counted before the reply: the sender may
					 * count on it as soon as it reads the 250 */
					if (count_fd >= 0 && write(count_fd, ".", 1) != 1)
						return 1;
					if (say("250 2.0.0 Ok: kept nowhere\r\n") < 0)
						return 1;
				}
			} else {
				int r = command(buf + start, len);

				if (r < 0)
					return 1;
				if (r == 2)
					return 0;
				in_data = r == 1;
			}
			start = (size_t)(nl - buf) + 1;
		}
		if (start == 0 && have == sizeof(buf)) {
			/* a line longer than the buffer: only DATA has those, and
			 * it is not the lone "."; drop it up to its end */
			have = 0;
			skipping = 1;
			continue;
		}
		memmove(buf, buf + start, have - start);
		have -= start;
	}
}
