#include "log.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "limits.h"

static const char *log_program = "postage";
static char log_session[40];
static int syslog_opened;
static int journal_fd = -2; /* -2 not tried, -1 no journal */

/* The journal's native protocol (systemd.io/JOURNAL_NATIVE_PROTOCOL): one
 * datagram of FIELD=value lines to its socket. Spoken here rather than
 * through libsystemd, whose five dependent libraries would otherwise load
 * in every per-connection process. Values never hold a newline: every
 * field comes from log_event's single printable line. */
static int journal_sendv(const struct iovec *fields, size_t n)
{
	static const struct sockaddr_un addr = {
		.sun_family = AF_UNIX,
		.sun_path = "/run/systemd/journal/socket",
	};
	struct iovec iov[2 * (LOG_FIELDS_MAX + 3)];
	struct msghdr mh;
	size_t k = 0;

	if (journal_fd == -2)
		journal_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (journal_fd < 0)
		return -1;
	for (size_t i = 0; i < n && k + 2 <= sizeof(iov) / sizeof(iov[0]); i++) {
		iov[k++] = fields[i];
		iov[k].iov_base = (void *)"\n";
		iov[k++].iov_len = 1;
	}
	memset(&mh, 0, sizeof(mh));
	mh.msg_name = (void *)&addr;
	mh.msg_namelen = sizeof(addr);
	mh.msg_iov = iov;
	mh.msg_iovlen = k;
	return sendmsg(journal_fd, &mh, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

void log_init(const char *program)
{
	log_program = program;
}

void log_set_session(const char *session_id)
{
	snprintf(log_session, sizeof(log_session), "%s", session_id);
}

const char *log_printable(char *out, size_t cap, const char *in, size_t len)
{
	size_t o = 0;

	if (cap == 0)
		return out;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		char tmp[5];
		size_t n;

		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') {
			tmp[0] = (char)c;
			n = 1;
		} else {
			snprintf(tmp, sizeof(tmp), "\\x%02x", c);
			n = 4;
		}
		if (o + n + 4 > cap) {
			if (cap >= 4) {
				o = o + 3 < cap ? o : cap - 4;
				memcpy(out + o, "...", 3);
				o += 3;
			}
			break;
		}
		memcpy(out + o, tmp, n);
		o += n;
	}
	out[o] = '\0';
	return out;
}

/* Turns "key=value key2=value2" into journal fields POSTAGE_KEY=value. A
 * value runs to the next " word=" so values may hold spaces only when quoted
 * by the caller; keys are upper-cased ASCII letters, digits and '_'. */
static size_t log_fields(char *line, char store[][LOG_LINE_MAX / 8],
			 struct iovec *iov, size_t max)
{
	size_t n = 0;
	char *p = line;

	while (*p && n < max) {
		char *eq, *end, *vstart, *vend;
		size_t k = 0, o;
		char *f = store[n];

		while (*p == ' ')
			p++;
		eq = strchr(p, '=');
		if (!eq)
			break;
		end = strchr(eq, ' ');
		if (eq[1] == '"') {
			char *q = strchr(eq + 2, '"');
			end = q ? q + 1 : NULL;
		}
		if (!end)
			end = p + strlen(p);
		/* The field carries the value alone: "login=\"alice\"" and
		 * "login=alice" both give POSTAGE_LOGIN=alice, so a journalctl
		 * match finds every event. */
		vstart = eq + 1;
		vend = end;
		if (*vstart == '"' && vend - vstart >= 2 && vend[-1] == '"') {
			vstart++;
			vend--;
		}
		o = (size_t)snprintf(f, LOG_LINE_MAX / 8, "POSTAGE_");
		for (char *c = p; c < eq && o + k < 40; c++, k++) {
			if (!isalnum((unsigned char)*c) && *c != '_')
				break;
			f[o + k] = (char)toupper((unsigned char)*c);
		}
		if (k == 0 || p + k != eq) {
			p = end;
			continue;
		}
		o += k;
		f[o++] = '=';
		{
			size_t vlen = (size_t)(vend - vstart);
			if (o + vlen >= LOG_LINE_MAX / 8)
				vlen = LOG_LINE_MAX / 8 - o - 1;
			memcpy(f + o, vstart, vlen);
			o += vlen;
		}
		f[o] = '\0';
		iov[n].iov_base = f;
		iov[n].iov_len = o;
		n++;
		p = end;
	}
	return n;
}

/* Every line is printable ASCII, whatever a caller passed in: a byte that
 * is not (UTF-8 from a client, a control byte) becomes \xNN, the form
 * log_printable uses, so one address is written the same way by every
 * program. Text already made printable passes unchanged. */
static void log_ascii(char *out, size_t cap, const char *in)
{
	size_t o = 0;

	for (; *in && o + 1 < cap; in++) {
		unsigned char c = (unsigned char)*in;

		if (c >= 0x20 && c < 0x7f) {
			out[o++] = (char)c;
		} else {
			if (o + 5 > cap)
				break;
			snprintf(out + o, 5, "\\x%02x", c);
			o += 4;
		}
	}
	out[o] = '\0';
}

void log_event(int priority, const char *fmt, ...)
{
	char raw[LOG_LINE_MAX], line[LOG_LINE_MAX];
	char msg[LOG_LINE_MAX + 64];
	char prio[32], ident[64];
	/* not re-entered: nothing below logs, and no signal handler does */
	static char store[LOG_FIELDS_MAX][LOG_LINE_MAX / 8];
	struct iovec iov[LOG_FIELDS_MAX + 3];
	va_list ap;
	size_t n;
	int len;

	va_start(ap, fmt);
	len = vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	log_ascii(line, sizeof(line), raw);

	if (log_session[0])
		snprintf(msg, sizeof(msg), "MESSAGE=session=%s %s", log_session, line);
	else
		snprintf(msg, sizeof(msg), "MESSAGE=%s", line);
	snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
	snprintf(ident, sizeof(ident), "SYSLOG_IDENTIFIER=%s", log_program);

	iov[0].iov_base = msg;
	iov[0].iov_len = strlen(msg);
	iov[1].iov_base = prio;
	iov[1].iov_len = strlen(prio);
	iov[2].iov_base = ident;
	iov[2].iov_len = strlen(ident);
	n = log_fields(line, store, iov + 3, LOG_FIELDS_MAX - 1);
	if (log_session[0]) {
		static char sess[64];
		snprintf(sess, sizeof(sess), "POSTAGE_SESSION=%s", log_session);
		iov[3 + n].iov_base = sess;
		iov[3 + n].iov_len = strlen(sess);
		n++;
	}
	/* $POSTAGE_LOG_FILE: append plain lines to a file instead, for hosts
	 * with neither journal nor syslog (tcpserver setups, tests). */
	{
		const char *path = getenv("POSTAGE_LOG_FILE");
		if (path && *path) {
			char out[LOG_LINE_MAX + 160];
			int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
			int m = snprintf(out, sizeof(out), "%s[%d]: <%d> %s\n", log_program,
					 (int)getpid(), priority, msg + strlen("MESSAGE="));
			if (fd >= 0) {
				if (m > 0 && write(fd, out, (size_t)m < sizeof(out) ? (size_t)m : sizeof(out) - 1) < 0) {
					/* nowhere left to report it */
				}
				close(fd);
			}
			return;
		}
	}
	if (journal_sendv(iov, n + 3) == 0)
		return;

	if (!syslog_opened) {
		openlog(log_program, LOG_PID | LOG_NDELAY, LOG_MAIL);
		syslog_opened = 1;
	}
	syslog(priority, "%s", msg + strlen("MESSAGE="));
}
