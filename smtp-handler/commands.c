/* One function a verb. Each checks first (every reason to refuse returns a
 * reply), then acts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "db.h"
#include "list.h"
#include "lists.h"
#include "log.h"
#include "maildir.h"
#include "message.h"
#include "session.h"
#include "srs.h"
#include "tls.h"

static int arg_empty(const char *arg)
{
	while (*arg == ' ')
		arg++;
	return *arg == '\0';
}

static void helo_store(struct session *s, const char *arg)
{
	size_t n = strcspn(arg, " ");

	if (n > SMTP_HELO_MAX)
		n = SMTP_HELO_MAX;
	memcpy(s->helo, arg, n);
	s->helo[n] = '\0';
	/* It goes into Received: keep it printable. */
	for (char *c = s->helo; *c; c++)
		if ((unsigned char)*c < 0x21 || (unsigned char)*c > 0x7e || *c == '(' || *c == ')')
			*c = '?';
}

static int helo_check(struct session *s, const char *arg)
{
	while (*arg == ' ')
		arg++;
	if (!*arg) {
		reply(s, "501 5.5.4 Syntax: EHLO hostname");
		return -1;
	}
	session_reset_transaction(s);
	helo_store(s, arg);
	session_enter_state(s, SMTP_STATE_GREETED);
	return 0;
}

static int auth_offered(struct session *s)
{
	if (s->auth_login[0])
		return 0;
	/* Passwords only over TLS, or from a network the admin trusts. */
	return s->tls_active || session_trusted_network(s);
}

static enum cmd_result cmd_ehlo(struct session *s, const char *arg)
{
	if (helo_check(s, arg) < 0)
		return cmd_refused(s);
	s->esmtp = 1;
	reply(s, "250-%s", setting(SET_HOSTNAME));
	reply(s, "250-PIPELINING");
	reply(s, "250-SIZE %lld", setting_int(SET_MAX_MESSAGE_BYTES));
	if (!s->tls_active && tls_available())
		reply(s, "250-STARTTLS");
	if (auth_offered(s))
		reply(s, "250-AUTH PLAIN LOGIN");
	reply(s, "250-ENHANCEDSTATUSCODES");
	reply(s, "250-8BITMIME");
	return reply(s, "250 SMTPUTF8");
}

static enum cmd_result cmd_helo(struct session *s, const char *arg)
{
	if (helo_check(s, arg) < 0)
		return cmd_refused(s);
	s->esmtp = 0;
	return reply(s, "250 %s", setting(SET_HOSTNAME));
}

struct mail_params {
	struct session *s;
	int seen_size, seen_body, seen_utf8;
	unsigned long long size;
	const char *error;
};

static int mail_param(void *ctx, const char *key, const char *value)
{
	struct mail_params *p = ctx;

	if (strcmp(key, "SIZE") == 0) {
		char *end;
		if (p->seen_size++ || !value || strlen(value) > 20 || value[0] < '0' || value[0] > '9') {
			p->error = "501 5.5.4 Error: bad SIZE parameter";
			return 1;
		}
		p->size = strtoull(value, &end, 10);
		if (*end) {
			p->error = "501 5.5.4 Error: bad SIZE parameter";
			return 1;
		}
		return 0;
	}
	if (strcmp(key, "BODY") == 0) {
		if (p->seen_body++ || !value) {
			p->error = "501 5.5.4 Error: bad BODY parameter";
			return 1;
		}
		if (strcasecmp(value, "8BITMIME") == 0) {
			p->s->tx.body_8bit = 1;
		} else if (strcasecmp(value, "7BIT") != 0) {
			p->error = "555 5.5.4 Error: BODY parameter not supported";
			return 1;
		}
		return 0;
	}
	if (strcmp(key, "SMTPUTF8") == 0) {
		if (p->seen_utf8++ || value) {
			p->error = "501 5.5.4 Error: bad SMTPUTF8 parameter";
			return 1;
		}
		p->s->tx.smtputf8 = 1;
		return 0;
	}
	p->error = "555 5.5.4 Error: unsupported MAIL parameter";
	return 1;
}

static const char *address_error(enum address_parse r)
{
	switch (r) {
	case ADDRESS_TOOLONG:
		return "501 5.1.7 Error: address too long";
	case ADDRESS_NEED_UTF8:
		return "553 5.6.7 Error: non-ASCII address needs SMTPUTF8";
	default:
		return "501 5.1.7 Error: bad address syntax";
	}
}

