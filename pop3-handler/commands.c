/* One function a verb (RFC 1939, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034
 * AUTH). Each checks first (every reason to refuse returns a reply), then
 * acts. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth.h"
#include "base64.h"
#include "config.h"
#include "limits.h"
#include "log.h"
#include "session.h"
#include "tls.h"

static int arg_empty(const char *arg)
{
	while (*arg == ' ')
		arg++;
	return *arg == '\0';
}

static int no_arguments(struct session *s, const char *verb, const char *arg)
{
	if (arg_empty(arg))
		return 0;
	s->bad_commands++;
	reply(s, "-ERR Syntax: %s takes no arguments", verb);
	return -1;
}

/* A message-number argument; replies and returns -1 when it names no
 * message we may use. */
static int message_arg(struct session *s, const char *arg, size_t *index)
{
	switch (maildrop_find(&s->drop, arg, index)) {
	case LOOKUP_OK:
		return 0;
	case LOOKUP_SYNTAX:
		s->bad_commands++;
		reply(s, "-ERR invalid message number");
		return -1;
	case LOOKUP_NO_SUCH:
		reply(s, "-ERR no such message");
		return -1;
	case LOOKUP_DELETED:
		reply(s, "-ERR message deleted");
		return -1;
	}
	return -1;
}

/* Passwords never cross a network in clear: like Dovecot's default
 * disable_plaintext_auth=yes, USER/PASS is refused on a connection that is
 * neither TLS nor loopback while TLS could be had (STLS, or port 995).
 * Without tls_cert/tls_key there is nothing better to offer, so it is
 * allowed. SASL PLAIN is offered only inside TLS. */
static int plaintext_allowed(const struct session *s)
{
	const char *ip = s->peer.ip;

	if (s->tls_active || !s->peer.is_socket || !ip[0])
		return 1;
	if (strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0)
		return 1;
	return !tls_available();
}

static int sasl_plain_offered(const struct session *s)
{
	return s->tls_active;
}

static void cmd_capa(struct session *s, const char *arg)
{
	if (no_arguments(s, "CAPA", arg) < 0)
		return;
	reply(s, "+OK Capability list follows");
	if (s->state == STATE_AUTHORIZATION && plaintext_allowed(s))
		reply(s, "USER");
	reply(s, "TOP");
	reply(s, "UIDL");
	reply(s, "RESP-CODES");
	reply(s, "AUTH-RESP-CODE");
	reply(s, "PIPELINING");
	if (s->state == STATE_AUTHORIZATION && !s->tls_active && tls_available())
		reply(s, "STLS");
	if (s->state == STATE_AUTHORIZATION && sasl_plain_offered(s))
		reply(s, "SASL PLAIN");
	reply(s, "IMPLEMENTATION postage");
	reply(s, ".");
}

static void cmd_quit(struct session *s, const char *arg)
{
	size_t failed, left;

	(void)arg; /* QUIT ends the session whatever follows it */
	s->quit = 1;
	s->end = "quit";
	if (s->state == STATE_AUTHORIZATION) {
		reply(s, "+OK %s POP3 server signing off", setting(SET_HOSTNAME));
		return;
	}
	/* RFC 1939 6: the UPDATE state. */
	failed = maildrop_commit(&s->drop, &s->removed);
	if (failed) {
		maildrop_close(&s->drop);
		reply(s, "-ERR [SYS/TEMP] Some deleted messages not removed");
		s->end = "quit_update_failed";
		return;
	}
	left = s->drop.count - s->removed;
	/* Unlocked before the client reads +OK, so that it may log in again
	 * at once. */
	maildrop_close(&s->drop);
	reply(s, "+OK %s POP3 server signing off (%zu message%s left)", setting(SET_HOSTNAME), left,
	      left == 1 ? "" : "s");
}

static void cmd_stls(struct session *s, const char *arg)
{
	if (no_arguments(s, "STLS", arg) < 0)
		return;
	if (s->tls_active) {
		s->bad_commands++;
		reply(s, "-ERR Command not permitted when TLS active");
		return;
	}
	if (!tls_available()) {
		s->bad_commands++;
		reply(s, "-ERR TLS is not available");
		return;
	}
	session_stls(s);
}

static void cmd_user(struct session *s, const char *arg)
{
	if (!plaintext_allowed(s)) {
		reply(s, "-ERR [AUTH] Plaintext authentication disallowed on non-secure connections, use STLS");
		return;
	}
	if (arg_empty(arg)) {
		s->bad_commands++;
		reply(s, "-ERR Syntax: USER name");
		return;
	}
	snprintf(s->user, sizeof(s->user), "%s", arg);
	s->have_user = 1;
	/* The same answer for every name: existence is not told. */
	reply(s, "+OK Send your password");
}

