/* The SMTP client: connect, greeting, EHLO, STARTTLS (opportunistic, or
 * required and verified as relayhost_tls says), AUTH to a smarthost, and
 * transactions with PIPELINING when offered. Every read is bounded in
 * length and time (RFC 5321 4.5.3). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "address.h"
#include "base64.h"
#include "config.h"
#include "log.h"
#include "message.h"
#include "queue.h"
#include "tls.h"

void status_set_local(struct status_text *st, enum outcome o, const char *status,
		      const char *fmt, ...)
{
	va_list ap;

	memset(st, 0, sizeof(*st));
	st->outcome = o;
	snprintf(st->status, sizeof(st->status), "%s", status);
	va_start(ap, fmt);
	vsnprintf(st->text, sizeof(st->text), fmt, ap);
	va_end(ap);
}

/* ---- replies -------------------------------------------------------- */

enum reply_error { REPLY_OK = 0, REPLY_TIMEOUT, REPLY_LOST, REPLY_BAD };

struct reply {
	int code;
	char text[CLIENT_REPLY_TEXT_MAX + 1]; /* lines joined by spaces, printable ASCII */
};

/* Called for each line of a reply with the text after the code, for the
 * EHLO keywords. */
typedef void (*reply_line_fn)(struct smtp_client *c, int index, const char *text);

/* Appends src, keeping printable ASCII and well-formed UTF-8 (a server's
 * words in its own language belong in a bounce's message/global-
 * delivery-status, RFC 6533); a control byte or broken UTF-8 becomes '?'.
 * A character that does not fit whole is left out. */
static void append_printable(char *dst, size_t cap, const char *src)
{
	size_t o = strlen(dst), left = strlen(src);
	const unsigned char *s = (const unsigned char *)src;

	while (left > 0 && o + 1 < cap) {
		size_t k = *s >= 0x80 ? utf8_seq(s, left) : 1;

		if (k > 1) {
			if (o + k >= cap)
				break;
			memcpy(dst + o, s, k);
			o += k;
		} else {
			dst[o++] = *s >= 0x20 && *s < 0x7f ? (char)*s : '?';
			k = 1;
		}
		s += k;
		left -= k;
	}
	dst[o] = '\0';
}

static enum reply_error read_reply(struct smtp_client *c, int timeout_ms, struct reply *r,
				   reply_line_fn each)
{
	char line[CLIENT_REPLY_LINE_MAX];

	r->code = 0;
	r->text[0] = '\0';
	c->io.timeout_ms = timeout_ms;
	for (int i = 0; i < CLIENT_REPLY_LINES_MAX; i++) {
		size_t len;
		enum io_result res = io_read_line(&c->io, line, sizeof(line), &len);
		int code;

		if (res == IO_TIMEOUT)
			return REPLY_TIMEOUT;
		if (res == IO_TOOLONG)
			return REPLY_BAD;
		if (res != IO_OK)
			return REPLY_LOST;
		/* RFC 5321 4.2: Reply-code [ SP textstring ] or "-" for more. */
		if (len < 3 || !isdigit((unsigned char)line[0]) || !isdigit((unsigned char)line[1]) ||
		    !isdigit((unsigned char)line[2]) || (len > 3 && line[3] != ' ' && line[3] != '-'))
			return REPLY_BAD;
		code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
		if (code < 200 || code > 599 || (r->code && code != r->code))
			return REPLY_BAD;
		if (!r->code)
			snprintf(r->text, sizeof(r->text), "%d", code);
		r->code = code;
		if (len > 4) {
			append_printable(r->text, sizeof(r->text), " ");
			append_printable(r->text, sizeof(r->text), line + 4);
		}
		if (each)
			each(c, i, len > 4 ? line + 4 : "");
		if (len == 3 || line[3] == ' ')
			return REPLY_OK;
	}
	return REPLY_BAD;
}

/* The RFC 3463 code at the start of the text, else one made from the
 * reply code's class. */
static void enhanced_status(const struct reply *r, char *out, size_t cap)
{
	const char *t = strchr(r->text, ' ');
	int cls = r->code / 100;
	unsigned a, b, d;
	int used = 0;

	/* digits and dots only: %u would also take a sign or spaces */
	if (t && sscanf(t + 1, "%1u.%3u.%3u%n", &a, &b, &d, &used) == 3 && (int)a == cls &&
	    strspn(t + 1, "0123456789.") == (size_t)used &&
	    (t[1 + used] == ' ' || t[1 + used] == '\0')) {
		snprintf(out, cap, "%u.%u.%u", a, b, d);
		return;
	}
	snprintf(out, cap, "%d.0.0", cls);
}