static enum cmd_result cmd_mail(struct session *s, const char *arg)
{
	struct mail_params p = { .s = s };
	const char *rest;
	struct address sender;
	enum address_parse r;
	long long max = setting_int(SET_MAX_MESSAGE_BYTES);

	if (s->state >= SMTP_STATE_MAIL)
		return reply(s, "503 5.5.1 Error: nested MAIL command");
	if (s->mode != MODE_MX && !s->auth_login[0])
		return reply(s, "530 5.7.0 Authentication required");
	if (strncasecmp(arg, "FROM:", 5) != 0)
		return reply(s, "501 5.5.4 Syntax: MAIL FROM:<address>");
	r = address_parse_path(arg + 5, 1, 1, &sender, &rest);
	if (r == ADDRESS_TOOLONG)
		r = srs_parse_path(arg + 5, &sender, &rest);
	if (r != ADDRESS_OK)
		return reply(s, "%s", address_error(r));
	if (*rest && *rest != ' ')
		return reply(s, "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]");
	s->tx.body_8bit = 0;
	s->tx.smtputf8 = 0;
	if (esmtp_params(rest, mail_param, &p) != 0) {
		s->tx.body_8bit = s->tx.smtputf8 = 0;
		return reply(s, "%s", p.error ? p.error : "501 5.5.4 Error: bad MAIL parameters");
	}
	if (sender.non_ascii && !s->tx.smtputf8) {
		s->tx.body_8bit = 0;
		return reply(s, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
	}
	if (sender.is_postmaster && !sender.is_null)
		return reply(s, "501 5.1.7 Error: bad sender address syntax");
	if (p.seen_size && p.size > (unsigned long long)max) {
		s->tx.body_8bit = s->tx.smtputf8 = 0;
		return reply(s, "552 5.3.4 Error: message size exceeds fixed limit");
	}
	if (session_check_sender(s, &sender) < 0 || rate_limit_check(s, 1) < 0 ||
	    checks_mail_from(s, &sender) < 0) {
		s->tx.body_8bit = s->tx.smtputf8 = 0;
		return cmd_refused(s);
	}
	s->tx.sender = sender;
	session_enter_state(s, SMTP_STATE_MAIL);
	s->tx.declared_size = p.seen_size ? p.size : 0;
	return reply(s, "250 2.1.0 Ok");
}

/* Drops destinations that cannot take the message (disabled, over quota)
 * and says why in *why when none is left. */
static size_t rcpt_filter(struct session *s, struct destination *d, size_t n, const char *addr,
			  char *why, size_t cap)
{
	size_t kept = 0;

	why[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		if (d[i].kind == DEST_MAILBOX && !d[i].enabled) {
			log_event(LOG_INFO, "event=rcpt result=disabled mailbox=%s", d[i].mailbox);
			snprintf(why, cap, "550 5.2.1 <%s>: Recipient address rejected: mailbox disabled", addr);
			continue;
		}
		if (d[i].kind == DEST_MAILBOX && d[i].quota_bytes >= 0) {
			char dir[PATH_MAX_POSTAGE];
			long long used = 0;

			if (maildir_path(setting(SET_MAIL_ROOT), d[i].mailbox, dir, sizeof(dir), 0) == 0)
				used = maildir_usage(dir);
			if ((long long)s->tx.declared_size > d[i].quota_bytes) {
				log_event(LOG_INFO, "event=rcpt result=over_quota mailbox=%s", d[i].mailbox);
				snprintf(why, cap, "552 5.2.2 <%s>: Recipient address rejected: message larger than mailbox quota", addr);
				continue;
			}
			if (used + (long long)s->tx.declared_size >= d[i].quota_bytes) {
				log_event(LOG_INFO, "event=rcpt result=mailbox_full mailbox=%s used=%lld quota=%lld",
					  d[i].mailbox, used, d[i].quota_bytes);
				snprintf(why, cap, "452 4.2.2 <%s>: Recipient address rejected: mailbox full", addr);
				continue;
			}
		}
		d[kept++] = d[i];
	}
	return kept;
}

static enum cmd_result cmd_rcpt(struct session *s, const char *arg)
{
	/* not re-entered: resolve_recipient recurses on its own, not through here */
	static struct destination found[FORWARD_TARGETS_MAX];
	char addr[ADDRESS_PATH_MAX + 1], safe[ADDRESS_PATH_MAX * 4 + 8];
	struct address rcpt;
	const char *rest;
	char why[ADDRESS_PATH_MAX * 4 + 128];
	enum address_parse r;
	size_t n = 0;
	int relay, srs;

