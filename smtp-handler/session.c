/* The SMTP session: greeting, the command loop, and who may relay. */
#include "session.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "message.h"
#include "spool.h"
#include "stress.h"
#include "tls.h"

int smtp_error_delay_ms = SMTP_ERROR_DELAY_MS;

enum cmd_result reply(struct session *s, const char *fmt, ...)
{
	char code[4];
	va_list ap, ap2;

	va_start(ap, fmt);
	va_copy(ap2, ap);
	vsnprintf(code, sizeof(code), fmt, ap2);
	va_end(ap2);
	io_reply_line(&s->io, SMTP_REPLY_LINE_MAX, fmt, ap);
	va_end(ap);
	/* 421 always comes with session_end: not an error to count. */
	if (strcmp(code, "421") == 0)
		return CMD_CLOSED;
	return code[0] == '4' || code[0] == '5' ? CMD_REFUSED : CMD_OK;
}

enum cmd_result cmd_refused(const struct session *s)
{
	return s->state == SMTP_STATE_QUIT ? CMD_CLOSED : CMD_REFUSED;
}

/* A reset clears everything above rcpts: the part it leaves must be the
 * last field of the transaction. */
_Static_assert(offsetof(struct smtp_tx, dests) + sizeof(((struct smtp_tx *)0)->dests) ==
		       sizeof(struct smtp_tx),
	       "the recipient arrays are the last field of struct smtp_tx");

void session_enter_state(struct session *s, enum smtp_state state)
{
	/* Not logged: log_event has no level that stays out of the
	 * journal, and a line per command would bury the events. */
	s->state = state;
}

void session_reset_transaction(struct session *s)
{
	/* The transaction holds no file or memory of its own: the end of
	 * DATA closes and frees what it made before it gets here. */
	memset(&s->tx, 0, offsetof(struct smtp_tx, rcpts));
	if (s->state >= SMTP_STATE_MAIL && s->state <= SMTP_STATE_DATA)
		session_enter_state(s, SMTP_STATE_GREETED);
}

void session_end(struct session *s, const char *reason)
{
	session_enter_state(s, SMTP_STATE_QUIT);
	if (!s->end_reason)
		s->end_reason = reason;
}

/* relay_networks holds the client's address. 1 yes, 0 no, -1 trouble. */
static int in_relay_networks(const char *ip)
{
	struct db_q *st = db_stmt(SQL_RELAY_NETWORKS);
	int rc, found = 0;

	if (!st)
		return -1;
	while ((rc = db_step(st)) == DB_ROW) {
		const char *net = db_col_text(st, 0);
		int m = net ? cidr_match(ip, net) : -1;

		if (m < 0) {
			char safe[80];
			log_event(LOG_WARNING, "event=relay_networks result=malformed network=\"%s\"",
				  log_printable(safe, sizeof(safe), net ? net : "", net ? strlen(net) : 0));
		} else if (m) {
			found = 1;
			break;
		}
	}
	db_reset(st);
	if (!found && rc != DB_DONE)
		return -1;
	return found;
}

/* A POP3 login from this IP within pop_before_smtp_minutes. */
static int pop_login_recent(struct session *s)
{
	struct db_q *st = db_stmt(SQL_POP_LOGIN_RECENT);
	long long window = setting_int(SET_POP_BEFORE_SMTP_MINUTES) * 60;
	int rc;

	if (!st)
		return -1;
	db_bind_text(st, 1, s->peer.ip);
	db_bind_int64(st, 2, time(NULL) - window);
	rc = db_step(st);
	if (rc == DB_ROW) {
		const char *login = db_col_text(st, 0);
		snprintf(s->pop_login, sizeof(s->pop_login), "%s", login ? login : "");
	}
	db_reset(st);
	if (rc == DB_ROW)
		return window > 0;
	return rc == DB_DONE ? 0 : -1;
}

int session_may_relay(struct session *s)
{
	int r;

	if (s->auth_login[0])
		return 1;
	if (s->relay_checked)
		return s->relay_allowed;
	if (!s->peer.ip[0]) {
		s->relay_checked = 1;
		return 0;
	}
	r = in_relay_networks(s->peer.ip);
	if (r < 0)
		return -1;
	if (r) {
		snprintf(s->relay_reason, sizeof(s->relay_reason), "relay_networks");
	} else {
		r = pop_login_recent(s);
		if (r < 0)
			return -1;
		if (r)
			snprintf(s->relay_reason, sizeof(s->relay_reason), "pop_before_smtp");
	}
	s->relay_checked = 1;
	s->relay_allowed = r;
	return r;
}

int session_trusted_network(struct session *s)
{
	return session_may_relay(s) == 1 && strcmp(s->relay_reason, "relay_networks") == 0;
}

enum cmd_result session_starttls(struct session *s)
{
	/* A certificate that does not load is found before we promise a
	 * handshake: the client may go on in clear (RFC 3207 4). */
	if (tls_server_prepare() < 0)
		return reply(s, "454 4.7.0 TLS not available due to local problem");
	reply(s, "220 2.0.0 Ready to start TLS");
	io_flush(&s->io);
	/* Whatever the client pipelined after STARTTLS is dropped unread
	 * (tls_server_start discards it): RFC 3207 4.2, CVE-2011-0411. */
	if (tls_server_start(&s->io, s->tls_info, sizeof(s->tls_info)) < 0) {
		session_end(s, "tls_failed");
		return CMD_CLOSED;
	}
	s->tls_active = 1;
	/* RFC 3207 4.2: forget everything learned before TLS, the login of
	 * an AUTH in clear (from relay_networks) too. */
	session_reset_transaction(s);
	session_enter_state(s, SMTP_STATE_CONNECTED);
	s->esmtp = 0;
	s->helo[0] = '\0';
	s->auth_login[0] = '\0';
	return CMD_OK;
}