static void cmd_pass(struct session *s, const char *arg)
{
	if (!s->have_user) {
		s->bad_commands++;
		reply(s, "-ERR Send USER first");
		return;
	}
	s->have_user = 0;
	/* RFC 1939 7: the whole rest of the line is the password, spaces
	 * included. */
	session_login(s, "USER", s->user, arg);
	s->user[0] = '\0';
}

/* Reads one SASL response line into out (decoded). 0, or -1 after
 * replying or when the connection is gone. */
static int sasl_response(struct session *s, char *out, size_t cap, long *len)
{
	static char line[POP3_AUTH_LINE_MAX + 1];
	size_t n;
	enum io_result r;

	reply(s, "+ ");
	r = io_read_line(&s->io, line, sizeof(line), &n);
	if (r == IO_TOOLONG) {
		s->bad_commands++;
		reply(s, "-ERR line too long");
		return -1;
	}
	if (r != IO_OK) {
		s->quit = 1;
		s->end = r == IO_TIMEOUT ? "timeout" : "eof";
		return -1;
	}
	if (strcmp(line, "*") == 0) {
		reply(s, "-ERR Authentication cancelled");
		return -1;
	}
	*len = base64_decode(line, out, cap);
	memset(line, 0, n);
	if (*len < 0) {
		s->bad_commands++;
		reply(s, "-ERR Invalid base64 data");
		return -1;
	}
	return 0;
}

static void cmd_auth(struct session *s, const char *arg)
{
	/* not re-entered: commands run one at a time from the session loop */
	static char msg[POP3_AUTH_LINE_MAX];
	const char *initial = NULL, *authcid, *passwd;
	size_t mlen = strcspn(arg, " ");
	long len;

	if (mlen == 0) {
		/* The pre-RFC 5034 listing some clients still ask for. */
		reply(s, "+OK");
		if (sasl_plain_offered(s))
			reply(s, "PLAIN");
		reply(s, ".");
		return;
	}
	if (mlen != 5 || strncasecmp(arg, "PLAIN", 5) != 0) {
		s->bad_commands++;
		reply(s, "-ERR Unsupported authentication mechanism");
		return;
	}
	if (!sasl_plain_offered(s)) {
		s->bad_commands++;
		reply(s, "-ERR [AUTH] AUTH PLAIN needs TLS: send STLS first");
		return;
	}
	if (arg[mlen] == ' ')
		initial = arg + mlen + 1;
	if (auth_throttle_delay(s->peer.ip) < 0) {
		log_event(LOG_NOTICE, "event=login result=throttled mech=PLAIN ip=%s", session_ip(s));
		reply(s, "-ERR [AUTH] Too many failed logins from your address, try again later");
		s->quit = 1;
		s->end = "throttled";
		return;
	}
	if (initial && strcmp(initial, "=") == 0) {
		msg[0] = '\0';
		len = 0;
	} else if (initial) {
		len = base64_decode(initial, msg, sizeof(msg));
		if (len < 0) {
			s->bad_commands++;
			reply(s, "-ERR Invalid base64 data");
			return;
		}
	} else if (sasl_response(s, msg, sizeof(msg), &len) < 0) {
		return;
	}
	if (sasl_plain_split(msg, (size_t)len, &authcid, &passwd) < 0) {
		s->auth_failures++;
		log_event(LOG_NOTICE, "event=login result=failed mech=PLAIN reason=malformed ip=%s",
			  session_ip(s));
		reply(s, "-ERR [AUTH] Authentication failed");
		if (s->auth_failures >= POP3_AUTH_FAILURES_MAX) {
			s->quit = 1;
			s->end = "auth_failures";
		}
	} else {
		session_login(s, "PLAIN", authcid, passwd);
	}
	memset(msg, 0, sizeof(msg));
}

static void cmd_noop(struct session *s, const char *arg)
{
	if (no_arguments(s, "NOOP", arg) < 0)
		return;
	reply(s, "+OK");
}

static void cmd_stat(struct session *s, const char *arg)
{
	size_t count;
	unsigned long long octets;

	if (no_arguments(s, "STAT", arg) < 0)
		return;
	maildrop_stat(&s->drop, &count, &octets);
	reply(s, "+OK %zu %llu", count, octets);
}

static void cmd_list(struct session *s, const char *arg)
{
	unsigned long long size, octets;
	size_t i, count;

	if (!arg_empty(arg)) {
		if (message_arg(s, arg, &i) < 0)
			return;
		maildrop_size(&s->drop, i, &size);
		reply(s, "+OK %zu %llu", i + 1, size);
		return;
	}
	maildrop_stat(&s->drop, &count, &octets);
	reply(s, "+OK %zu message%s (%llu octets)", count, count == 1 ? "" : "s", octets);
	for (i = 0; i < s->drop.count; i++) {
		if (s->drop.msgs[i].deleted)
			continue;
		maildrop_size(&s->drop, i, &size);
		reply(s, "%zu %llu", i + 1, size);
	}
	reply(s, ".");
}