/* The remote server's reply as the outcome of command. */
static void status_from_reply(const struct smtp_client *c, const struct reply *r,
			      const char *command, struct status_text *st)
{
	memset(st, 0, sizeof(*st));
	if (r->code >= 200 && r->code < 300)
		st->outcome = OUTCOME_SENT;
	else if (r->code >= 500)
		st->outcome = OUTCOME_PERM;
	else
		st->outcome = OUTCOME_TEMP; /* 4xx, and an unexpected 3xx */
	enhanced_status(r, st->status, sizeof(st->status));
	if (r->code >= 300 && r->code < 400)
		snprintf(st->status, sizeof(st->status), "4.5.0");
	snprintf(st->text, sizeof(st->text), "%s", r->text);
	snprintf(st->command, sizeof(st->command), "%s", command);
	snprintf(st->mta, sizeof(st->mta), "%s[%s]", c->host, c->ip);
}

/* A reply taken as a temporary failure whatever its code: the RFC 3463
 * status must say so too (class 4), or a delay warning would report a
 * 2.x.x or 5.x.x status with Action: delayed. An unexpected success is a
 * protocol error (4.5.0). */
static void as_temporary(struct status_text *st)
{
	st->outcome = OUTCOME_TEMP;
	if (st->status[0] == '2')
		snprintf(st->status, sizeof(st->status), "4.5.0");
	else if (st->status[0] == '5')
		st->status[0] = '4';
}

/* A failed exchange (no reply) as a temporary outcome. */
static void status_from_error(struct smtp_client *c, enum reply_error e, const char *doing,
			      struct status_text *st)
{
	c->broken = 1;
	if (e == REPLY_TIMEOUT)
		status_set_local(st, OUTCOME_TEMP, "4.4.2", "conversation with %s[%s] timed out %s",
				 c->host, c->ip, doing);
	else if (e == REPLY_BAD)
		status_set_local(st, OUTCOME_TEMP, "4.5.0",
				 "protocol error: malformed or overlong reply from %s[%s] %s", c->host,
				 c->ip, doing);
	else
		status_set_local(st, OUTCOME_TEMP, "4.4.2", "lost connection with %s[%s] %s", c->host,
				 c->ip, doing);
}

/* Sends one command line and reads its reply. The line may hold a
 * secret: it is never logged. */
static enum reply_error command(struct smtp_client *c, const char *line, int timeout_ms,
				struct reply *r, reply_line_fn each)
{
	if (io_puts(&c->io, line) < 0 || io_puts(&c->io, "\r\n") < 0 || io_flush(&c->io) < 0)
		return REPLY_LOST;
	return read_reply(c, timeout_ms, r, each);
}

/* ---- connecting ----------------------------------------------------- */

