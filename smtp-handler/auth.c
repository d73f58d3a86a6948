/* SMTP AUTH (RFC 4954: PLAIN and LOGIN), and which senders a client that
 * may relay is allowed to use. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "auth.h"
#include "base64.h"
#include "config.h"
#include "db.h"
#include "headers.h"
#include "log.h"
#include "session.h"

/* Reads one SASL response line; 0, or -1 after replying (cancel, bad
 * base64, connection trouble). */
static int sasl_read(struct session *s, char *out, size_t cap, long *len)
{
	static char line[SMTP_AUTH_LINE_MAX + 1];
	size_t n;
	enum io_result r = io_read_line(&s->io, line, sizeof(line), &n);

	if (r == IO_TOOLONG) {
		reply(s, "500 5.5.6 Error: authentication exchange line too long");
		return -1;
	}
	if (r != IO_OK) {
		session_end(s, r == IO_TIMEOUT ? "timeout" : "eof");
		return -1;
	}
	return sasl_decode(s, line, out, cap, len);
}

int sasl_decode(struct session *s, const char *in, char *out, size_t cap, long *len)
{
	if (strcmp(in, "*") == 0) {
		reply(s, "501 5.7.0 Authentication cancelled");
		return -1;
	}
	if (strcmp(in, "=") == 0) {
		out[0] = '\0';
		*len = 0;
		return 0;
	}
	*len = base64_decode(in, out, cap);
	if (*len < 0) {
		reply(s, "501 5.5.2 Error: invalid base64 data");
		return -1;
	}
	return 0;
}

static enum cmd_result auth_finish(struct session *s, const char *mech, const char *login,
				   const char *password)
{
	char safe[ADDRESS_LOCAL_MAX * 4 + 8];
	enum auth_result r;

	log_printable(safe, sizeof(safe), login, strlen(login));
	if (strlen(login) > ADDRESS_LOCAL_MAX)
		r = auth_check(s->peer.ip, "", password);
	else
		r = auth_check(s->peer.ip, login, password);
	switch (r) {
	case AUTH_OK:
		snprintf(s->auth_login, sizeof(s->auth_login), "%s", login);
		log_event(LOG_INFO, "event=auth result=ok mech=%s login=\"%s\" ip=%s", mech, safe,
			  s->peer.ip[0] ? s->peer.ip : "local");
		return reply(s, "235 2.7.0 Authentication successful");
	case AUTH_TEMPFAIL:
		return reply(s, "454 4.7.0 Temporary authentication failure, try again later");
	case AUTH_THROTTLED:
		log_event(LOG_NOTICE, "event=auth result=throttled mech=%s login=\"%s\" ip=%s", mech, safe,
			  s->peer.ip[0] ? s->peer.ip : "local");
		reply(s, "421 4.7.0 %s Error: too many failed logins, try again later",
		      setting(SET_HOSTNAME));
		session_end(s, "auth_throttled");
		return CMD_CLOSED;
	case AUTH_DISABLED:
	case AUTH_FAIL:
		break;
	}
	log_event(LOG_NOTICE, "event=auth result=%s mech=%s login=\"%s\" ip=%s",
		  r == AUTH_DISABLED ? "disabled" : "failed", mech, safe,
		  s->peer.ip[0] ? s->peer.ip : "local");
	s->auth_failures++;
	reply(s, "535 5.7.8 Error: authentication credentials invalid");
	if (s->auth_failures >= SMTP_AUTH_FAILURES_MAX) {
		reply(s, "421 4.7.0 %s Error: too many failed logins", setting(SET_HOSTNAME));
		session_end(s, "too_many_auth_failures");
		return CMD_CLOSED;
	}
	return CMD_REFUSED;
}

enum cmd_result cmd_auth(struct session *s, const char *arg)
{
	/* not re-entered: commands run one at a time from the session loop */
	static char msg[SMTP_AUTH_LINE_MAX], user[SMTP_AUTH_LINE_MAX];
	char mech[16];
	const char *initial = NULL, *authcid, *passwd;
	size_t mlen = strcspn(arg, " ");
	long len;
	enum cmd_result result;