int session_start_implicit_tls(struct session *s)
{
	if (!tls_available()) {
		log_event(LOG_ERR, "event=tls result=unavailable reason=\"tls_cert and tls_key must be set "
			  "and readable for --mode=submissions\"");
		return -1;
	}
	if (tls_server_start(&s->io, s->tls_info, sizeof(s->tls_info)) < 0)
		return -1;
	s->tls_active = 1;
	return 0;
}

void session_end_tls(struct session *s)
{
	if (s->tls_active)
		tls_end(&s->io);
}

static const struct command *find_command(const char *verb)
{
	for (const struct command *c = smtp_commands; c->verb; c++)
		if (strcmp(c->verb, verb) == 0)
			return c;
	return NULL;
}

static enum cmd_result dispatch(struct session *s, const char *line, size_t len)
{
	char verb[16];
	const char *arg;
	const struct command *c;

	if (strlen(line) != len || command_split(line, verb, sizeof(verb), &arg) < 0 ||
	    !(c = find_command(verb)))
		return reply(s, "500 5.5.2 Error: command not recognized");
	if ((c->flags & CMD_NEED_HELO) && s->state < SMTP_STATE_GREETED)
		return reply(s, "503 5.5.1 Error: send HELO/EHLO first");
	if ((c->flags & CMD_NEED_MAIL) && s->state < SMTP_STATE_MAIL)
		return reply(s, "503 5.5.1 Error: need MAIL command");
	if ((c->flags & CMD_NEED_RCPT) && s->state < SMTP_STATE_RCPT)
		return reply(s, "554 5.5.1 Error: no valid recipients");
	if ((c->flags & CMD_JUNK) && ++s->junk_commands > SMTP_JUNK_COMMANDS_MAX) {
		reply(s, "421 4.7.0 %s Error: too many commands without mail, closing",
		      setting(SET_HOSTNAME));
		session_end(s, "too_many_junk_commands");
		return CMD_CLOSED;
	}
	return c->run(s, arg);
}

int session_run(struct session *s)
{
	char line[SMTP_COMMAND_LINE_MAX + 1];
	enum db_status st;
	char host[256];

	peer_from_fd(0, &s->peer);
	queue_new_id(s->id, sizeof(s->id));
	log_set_session(s->id);
	io_init(&s->io, 0, 1, SMTP_COMMAND_TIMEOUT_MS);
	stress_watch(&s->io);
	log_event(LOG_INFO, "event=connect ip=%s port=%d mode=%s", s->peer.ip[0] ? s->peer.ip : "local",
		  s->peer.port,
		  s->mode == MODE_MX ? "mx" : s->mode == MODE_SUBMISSION ? "submission" : "submissions");

	st = db_open();
	if (st != DB_OK) {
		if (gethostname(host, sizeof(host) - 1) < 0)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		reply(s, "421 4.3.0 %s Service not available, try again later", host);
		io_flush(&s->io);
		log_event(LOG_ERR, "event=disconnect result=%s", st == DB_VERSION ? "db_version" : "db_error");
		return 0;
	}

	if (s->mode == MODE_SUBMISSIONS && session_start_implicit_tls(s) < 0) {
		/* Why (no certificate, or the client's handshake) is logged
		 * just before. */
		log_event(LOG_NOTICE, "event=disconnect result=tls_failed");
		return 0;
	}

	if (harvest_blocked(s) > 0) {
		reply(s, "421 4.7.1 %s Error: too many unknown recipients from your address, "
			 "try again later", setting(SET_HOSTNAME));
		io_flush(&s->io);
		log_event(LOG_NOTICE, "event=disconnect result=harvest_blocked ip=%s", s->peer.ip);
		return 0;
	}
	reply(s, "220 %s ESMTP postage", setting(SET_HOSTNAME));
	while (s->state != SMTP_STATE_QUIT) {
		size_t len;
		enum cmd_result result;
		enum io_result r = io_read_line(&s->io, line, sizeof(line), &len);

		if (s->errors >= SMTP_ERRORS_SOFT && r != IO_EOF && r != IO_ERROR &&
		    smtp_error_delay_ms > 0) {
			/* Past the soft limit every reply waits: a client
			 * that only probes gets little done per second. */
			struct timespec ts = { smtp_error_delay_ms / 1000,
					       (smtp_error_delay_ms % 1000) * 1000000L };
			io_flush(&s->io);
			nanosleep(&ts, NULL);
		}
		if (r == IO_TOOLONG) {
			result = reply(s, "500 5.5.2 Error: line too long");
		} else if (r == IO_TIMEOUT) {
			reply(s, "421 4.4.2 %s Error: timeout exceeded", setting(SET_HOSTNAME));
			session_end(s, "timeout");
			break;
		} else if (r != IO_OK) {
			session_end(s, r == IO_EOF ? "eof" : "error");
			break;
		} else {
			result = dispatch(s, line, len);
		}
		/* The one place errors are counted: whichever check refused,
		 * the count cannot be forgotten. */
		if (result == CMD_REFUSED)
			s->errors++;
		if (s->errors >= SMTP_ERRORS_HARD && s->state != SMTP_STATE_QUIT) {
			reply(s, "421 4.7.0 %s Error: too many errors", setting(SET_HOSTNAME));
			session_end(s, "too_many_errors");
			break;
		}
	}
	log_event(LOG_INFO, "event=disconnect result=%s messages=%u",
		  s->end_reason ? s->end_reason : "quit", s->messages);
	io_flush(&s->io);
	session_end_tls(s);
	/* Closing with unread input sends a reset that can destroy the last
	 * reply: half-close and drain for a moment first. */
	if (s->peer.is_socket)
		io_linger_close(&s->io);
	return 0;
}