	if (strncasecmp(arg, "TO:", 3) != 0)
		return reply(s, "501 5.5.4 Syntax: RCPT TO:<address>");
	r = address_parse_path(arg + 3, 0, 1, &rcpt, &rest);
	if (r == ADDRESS_TOOLONG)
		r = srs_parse_path(arg + 3, &rcpt, &rest);
	if (r == ADDRESS_TOOLONG)
		r = list_parse_path(arg + 3, 1, &rcpt, &rest);
	if (r != ADDRESS_OK)
		return reply(s, "%s", address_error(r));
	if (rcpt.non_ascii && !s->tx.smtputf8)
		return reply(s, "553 5.6.7 Error: non-ASCII address needs SMTPUTF8");
	while (*rest == ' ')
		rest++;
	if (*rest)
		return reply(s, "555 5.5.4 Error: unsupported RCPT parameter");
	if (s->tx.nrcpts >= SMTP_RECIPIENTS_MAX)
		return reply(s, "452 4.5.3 Error: too many recipients");
	if (rate_limit_check(s, s->tx.nrcpts + 1) < 0)
		return cmd_refused(s);
	address_format(&rcpt, addr, sizeof(addr));
	log_printable(safe, sizeof(safe), addr, strlen(addr));

	if (harvest_blocked(s)) {
		log_event(LOG_NOTICE, "event=rcpt result=harvest_blocked ip=%s rcpt=\"%s\"", s->peer.ip, safe);
		return reply(s, "450 4.7.1 <%s>: too many unknown recipients from your address, try again later",
			     safe);
	}
	/* A bounce to one of our SRS addresses goes back to the sender. */
	srs = rcpt_srs(s, &rcpt, safe, found, &n);
	if (srs < 0)
		return cmd_refused(s);
	if (srs > 0)
		goto resolved;
	switch (resolve_recipient(&rcpt, found, FORWARD_TARGETS_MAX, &n)) {
	case RESOLVE_TEMPFAIL:
		return reply(s, "451 4.3.0 <%s>: Temporary lookup failure, try again later", safe);
	case RESOLVE_UNKNOWN:
		log_event(LOG_INFO, "event=rcpt result=unknown rcpt=\"%s\"", safe);
		harvest_count_refusal(s);
		return reply(s, "550 5.1.1 <%s>: user unknown", safe);
	case RESOLVE_LOOP:
		log_event(LOG_WARNING, "event=rcpt result=forward_loop rcpt=\"%s\"", safe);
		return reply(s, "550 5.4.6 <%s>: Recipient address rejected: forwarding loop", safe);
	case RESOLVE_NOT_LOCAL:
		relay = session_may_relay(s);
		if (relay < 0)
			return reply(s, "451 4.3.0 <%s>: Temporary lookup failure, try again later", safe);
		if (!relay) {
			log_event(LOG_NOTICE, "event=rcpt result=relay_denied ip=%s rcpt=\"%s\"",
				  s->peer.ip[0] ? s->peer.ip : "local", safe);
			return reply(s, "554 5.7.1 <%s>: relay access denied", safe);
		}
		if (session_check_relay_sender(s) < 0)
			return cmd_refused(s);
		memset(&found[0], 0, sizeof(found[0]));
		found[0].kind = DEST_REMOTE;
		snprintf(found[0].address, sizeof(found[0].address), "%s", addr);
		n = 1;
		break;
	case RESOLVE_OK:
		break;
	}

resolved:
	n = rcpt_filter(s, found, n, safe, why, sizeof(why));
	if (n == 0)
		return reply(s, "%s", why);
	for (size_t i = 0; i < n; i++)
		if (found[i].kind == DEST_LIST && lists_rcpt(s, &found[i], safe) < 0)
			return cmd_refused(s);
	if (s->tx.ndests + n > MESSAGE_DESTINATIONS_MAX)
		return reply(s, "452 4.5.3 Error: too many recipients");
	snprintf(s->tx.rcpts[s->tx.nrcpts], sizeof(s->tx.rcpts[0]), "%s", addr);
	for (size_t i = 0; i < n; i++) {
		int dup = 0;
		for (size_t j = 0; j < s->tx.ndests && !dup; j++) {
			const struct destination *o = &s->tx.dests[j].dest;
			if (o->kind != found[i].kind)
				continue;
			dup = o->kind == DEST_MAILBOX ? strcmp(o->mailbox, found[i].mailbox) == 0 :
							strcasecmp(o->address, found[i].address) == 0;
			if (dup && o->kind == DEST_LIST)
				dup = o->list_role == found[i].list_role &&
				      strcmp(o->list_arg, found[i].list_arg) == 0;
		}
		if (dup)
			continue;
		s->tx.dests[s->tx.ndests].dest = found[i];
		s->tx.dests[s->tx.ndests].rcpt = (int)s->tx.nrcpts;
		s->tx.ndests++;
	}
	s->tx.nrcpts++;
	session_enter_state(s, SMTP_STATE_RCPT);
	return reply(s, "250 2.1.5 Ok");
}

static enum cmd_result cmd_data(struct session *s, const char *arg)
{
	if (!arg_empty(arg))
		return reply(s, "501 5.5.4 Syntax: DATA");
	return receive_message(s);
}

static enum cmd_result cmd_rset(struct session *s, const char *arg)
{
	if (!arg_empty(arg))
		return reply(s, "501 5.5.4 Syntax: RSET");
	session_reset_transaction(s);
	return reply(s, "250 2.0.0 Ok");
}

static enum cmd_result cmd_noop(struct session *s, const char *arg)
{
	(void)arg;
	return reply(s, "250 2.0.0 Ok");
}

static enum cmd_result cmd_quit(struct session *s, const char *arg)
{
	(void)arg;
	reply(s, "221 2.0.0 Bye");
	session_end(s, "quit");
	return CMD_CLOSED;
}

static enum cmd_result cmd_vrfy(struct session *s, const char *arg)
{
	if (arg_empty(arg))
		return reply(s, "501 5.5.4 Syntax: VRFY address");
	return reply(s, "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery");
}

static enum cmd_result cmd_expn(struct session *s, const char *arg)
{
	(void)arg;
	return reply(s, "502 5.5.1 Error: EXPN not available");
}

static enum cmd_result cmd_help(struct session *s, const char *arg)
{
	(void)arg;
	reply(s, "214-2.0.0 postage: commands are");
	reply(s, "214-2.0.0   EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP");
	return reply(s, "214 2.0.0   STARTTLS AUTH (when offered in the EHLO reply)");
}

static enum cmd_result cmd_starttls(struct session *s, const char *arg)
{
	if (!arg_empty(arg))
		return reply(s, "501 5.5.4 Syntax: STARTTLS");
	if (s->tls_active)
		return reply(s, "503 5.5.1 Error: TLS already active");
	if (!tls_available())
		return reply(s, "502 5.5.1 Error: STARTTLS not available (no certificate configured)");
	return session_starttls(s);
}

const struct command smtp_commands[] = {
	{ "EHLO", cmd_ehlo, CMD_ANY_STATE },
	{ "HELO", cmd_helo, CMD_ANY_STATE },
	{ "MAIL", cmd_mail, CMD_NEED_HELO },
	{ "RCPT", cmd_rcpt, CMD_NEED_HELO | CMD_NEED_MAIL },
	{ "DATA", cmd_data, CMD_NEED_HELO | CMD_NEED_MAIL | CMD_NEED_RCPT },
	{ "RSET", cmd_rset, CMD_JUNK },
	{ "NOOP", cmd_noop, CMD_JUNK },
	{ "QUIT", cmd_quit, CMD_ANY_STATE },
	{ "VRFY", cmd_vrfy, CMD_JUNK },
	{ "EXPN", cmd_expn, CMD_JUNK },
	{ "HELP", cmd_help, CMD_JUNK },
	{ "STARTTLS", cmd_starttls, CMD_NEED_HELO },
	{ "AUTH", cmd_auth, CMD_NEED_HELO },
	{ NULL, NULL, 0 },
};