	if (s->auth_login[0])
		return reply(s, "503 5.5.1 Error: already authenticated");
	if (s->state >= SMTP_STATE_MAIL)
		return reply(s, "503 5.5.1 Error: AUTH not permitted during a mail transaction");
	if (!s->tls_active && !session_trusted_network(s))
		return reply(s, "538 5.7.11 Encryption required for requested authentication mechanism");
	if (mlen == 0 || mlen >= sizeof(mech))
		return reply(s, "501 5.5.4 Syntax: AUTH mechanism [initial-response]");
	memcpy(mech, arg, mlen);
	mech[mlen] = '\0';
	if (arg[mlen] == ' ')
		initial = arg + mlen + 1;
	if (auth_throttle_delay(s->peer.ip) < 0) {
		log_event(LOG_NOTICE, "event=auth result=throttled ip=%s", s->peer.ip[0] ? s->peer.ip : "local");
		reply(s, "421 4.7.0 %s Error: too many failed logins, try again later",
		      setting(SET_HOSTNAME));
		session_end(s, "auth_throttled");
		return CMD_CLOSED;
	}

	if (strcasecmp(mech, "PLAIN") == 0) {
		if (initial) {
			if (sasl_decode(s, initial, msg, sizeof(msg), &len) < 0)
				return cmd_refused(s);
		} else {
			reply(s, "334 ");
			if (sasl_read(s, msg, sizeof(msg), &len) < 0)
				return cmd_refused(s);
		}
		if (sasl_plain_split(msg, (size_t)len, &authcid, &passwd) < 0) {
			s->auth_failures++;
			return reply(s, "535 5.7.8 Error: authentication credentials invalid");
		}
		result = auth_finish(s, "PLAIN", authcid, passwd);
	} else if (strcasecmp(mech, "LOGIN") == 0) {
		if (initial) {
			if (sasl_decode(s, initial, user, sizeof(user), &len) < 0)
				return cmd_refused(s);
		} else {
			reply(s, "334 VXNlcm5hbWU6");
			if (sasl_read(s, user, sizeof(user), &len) < 0)
				return cmd_refused(s);
		}
		if ((size_t)len != strlen(user))
			return reply(s, "501 5.5.2 Error: invalid user name");
		reply(s, "334 UGFzc3dvcmQ6");
		if (sasl_read(s, msg, sizeof(msg), &len) < 0)
			return cmd_refused(s);
		if ((size_t)len != strlen(msg))
			return reply(s, "535 5.7.8 Error: authentication credentials invalid");
		result = auth_finish(s, "LOGIN", user, msg);
	} else {
		result = reply(s, "504 5.5.4 Error: unrecognized authentication mechanism");
	}
	memset(msg, 0, sizeof(msg));
	return result;
}

/* May login send as a? Its own (an address of its mailbox, or in a domain
 * whose catch-all it owns), or granted by a send_as row for the address
 * or its whole domain. 1 yes, 0 no, -1 database trouble. */
int session_login_may_use(const char *login, const struct address *a)
{
	char owner[ADDRESS_LOCAL_MAX + 1], addr[ADDRESS_PATH_MAX + 1], domain[ADDRESS_DOMAIN_MAX + 2];
	struct db_q *st;
	int r, rc;

	if (a->is_null || a->is_postmaster)
		return 0;
	r = address_owner(a, owner, sizeof(owner));
	if (r < 0)
		return -1;
	if (r > 0 && strcmp(owner, login) == 0)
		return 1;
	st = db_stmt(SQL_SEND_AS);
	if (!st)
		return -1;
	address_format(a, addr, sizeof(addr));
	snprintf(domain, sizeof(domain), "@%s", a->domain);
	db_bind_text(st, 1, login);
	db_bind_text(st, 2, addr);
	db_bind_text(st, 3, domain);
	rc = db_step(st);
	db_reset(st);
	if (rc != DB_ROW && rc != DB_DONE)
		return -1;
	return rc == DB_ROW;
}

/* The envelope sender rule: 0, or -1 after replying. The reply names the
 * address, never the login (a stranger behind the same NAT as a
 * POP-before-SMTP user must not learn whom to phish). */
static int sender_owned(struct session *s, const struct address *sender, const char *login)
{
	char addr[ADDRESS_PATH_MAX + 1], safe[ADDRESS_PATH_MAX * 4 + 8];
	int r = session_login_may_use(login, sender);

	if (r < 0) {
		reply(s, "451 4.3.0 Temporary lookup failure, try again later");
		return -1;
	}
	address_format(sender, addr, sizeof(addr));
	log_printable(safe, sizeof(safe), addr, strlen(addr));
	if (r == 0) {
		log_event(LOG_NOTICE, "event=mail result=sender_not_owned login=%s sender=\"%s\"", login, safe);
		reply(s, "553 5.7.1 <%s>: Sender address rejected: not one of your addresses", safe);
		return -1;
	}
	return 0;
}