static int connect_with_timeout(int fd, const struct sockaddr *sa, socklen_t len)
{
	int flags = fcntl(fd, F_GETFL), err = 0;
	socklen_t elen = sizeof(err);
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	int r;

	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -1;
	if (connect(fd, sa, len) < 0) {
		if (errno != EINPROGRESS)
			return -1;
		do {
			r = poll(&p, 1, CLIENT_CONNECT_TIMEOUT_MS);
		} while (r < 0 && errno == EINTR);
		if (r == 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			return -1;
		if (err) {
			errno = err;
			return -1;
		}
	}
	/* Blocking again, with send and receive bounded by the kernel too, so
	 * a TLS record read or write can never hang. */
	if (fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
		return -1;
	{
		struct timeval tv = { .tv_sec = CLIENT_DATA_BLOCK_TIMEOUT_MS / 1000 };
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	return 0;
}

/* Is the first word of text our own hostname (a trailing dot aside)? A
 * server that greets with our name is us: the MX or relayhost points
 * back here (Postfix's "mail loops back to myself"). */
static int names_us(const char *text)
{
	const char *us = setting(SET_HOSTNAME);
	size_t n = strcspn(text, " "), m = strlen(us);

	if (n > 0 && text[n - 1] == '.')
		n--;
	if (m > 0 && us[m - 1] == '.')
		m--;
	return n > 0 && n == m && strncasecmp(text, us, n) == 0;
}

static void ehlo_line(struct smtp_client *c, int index, const char *text)
{
	char kw[32];
	size_t k = 0;
	const char *args;

	if (index == 0) {
		/* the server's name, first in the EHLO reply */
		c->loops |= names_us(text);
		return;
	}
	while (text[k] && text[k] != ' ' && text[k] != '=' && k + 1 < sizeof(kw)) {
		kw[k] = (char)toupper((unsigned char)text[k]);
		k++;
	}
	kw[k] = '\0';
	args = text + k;
	while (*args == ' ' || *args == '=')
		args++;
	if (strcmp(kw, "STARTTLS") == 0) {
		c->ext |= EXT_STARTTLS;
	} else if (strcmp(kw, "SIZE") == 0) {
		c->ext |= EXT_SIZE;
		c->size_max = strtoull(args, NULL, 10);
	} else if (strcmp(kw, "8BITMIME") == 0) {
		c->ext |= EXT_8BITMIME;
	} else if (strcmp(kw, "PIPELINING") == 0) {
		c->ext |= EXT_PIPELINING;
	} else if (strcmp(kw, "SMTPUTF8") == 0) {
		c->ext |= EXT_SMTPUTF8;
	} else if (strcmp(kw, "AUTH") == 0) {
		char mech[32];
		while (*args) {
			size_t m = 0;
			while (*args == ' ')
				args++;
			while (*args && *args != ' ') {
				if (m + 1 < sizeof(mech))
					mech[m++] = (char)toupper((unsigned char)*args);
				args++;
			}
			mech[m] = '\0';
			if (strcmp(mech, "PLAIN") == 0)
				c->ext |= EXT_AUTH_PLAIN;
			else if (strcmp(mech, "LOGIN") == 0)
				c->ext |= EXT_AUTH_LOGIN;
		}
	}
}

/* EHLO, or HELO when the server does not know EHLO. */
static int greet(struct smtp_client *c, struct status_text *why)
{
	char line[SMTP_HELO_MAX + 8];
	struct reply r;
	enum reply_error e;

	c->ext = 0;
	c->size_max = 0;
	snprintf(line, sizeof(line), "EHLO %s", setting(SET_HOSTNAME));
	e = command(c, line, CLIENT_COMMAND_TIMEOUT_MS, &r, ehlo_line);
	if (e != REPLY_OK) {
		status_from_error(c, e, "while sending EHLO", why);
		return -1;
	}
	if (r.code >= 500 && r.code != 554) {
		c->ext = 0;
		snprintf(line, sizeof(line), "HELO %s", setting(SET_HOSTNAME));
		e = command(c, line, CLIENT_COMMAND_TIMEOUT_MS, &r, NULL);
		if (e != REPLY_OK) {
			status_from_error(c, e, "while sending HELO", why);
			return -1;
		}
	}
	if (r.code != 250) {
		status_from_reply(c, &r, "EHLO", why);
		as_temporary(why);
		return -1;
	}
	return 0;
}

static int authenticate(struct smtp_client *c, const struct client_auth *auth,
			struct status_text *why)
{
	/* login NUL login NUL password, each up to a setting's length */
	static char raw[2 * SETTING_VALUE_MAX + 4], b64[4 * (sizeof(raw) / 3 + 2) + 16];
	static char line[sizeof(b64) + 16];
	size_t llen = strlen(auth->login), plen = strlen(auth->password);
	struct reply r;
	enum reply_error e;
	const char *mech;

	if (!c->tls) {
		/* The password never crosses the network in clear text. */
		status_set_local(why, OUTCOME_TEMP, "4.7.5",
				 "refusing to send the relayhost password to %s[%s] without TLS "
				 "(STARTTLS was not offered or did not succeed)",
				 c->host, c->ip);
		log_event(LOG_ERR, "event=relay_auth result=refused host=%s ip=%s reason=no_tls",
			  c->host, c->ip);
		return -1;
	}
	if (c->tls_level == TLS_LEVEL_VERIFY && !c->tls_verified) {
		/* client_open stops before this; the password must not rely on it. */
		status_set_local(why, OUTCOME_TEMP, "4.7.5",
				 "refusing to send the relayhost password to %s[%s]: its certificate is "
				 "not verified", c->host, c->ip);
		log_event(LOG_ERR, "event=relay_auth result=refused host=%s ip=%s reason=unverified",
			  c->host, c->ip);
		return -1;
	}
	if (llen >= SETTING_VALUE_MAX || plen >= SETTING_VALUE_MAX) {
		status_set_local(why, OUTCOME_TEMP, "4.7.0", "relayhost login or password too long");
		return -1;
	}
	if (c->ext & EXT_AUTH_PLAIN) {
		mech = "PLAIN";
		/* RFC 4616: authzid (empty) NUL authcid NUL passwd */
		raw[0] = '\0';
		memcpy(raw + 1, auth->login, llen);
		raw[1 + llen] = '\0';
		memcpy(raw + 2 + llen, auth->password, plen);
		base64_encode(raw, llen + plen + 2, b64, sizeof(b64));
		snprintf(line, sizeof(line), "AUTH PLAIN %s", b64);
		e = command(c, line, CLIENT_COMMAND_TIMEOUT_MS, &r, NULL);
	} else if (c->ext & EXT_AUTH_LOGIN) {
		mech = "LOGIN";
		e = command(c, "AUTH LOGIN", CLIENT_COMMAND_TIMEOUT_MS, &r, NULL);
		if (e == REPLY_OK && r.code == 334) {
			base64_encode(auth->login, llen, b64, sizeof(b64));
			e = command(c, b64, CLIENT_COMMAND_TIMEOUT_MS, &r, NULL);
		}
		if (e == REPLY_OK && r.code == 334) {
			base64_encode(auth->password, plen, b64, sizeof(b64));
			e = command(c, b64, CLIENT_COMMAND_TIMEOUT_MS, &r, NULL);
		}
	} else {
		status_set_local(why, OUTCOME_TEMP, "4.7.0",
				 "%s[%s] offers no AUTH mechanism postage can use (PLAIN, LOGIN)",
				 c->host, c->ip);
		return -1;
	}
	explicit_bzero(raw, sizeof(raw));
	explicit_bzero(b64, sizeof(b64));
	explicit_bzero(line, sizeof(line));
	if (e != REPLY_OK) {
		status_from_error(c, e, "while authenticating", why);
		return -1;
	}
	if (r.code != 235) {
		status_from_reply(c, &r, "AUTH", why);
		as_temporary(why);
		log_event(LOG_ERR, "event=relay_auth result=failed host=%s ip=%s mech=%s login=\"%s\"",
			  c->host, c->ip, mech, auth->login);
		return -1;
	}
	log_event(LOG_INFO, "event=relay_auth result=ok host=%s ip=%s mech=%s login=\"%s\"", c->host,
		  c->ip, mech, auth->login);
	return 0;
}

static int is_address(const char *s)
{
	unsigned char bin[16];

	return inet_pton(AF_INET, s, bin) == 1 || inet_pton(AF_INET6, s, bin) == 1;
}

/* name without a trailing dot, into out. */
static void bare_name(const char *name, char *out, size_t cap)
{
	size_t n = strlen(name);

	if (n > 0 && name[n - 1] == '.')
		n--;
	snprintf(out, cap, "%.*s", (int)n, name);
}

/* Is host a name under domain ("mx1.provider.example" under
 * "provider.example")? */
static int within_domain(const char *host, const char *domain)
{
	size_t h = strlen(host), d = strlen(domain);

	return d > 0 && h > d + 1 && host[h - d - 1] == '.' && strcasecmp(host + h - d, domain) == 0;
}

/* Is the server's certificate trusted for nexthop: chained to a trusted
 * CA and naming nexthop, or the host connected to when that lies within
 * nexthop's domain? The MX answer that led to a host is not
 * authenticated, so a host outside the domain counts for nothing (as the
 * "nexthop, dot-nexthop" match of Postfix's "secure" level). 1 or 0, with
 * the reason in c->tls_unverified. */
static int certificate_trusted(struct smtp_client *c, const char *nexthop)
{
	char want[ADDRESS_DOMAIN_MAX + 1], host[ADDRESS_DOMAIN_MAX + 1], other[200];

	bare_name(nexthop, want, sizeof(want));
	bare_name(c->host, host, sizeof(host));
	if (tls_client_verify(want, c->tls_unverified, sizeof(c->tls_unverified)))
		return 1;
	if (!is_address(want) && within_domain(host, want) &&
	    tls_client_verify(host, other, sizeof(other)))
		return 1;
	return 0;
}

/* The TLS handshake on c (SNI names the host, unless it is an address),
 * then the certificate weighed for the policy's next hop. 0 or -1. */
static int start_tls(struct smtp_client *c, const char *mode, const struct client_tls_policy *pol)
{
	const char *nexthop = pol->nexthop && pol->nexthop[0] ? pol->nexthop : c->host;
	char reason[sizeof(c->tls_unverified) + 16] = "", sni[ADDRESS_DOMAIN_MAX + 1];

	/* RFC 6066 3: a host name without the trailing dot; no address. */
	bare_name(c->host, sni, sizeof(sni));
	if (tls_client_start(&c->io, is_address(sni) ? NULL : sni, pol->ca_file, c->tls_info,
			     sizeof(c->tls_info)) < 0)
		return -1;
	c->tls = 1;
	c->tls_verified = certificate_trusted(c, nexthop);
	if (!c->tls_verified)
		snprintf(reason, sizeof(reason), " reason=\"%s\"", c->tls_unverified);
	log_event(LOG_INFO, "event=client_tls result=ok mode=%s host=%s ip=%s tls=\"%s\" verified=%s%s",
		  mode, c->host, c->ip, c->tls_info, c->tls_verified ? "yes" : "no", reason);
	return 0;
}

static const char *level_name(enum tls_level level)
{
	return level == TLS_LEVEL_VERIFY ? "verify" : level == TLS_LEVEL_ENCRYPT ? "encrypt" : "may";
}

/* TLS as the policy demands it: 0, or -1 with why (4.7.5) for none where
 * it must be (no_tls says why there is none), or a certificate "verify"
 * does not trust. */
static int tls_as_required(struct smtp_client *c, const struct client_tls_policy *pol,
			   const char *no_tls, struct status_text *why)
{
	if (pol->level == TLS_LEVEL_MAY || (c->tls && (c->tls_verified || pol->level != TLS_LEVEL_VERIFY)))
		return 0;
	if (!c->tls)
		status_set_local(why, OUTCOME_TEMP, "4.7.5", "%s[%s] %s, and TLS is required", c->host,
				 c->ip, no_tls);
	else
		status_set_local(why, OUTCOME_TEMP, "4.7.5", "certificate of %s[%s] not verified: %s",
				 c->host, c->ip, c->tls_unverified);
	log_event(LOG_ERR, "event=relay_tls result=refused level=%s host=%s ip=%s reason=\"%s\"",
		  level_name(pol->level), c->host, c->ip, c->tls ? c->tls_unverified : no_tls);
	return -1;
}

int client_open(struct smtp_client *c, const char *host, const struct host_address *addr,
		int port, enum client_tls tls, const struct client_tls_policy *policy,
		const struct client_auth *auth, struct status_text *why, int *tls_failed)
{
	struct sockaddr_storage sa = addr->sa;
	const char *no_tls = "does not offer STARTTLS";
	char refused[CLIENT_REPLY_TEXT_MAX + 32];
	struct reply r;
	enum reply_error e;
	int fd;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->tls_level = policy->level;
	*tls_failed = 0;
	snprintf(c->host, sizeof(c->host), "%s", host);
	snprintf(c->ip, sizeof(c->ip), "%s", addr->ip);
	c->port = port;
	if (sa.ss_family == AF_INET)
		((struct sockaddr_in *)&sa)->sin_port = htons((unsigned short)port);
	else
		((struct sockaddr_in6 *)&sa)->sin6_port = htons((unsigned short)port);

	fd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect_with_timeout(fd, (struct sockaddr *)&sa, addr->len) < 0) {
		status_set_local(why, OUTCOME_TEMP, "4.4.1", "connect to %s[%s]:%d: %s", host, addr->ip,
				 port, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	c->fd = fd;
	io_init(&c->io, fd, fd, CLIENT_GREETING_TIMEOUT_MS);
	if (tls == CLIENT_TLS_IMPLICIT) {
		if (start_tls(c, "implicit", policy) < 0) {
			status_set_local(why, OUTCOME_TEMP, "4.7.5", "TLS handshake with %s[%s]:%d failed",
					 host, addr->ip, port);
			goto fail;
		}
		/* Nothing is read from a server the policy does not trust. */
		if (tls_as_required(c, policy, "", why) < 0)
			goto fail;
	}

	e = read_reply(c, CLIENT_GREETING_TIMEOUT_MS, &r, NULL);
	if (e != REPLY_OK) {
		status_from_error(c, e, "while receiving the initial server greeting", why);
		goto fail;
	}
	if (r.code != 220) {
		status_from_reply(c, &r, "the greeting", why);
		as_temporary(why);
		goto fail;
	}
	c->loops = strlen(r.text) > 4 && names_us(r.text + 4);
	if (greet(c, why) < 0)
		goto fail;
	if (c->loops) {
		status_set_local(why, OUTCOME_PERM, "5.4.6",
				 "%s[%s]:%d greets with our own name %s: mail loops back to myself",
				 host, addr->ip, port, setting(SET_HOSTNAME));
		goto fail;
	}

	if ((c->ext & EXT_STARTTLS) && tls == CLIENT_TLS_STARTTLS) {
		e = command(c, "STARTTLS", CLIENT_COMMAND_TIMEOUT_MS, &r, NULL);
		if (e != REPLY_OK) {
			status_from_error(c, e, "while sending STARTTLS", why);
			goto fail;
		}
		if (r.code == 220) {
			if (start_tls(c, "starttls", policy) < 0) {
				status_set_local(why, OUTCOME_TEMP, "4.7.5", "TLS handshake with %s[%s] failed",
						 host, addr->ip);
				*tls_failed = 1;
				goto fail;
			}
			/* Not even EHLO goes to a server the policy does not trust. */
			if (tls_as_required(c, policy, "", why) < 0)
				goto fail;
			/* RFC 3207 4.2: forget what we knew; ask again. */
			if (greet(c, why) < 0)
				goto fail;
		} else {
			log_event(LOG_NOTICE, "event=client_tls result=refused mode=starttls host=%s ip=%s reply=\"%s\"",
				  host, addr->ip, r.text);
			snprintf(refused, sizeof(refused), "refused STARTTLS (%s)", r.text);
			no_tls = refused;
		}
	} else if (tls == CLIENT_TLS_NONE) {
		no_tls = "is tried without TLS";
	}
	/* Neither the password nor the mail goes where the policy forbids. */
	if (tls_as_required(c, policy, no_tls, why) < 0)
		goto fail;
	if (auth && auth->login && auth->login[0] && authenticate(c, auth, why) < 0)
		goto fail;
	return 0;

fail:
	c->broken = 1;
	client_close(c);
	return -1;
}

void client_close(struct smtp_client *c)
{
	if (c->fd < 0)
		return;
	if (!c->broken) {
		struct reply r;
		/* RFC 5321 4.1.1.10: QUIT and wait for the 221, briefly. */
		if (io_puts(&c->io, "QUIT\r\n") == 0 && io_flush(&c->io) == 0)
			read_reply(c, 10 * 1000, &r, NULL);
	}
	if (c->tls)
		tls_end(&c->io);
	close(c->fd);
	c->fd = -1;
	c->tls = 0;
}

/* ---- transactions --------------------------------------------------- */

static int non_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

static void fail_pending(struct status_text *result, const int *done, size_t n,
			 const struct status_text *why)
{
	for (size_t i = 0; i < n; i++)
		if (!done[i])
			result[i] = *why;
}

/* A reply other than the one wanted to MAIL FROM or DATA fails every
 * recipient not yet settled with the server's own words (a stray success
 * counts as temporary); a 421 also closes the connection. */
static void fail_pending_on_reply(struct smtp_client *c, const struct reply *r,
				  const char *command, struct status_text *result,
				  const int *done, size_t n)
{
	struct status_text why;

	status_from_reply(c, r, command, &why);
	if (why.outcome == OUTCOME_SENT)
		as_temporary(&why);
	fail_pending(result, done, n, &why);
	if (r->code == 421)
		c->broken = 1;
}

/* Streams the spool file as the DATA body: CRLF, dot-stuffed, then the
 * terminator. -1 when the connection failed (*local set when reading the
 * spool file failed instead). */
static int send_body(struct smtp_client *c, const struct outbound *m, int *local)
{
	static char in[32768], out[2 * sizeof(in)];
	int at_line_start = 1;
	char last = '\n';
	off_t off = 0;

	*local = 0;
	c->io.timeout_ms = CLIENT_DATA_BLOCK_TIMEOUT_MS;
	for (;;) {
		ssize_t got = pread(m->fd, in, sizeof(in), off);
		size_t n;

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			*local = 1;
			return -1;
		}
		if (got == 0)
			break;
		off += got;
		last = in[got - 1];
		n = wire_encode(&at_line_start, in, (size_t)got, out);
		if (io_write(&c->io, out, n) < 0)
			return -1;
	}
	if (last != '\n' && io_puts(&c->io, "\r\n") < 0)
		return -1;
	if (io_puts(&c->io, ".\r\n") < 0 || io_flush(&c->io) < 0)
		return -1;
	return 0;
}

/* ---- the MAIL, RCPT and DATA dialogue -------------------------------- */

/* One transaction's commands in order: step 0 is MAIL FROM, steps 1 to n
 * the RCPT TOs, step n + 1 DATA. What the replies have settled so far. */
struct dialogue {
	const struct outbound *m;
	const char *const *rcpts;
	size_t n;
	int need_utf8;
	struct status_text *result;
	int *done;                   /* result[i] is final */
	size_t accepted;             /* recipients the server took */
	int mail_ok;
	struct status_text refusal;  /* the reply to a refused MAIL FROM */
	const struct status_text *closing; /* a 421 to MAIL or RCPT, when one came */
};

static size_t data_step(const struct dialogue *d)
{
	return d->n + 1;
}

/* Queues step k's command line; -1 when the connection failed. */
static int send_step(struct smtp_client *c, const struct dialogue *d, size_t k)
{
	char line[2 * ADDRESS_PATH_MAX + 96];

	if (k == 0) {
		char params[96] = "";
		size_t pl = 0;
		if (c->ext & EXT_SIZE)
			pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " SIZE=%llu",
					       d->m->wire_size);
		if (d->m->body_8bit && (c->ext & EXT_8BITMIME))
			pl += (size_t)snprintf(params + pl, sizeof(params) - pl, " BODY=8BITMIME");
		if (d->need_utf8)
			snprintf(params + pl, sizeof(params) - pl, " SMTPUTF8");
		snprintf(line, sizeof(line), "MAIL FROM:<%s>%s\r\n", d->m->sender, params);
	} else if (k < data_step(d)) {
		snprintf(line, sizeof(line), "RCPT TO:<%s>\r\n", d->rcpts[k - 1]);
	} else {
		snprintf(line, sizeof(line), "DATA\r\n");
	}
	return io_puts(&c->io, line);
}

enum step_result { STEP_ON = 0, STEP_END };

/* Reads step k's reply and settles what it settles. STEP_END when the
 * transaction is over (every recipient's result filled); STEP_ON to go
 * on, after DATA meaning that the server waits for the message. */
static enum step_result read_step(struct smtp_client *c, struct dialogue *d, size_t k)
{
	static const char *const doing[] = { "while sending MAIL FROM", "while sending RCPT TO",
					     "while sending DATA" };
	size_t kind = k == 0 ? 0 : k < data_step(d) ? 1 : 2;
	struct status_text why;
	struct reply r;
	enum reply_error e;

	e = read_reply(c, kind == 2 ? CLIENT_DATA_INIT_TIMEOUT_MS : CLIENT_COMMAND_TIMEOUT_MS, &r,
		       NULL);
	if (e != REPLY_OK) {
		status_from_error(c, e, doing[kind], &why);
		fail_pending(d->result, d->done, d->n, &why);
		return STEP_END;
	}
	if (kind == 0) {
		if (r.code == 250)
			return STEP_ON;
		/* A refused MAIL settles every recipient; the replies to
		 * RCPTs already sent are read but no longer count. */
		d->mail_ok = 0;
		status_from_reply(c, &r, "MAIL FROM", &d->refusal);
		if (d->refusal.outcome == OUTCOME_SENT)
			as_temporary(&d->refusal);
		fail_pending(d->result, d->done, d->n, &d->refusal);
		memset(d->done, 1, sizeof(d->done[0]) * d->n);
		if (r.code == 421)
			d->closing = &d->refusal;
		return STEP_ON;
	}
	if (kind == 1) {
		size_t i = k - 1;

		if (!d->mail_ok)
			return STEP_ON;
		if (r.code == 250 || r.code == 251) {
			d->accepted++;
			return STEP_ON;
		}
		status_from_reply(c, &r, "RCPT TO", &d->result[i]);
		if (d->result[i].outcome == OUTCOME_SENT)
			as_temporary(&d->result[i]);
		d->done[i] = 1;
		if (r.code == 421)
			d->closing = &d->result[i];
		return STEP_ON;
	}
	if (d->accepted == 0) {
		/* RFC 2920 3.1: DATA went out anyway; if the server took it,
		 * end it empty, which it must then refuse. */
		if (r.code == 354) {
			if (io_puts(&c->io, ".\r\n") < 0 || io_flush(&c->io) < 0 ||
			    read_reply(c, CLIENT_DATA_END_TIMEOUT_MS, &r, NULL) != REPLY_OK)
				c->broken = 1;
		}
		return STEP_END;
	}
	if (r.code != 354) {
		fail_pending_on_reply(c, &r, "DATA", d->result, d->done, d->n);
		return STEP_END;
	}
	return STEP_ON;
}

/* Without PIPELINING a command waits for the replies before it, and is
 * not sent once they have settled the transaction: nothing after a
 * refused MAIL, nothing after a 421 (the server is closing; its words
 * settle the recipients left), and no DATA when no recipient was taken.
 * 1 when the transaction ends here. */
static int settled_before(struct smtp_client *c, struct dialogue *d, size_t next)
{
	if (d->closing) {
		c->broken = 1;
		fail_pending(d->result, d->done, d->n, d->closing);
		return 1;
	}
	return !d->mail_ok || (next == data_step(d) && d->accepted == 0);
}

/* MAIL, RCPT and DATA, up to the server's 354. With PIPELINING (RFC 2920
 * 3.1) the commands go in one batch ending with DATA and the replies are
 * read after it, in order; without it, each command's reply is read
 * before the next is sent. Each command goes out as the same bytes
 * either way. 0 when the server waits for the message, -1 when the
 * transaction is over. */
static int dialogue_run(struct smtp_client *c, struct dialogue *d)
{
	int pipelining = (c->ext & EXT_PIPELINING) != 0;
	size_t answered = 0;

	for (size_t k = 0; k <= data_step(d); k++) {
		int batch_open = pipelining && k < data_step(d);

		if (send_step(c, d, k) < 0 || (!batch_open && io_flush(&c->io) < 0)) {
			struct status_text why;

			/* DATA sent on its own is reported as that exchange. */
			status_from_error(c, REPLY_LOST,
					  !pipelining && k == data_step(d) ? "while sending DATA"
									   : "while sending commands",
					  &why);
			fail_pending(d->result, d->done, d->n, &why);
			return -1;
		}
		if (batch_open)
			continue;
		for (; answered <= k; answered++)
			if (read_step(c, d, answered) == STEP_END)
				return -1;
		if (k < data_step(d) && settled_before(c, d, k + 1))
			return -1;
	}
	return 0;
}

void client_transaction(struct smtp_client *c, const struct outbound *m, const char *const *rcpts,
			size_t n, struct status_text *result)
{
	/* not re-entered: its one caller, deliver_transaction, sends one at a time */
	static int done[CLIENT_RCPTS_PER_TRANSACTION];
	struct dialogue d = { .m = m, .rcpts = rcpts, .result = result, .done = done, .mail_ok = 1 };
	struct status_text why;
	struct reply r;
	enum reply_error e;
	int local_error = 0;

	if (n > CLIENT_RCPTS_PER_TRANSACTION)
		n = CLIENT_RCPTS_PER_TRANSACTION;
	d.n = n;
	memset(done, 0, sizeof(done));

	/* RFC 5321 4.1.1.5: a clean state for every transaction after the
	 * first on a connection. */
	if (c->transactions > 0) {
		e = command(c, "RSET", CLIENT_COMMAND_TIMEOUT_MS, &r, NULL);
		if (e != REPLY_OK || r.code != 250) {
			if (e != REPLY_OK) {
				status_from_error(c, e, "while sending RSET", &why);
			} else {
				status_from_reply(c, &r, "RSET", &why);
				as_temporary(&why);
			}
			c->broken = 1;
			fail_pending(result, done, n, &why);
			return;
		}
	}
	c->transactions++;

	if ((c->ext & EXT_SIZE) && c->size_max > 0 && m->wire_size > c->size_max) {
		status_set_local(&why, OUTCOME_PERM, "5.3.4",
				 "message size %llu exceeds the size limit %llu of %s[%s]", m->wire_size,
				 c->size_max, c->host, c->ip);
		fail_pending(result, done, n, &why);
		return;
	}
	if (m->smtputf8) {
		d.need_utf8 = non_ascii(m->sender);
		for (size_t i = 0; i < n; i++)
			d.need_utf8 |= non_ascii(rcpts[i]);
		if (d.need_utf8 && !(c->ext & EXT_SMTPUTF8)) {
			status_set_local(&why, OUTCOME_PERM, "5.6.7",
					 "SMTPUTF8 is required for these addresses, but %s[%s] does not "
					 "offer it", c->host, c->ip);
			fail_pending(result, done, n, &why);
			return;
		}
	}
	if (m->body_8bit && !(c->ext & EXT_8BITMIME))
		/* As Postfix does: most servers take 8-bit data anyway. */
		log_event(LOG_NOTICE, "event=delivery id=%s note=8bit_without_8bitmime host=%s ip=%s",
			  m->id, c->host, c->ip);

	if (dialogue_run(c, &d) < 0)
		return;
	if (send_body(c, m, &local_error) < 0) {
		if (local_error)
			status_set_local(&why, OUTCOME_TEMP, "4.3.0", "cannot read the queue file of %s",
					 m->id);
		else
			status_set_local(&why, OUTCOME_TEMP, "4.4.2",
					 "lost connection with %s[%s] while sending the message", c->host,
					 c->ip);
		/* Without the final dot the server must drop what it got. */
		c->broken = 1;
		fail_pending(result, done, n, &why);
		return;
	}
	e = read_reply(c, CLIENT_DATA_END_TIMEOUT_MS, &r, NULL);
	if (e != REPLY_OK) {
		status_from_error(c, e, "while waiting for the reply to the end of DATA", &why);
		fail_pending(result, done, n, &why);
		return;
	}
	status_from_reply(c, &r, "end of DATA", &why);
	fail_pending(result, done, n, &why);
	if (r.code == 421)
		c->broken = 1;
}