static void cmd_uidl(struct session *s, const char *arg)
{
	size_t i;

	if (!arg_empty(arg)) {
		if (message_arg(s, arg, &i) < 0)
			return;
		reply(s, "+OK %zu %s", i + 1, pop3_message_uid(&s->drop.msgs[i]));
		return;
	}
	reply(s, "+OK Unique-ID listing follows");
	for (i = 0; i < s->drop.count; i++)
		if (!s->drop.msgs[i].deleted)
			reply(s, "%zu %s", i + 1, pop3_message_uid(&s->drop.msgs[i]));
	reply(s, ".");
}

/* RETR (top_lines < 0) and TOP. */
static void send_message(struct session *s, size_t i, long top_lines)
{
	unsigned long long size = 0, sent = 0;
	int fd = maildrop_open_message(&s->drop, i);

	if (fd < 0) {
		if (s->drop.msgs[i].missing) {
			reply(s, "-ERR [SYS/PERM] Message %zu no longer exists", i + 1);
		} else {
			log_event(LOG_ERR, "event=retr result=error login=%s message=%zu error=\"%s\"",
				  s->login, i + 1, strerror(errno));
			reply(s, "-ERR [SYS/TEMP] Cannot read message %zu", i + 1);
		}
		return;
	}
	if (top_lines < 0) {
		maildrop_size(&s->drop, i, &size);
		reply(s, "+OK %llu octets", size);
	} else {
		reply(s, "+OK Top of message follows");
	}
	if (maildrop_send(fd, top_lines, &s->io, &sent) < 0) {
		/* Part of the message is out: the reply cannot be mended. */
		log_event(LOG_ERR, "event=retr result=io_error login=%s message=%zu", s->login, i + 1);
		s->quit = 1;
		s->end = "error";
	} else if (top_lines < 0) {
		s->retrieved++;
		s->retrieved_octets += size;
	}
	close(fd);
}

static void cmd_retr(struct session *s, const char *arg)
{
	size_t i;

	if (message_arg(s, arg, &i) < 0)
		return;
	send_message(s, i, -1);
}

static void cmd_top(struct session *s, const char *arg)
{
	char num[16];
	const char *sp = strchr(arg, ' ');
	unsigned long lines;
	size_t i, n;

	if (!sp || (n = (size_t)(sp - arg)) == 0 || n >= sizeof(num) ||
	    pop3_parse_count(sp + 1, strlen(sp + 1), TOP_LINES_MAX, &lines) < 0) {
		s->bad_commands++;
		reply(s, "-ERR Syntax: TOP message lines");
		return;
	}
	memcpy(num, arg, n);
	num[n] = '\0';
	if (message_arg(s, num, &i) < 0)
		return;
	send_message(s, i, (long)lines);
}

static void cmd_dele(struct session *s, const char *arg)
{
	size_t i;

	if (message_arg(s, arg, &i) < 0)
		return;
	s->drop.msgs[i].deleted = 1;
	reply(s, "+OK message %zu deleted", i + 1);
}

static void cmd_rset(struct session *s, const char *arg)
{
	size_t count;
	unsigned long long octets;

	if (no_arguments(s, "RSET", arg) < 0)
		return;
	for (size_t i = 0; i < s->drop.count; i++)
		s->drop.msgs[i].deleted = 0;
	maildrop_stat(&s->drop, &count, &octets);
	reply(s, "+OK maildrop has %zu message%s (%llu octets)", count, count == 1 ? "" : "s", octets);
}

#define BOTH_STATES (CMD_AUTHORIZATION | CMD_TRANSACTION)

const struct command pop3_commands[] = {
	{ "CAPA", cmd_capa, BOTH_STATES },
	{ "QUIT", cmd_quit, BOTH_STATES },
	{ "STLS", cmd_stls, CMD_AUTHORIZATION },
	{ "USER", cmd_user, CMD_AUTHORIZATION },
	{ "PASS", cmd_pass, CMD_AUTHORIZATION },
	{ "AUTH", cmd_auth, CMD_AUTHORIZATION },
	{ "STAT", cmd_stat, CMD_TRANSACTION },
	{ "LIST", cmd_list, CMD_TRANSACTION },
	{ "UIDL", cmd_uidl, CMD_TRANSACTION },
	{ "RETR", cmd_retr, CMD_TRANSACTION },
	{ "TOP", cmd_top, CMD_TRANSACTION },
	{ "DELE", cmd_dele, CMD_TRANSACTION },
	{ "RSET", cmd_rset, CMD_TRANSACTION },
	{ "NOOP", cmd_noop, CMD_TRANSACTION },
	{ NULL, NULL, 0 },
};