/* The login whose right the message uses, or NULL: every message after
 * AUTH; under POP-before-SMTP one with a remote destination (mail to our
 * own users needs no right). relay_networks clients are unbound. */
static const char *bound_login(struct session *s)
{
	if (s->auth_login[0])
		return s->auth_login;
	if (strcmp(s->relay_reason, "pop_before_smtp") != 0 || !s->pop_login[0])
		return NULL;
	for (size_t i = 0; i < s->tx.ndests; i++)
		if (s->tx.dests[i].dest.kind == DEST_REMOTE)
			return s->pop_login;
	return NULL;
}

int session_check_headers(struct session *s, int fd, off_t header_start, off_t size)
{
	static const char *const names[] = { "From", "Sender", "Resent-From" };
	static char boxes[HEADER_AUTHORS_MAX][ADDRESS_PATH_MAX + 1];
	char safe[ADDRESS_PATH_MAX * 4 + 8];
	const char *login = bound_login(s);
	struct header_block hb;
	int ret = 0;

	if (!login)
		return 0;
	if (header_block_read(fd, header_start, size, &hb) < 0) {
		if (errno == EFBIG) {
			reply(s, "552 5.3.4 Error: header section too large");
			return -1;
		}
		reply(s, "451 4.3.0 Error: cannot read the message, try again later");
		return -1;
	}
	for (size_t k = 0; k < sizeof(names) / sizeof(names[0]) && ret == 0; k++) {
		const struct header_field *f;
		long pos = -1;

		while (ret == 0 && (f = header_next(&hb, names[k], &pos)) != NULL) {
			int malformed = 0;
			size_t n = header_mailboxes(f, boxes, HEADER_AUTHORS_MAX, &malformed);

			for (size_t i = 0; i < n && !malformed && ret == 0; i++) {
				struct address a;
				int local, may;

				if (address_parse_plain(boxes[i], 1, &a) != ADDRESS_OK) {
					malformed = 1;
					break;
				}
				local = a.is_literal ? 0 : domain_is_local(a.domain);
				may = local > 0 ? session_login_may_use(login, &a) : 1;
				if (local < 0 || may < 0) {
					reply(s, "451 4.3.0 Temporary lookup failure, try again later");
					ret = -1;
				} else if (!may) {
					log_printable(safe, sizeof(safe), boxes[i], strlen(boxes[i]));
					log_event(LOG_NOTICE, "event=message result=refused reason=%s_not_owned "
							      "login=%s address=\"%s\"",
						  k == 0 ? "from" : k == 1 ? "sender" : "resent_from", login, safe);
					reply(s, "553 5.7.1 <%s>: %s: address rejected: not one of your addresses",
					      safe, names[k]);
					ret = -1;
				}
			}
			if (malformed && ret == 0) {
				log_event(LOG_NOTICE, "event=message result=refused reason=unreadable_%s login=%s",
					  k == 0 ? "from" : k == 1 ? "sender" : "resent_from", login);
				reply(s, "553 5.7.1 Error: the %s: field cannot be read as a list of addresses",
				      names[k]);
				ret = -1;
			}
		}
	}
	header_block_free(&hb);
	return ret;
}

int session_check_sender(struct session *s, const struct address *sender)
{
	/* The null sender is nobody's address: a logged-in user sends read
	 * receipts (RFC 8098) and vacation replies with it. (Relaying by a
	 * POP3 login's IP alone still needs one of the login's addresses.) */
	if (!s->auth_login[0] || sender->is_null)
		return 0;
	return sender_owned(s, sender, s->auth_login);
}

int session_check_relay_sender(struct session *s)
{
	if (s->auth_login[0] || strcmp(s->relay_reason, "pop_before_smtp") != 0)
		return 0;
	if (sender_owned(s, &s->tx.sender, s->pop_login) < 0)
		return -1;
	log_event(LOG_INFO, "event=relay result=pop_before_smtp login=%s", s->pop_login);
	return 0;
}
