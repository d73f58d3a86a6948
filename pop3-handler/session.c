/* The POP3 session: greeting, the command loop, login and TLS. */
#include "session.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "confine.h"
#include "db.h"
#include "log.h"
#include "message.h"
#include "spool.h"
#include "stress.h"
#include "tls.h"

void reply(struct session *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	io_reply_line(&s->io, POP3_REPLY_LINE_MAX, fmt, ap);
	va_end(ap);
}

const char *session_ip(const struct session *s)
{
	return s->peer.ip[0] ? s->peer.ip : "local";
}

/* POP-before-SMTP (smtp-handler's pop_login_recent reads this row). A
 * failure costs the client nothing but that: logged, the login goes on. */
static void record_pop_login(struct session *s)
{
	struct db_q *st;
	int rc;

	if (!s->peer.ip[0])
		return; /* a local peer on pipes has no address to relay from */
	st = db_stmt(SQL_POP_LOGIN_RECORD);
	if (!st)
		return;
	db_bind_text(st, 1, s->peer.ip);
	db_bind_text(st, 2, s->login);
	db_bind_int64(st, 3, time(NULL));
	rc = db_step(st);
	db_reset(st);
	if (rc != DB_DONE)
		log_event(LOG_WARNING, "event=pop_login result=error ip=%s login=%s error=\"%s\"",
			  s->peer.ip, s->login, db_errmsg());
}

/* After the login nothing needs the database (the settings are loaded)
 * or any file but the Maildir: close the one, confine to the other.
 * Returns what the login line says. */
static const char *session_confine(struct session *s)
{
	enum confine_result r;

	r = confine_after_login(s->drop.lock_fd >= 0 ? s->drop.dir : NULL);
	if (r == CONFINE_OK)
		return "landlock";
	if (r == CONFINE_ERROR)
		log_event(LOG_WARNING, "event=confine result=error login=%s error=\"%s\"", s->login,
			  strerror(errno));
	return "no";
}

void session_login(struct session *s, const char *mech, const char *login, const char *password)
{
	char safe[ADDRESS_LOCAL_MAX * 4 + 8];
	const char *confined;
	enum auth_result r;
	enum maildrop_status m;
	size_t len = strlen(login);

	log_printable(safe, sizeof(safe), login, len);
	/* A login longer than any mailbox's still costs a full (dummy) hash. */
	r = auth_check(s->peer.ip, len > ADDRESS_LOCAL_MAX ? "" : login, password);
	switch (r) {
	case AUTH_OK:
		break;
	case AUTH_TEMPFAIL:
		log_event(LOG_ERR, "event=login result=tempfail mech=%s login=\"%s\" ip=%s", mech, safe,
			  session_ip(s));
		reply(s, "-ERR [SYS/TEMP] Temporary authentication failure, try again later");
		return;
	case AUTH_THROTTLED:
		log_event(LOG_NOTICE, "event=login result=throttled mech=%s login=\"%s\" ip=%s", mech, safe,
			  session_ip(s));
		reply(s, "-ERR [AUTH] Too many failed logins from your address, try again later");
		s->quit = 1;
		s->end = "throttled";
		return;
	case AUTH_DISABLED:
	case AUTH_FAIL:
		s->auth_failures++;
		log_event(LOG_NOTICE, "event=login result=%s mech=%s login=\"%s\" ip=%s failures=%d",
			  r == AUTH_DISABLED ? "disabled" : "failed", mech, safe, session_ip(s),
			  s->auth_failures);
		/* One answer for a wrong login, a wrong password and a
		 * disabled mailbox: never say which. */
		reply(s, "-ERR [AUTH] Authentication failed");
		if (s->auth_failures >= POP3_AUTH_FAILURES_MAX) {
			s->quit = 1;
			s->end = "auth_failures";
		}
		return;
	}

	m = maildrop_open(&s->drop, setting(SET_MAIL_ROOT), login, setting(SET_POP3_UIDL_FORMAT));
	if (m == MAILDROP_IN_USE) {
		log_event(LOG_NOTICE, "event=login result=in_use mech=%s login=%s ip=%s", mech, safe,
			  session_ip(s));
		reply(s, "-ERR [IN-USE] Mailbox is locked by another POP3 session, try again later");
		return;
	}
	if (m != MAILDROP_OK) {
		log_event(LOG_ERR, "event=login result=maildrop_error mech=%s login=%s ip=%s", mech, safe,
			  session_ip(s));
		reply(s, "-ERR [SYS/TEMP] Cannot open the mailbox, try again later");
		return;
	}
	snprintf(s->login, sizeof(s->login), "%s", login);
	s->state = STATE_TRANSACTION;
	s->have_user = 0;
	record_pop_login(s);
	confined = session_confine(s);
	log_event(LOG_INFO, "event=login result=ok mech=%s login=%s ip=%s tls=%d messages=%zu confined=%s",
		  mech, safe, session_ip(s), s->tls_active, s->drop.count, confined);
	reply(s, "+OK Logged in, %zu message%s", s->drop.count, s->drop.count == 1 ? "" : "s");
}

void session_stls(struct session *s)
{
	reply(s, "+OK Begin TLS negotiation");
	io_flush(&s->io);
	/* Whatever the client pipelined after STLS is dropped unread
	 * (tls_server_start discards it): RFC 2595 4, CVE-2011-0411. */
	if (tls_server_start(&s->io, s->tls_info, sizeof(s->tls_info)) < 0) {
		s->quit = 1;
		s->end = "tls_failed";
		return;
	}
	s->tls_active = 1;
	/* Nothing learned before TLS is kept. */
	s->have_user = 0;
	s->user[0] = '\0';
}

static const struct command *find_command(const char *verb)
{
	for (const struct command *c = pop3_commands; c->verb; c++)
		if (strcmp(c->verb, verb) == 0)
			return c;
	return NULL;
}

static void dispatch(struct session *s, const char *line, size_t len)
{
	char verb[8];
	const char *arg;
	const struct command *c;
	unsigned need = s->state == STATE_AUTHORIZATION ? CMD_AUTHORIZATION : CMD_TRANSACTION;

	if (strlen(line) != len || command_split(line, verb, sizeof(verb), &arg) < 0 ||
	    !(c = find_command(verb))) {
		s->bad_commands++;
		s->have_user = 0;
		reply(s, "-ERR Unknown command");
		return;
	}
	/* RFC 1939 7: PASS must come right after USER. */
	if (strcmp(c->verb, "PASS") != 0)
		s->have_user = 0;
	if (!(c->flags & need)) {
		s->bad_commands++;
		reply(s, "-ERR %s is not valid in the %s state", c->verb,
		      s->state == STATE_AUTHORIZATION ? "AUTHORIZATION" : "TRANSACTION");
		return;
	}
	c->run(s, arg);
}

static void log_end(struct session *s, const char *result)
{
	log_event(LOG_INFO,
		  "event=disconnect result=%s ip=%s login=%s retrieved=%lu retrieved_bytes=%llu "
		  "deleted=%zu bytes_in=%llu bytes_out=%llu",
		  result, session_ip(s), s->login[0] ? s->login : "-", s->retrieved, s->retrieved_octets,
		  s->removed, s->io.bytes_in, s->io.bytes_out);
}

static int start_implicit_tls(struct session *s)
{
	if (!tls_available()) {
		log_event(LOG_ERR, "event=tls result=unavailable reason=\"tls_cert and tls_key must be set "
			  "and readable for --tls\"");
		return -1;
	}
	if (tls_server_start(&s->io, s->tls_info, sizeof(s->tls_info)) < 0)
		return -1;
	s->tls_active = 1;
	return 0;
}

int session_run(struct session *s)
{
	char line[POP3_COMMAND_LINE_MAX + 1];
	enum db_status st;

	s->state = STATE_AUTHORIZATION;
	s->drop.lock_fd = s->drop.cur_fd = -1;
	peer_from_fd(0, &s->peer);
	queue_new_id(s->id, sizeof(s->id));
	log_set_session(s->id);
	io_init(&s->io, 0, 1, POP3_IDLE_TIMEOUT_MS);
	stress_watch(&s->io);
	log_event(LOG_INFO, "event=connect ip=%s port=%d tls=%s", session_ip(s), s->peer.port,
		  s->implicit_tls ? "implicit" : "none");

	st = db_open();
	if (st != DB_OK) {
		char host[256];

		if (gethostname(host, sizeof(host) - 1) < 0)
			strcpy(host, "localhost");
		host[sizeof(host) - 1] = '\0';
		/* A client on 995 expects a handshake, not text: just close. */
		if (!s->implicit_tls) {
			reply(s, "-ERR [SYS/TEMP] %s POP3 service not available, try again later", host);
			io_flush(&s->io);
		}
		log_end(s, st == DB_VERSION ? "db_version" : "db_error");
		io_linger_close(&s->io);
		return 0;
	}
	if (s->implicit_tls && start_implicit_tls(s) < 0) {
		log_end(s, "tls_failed");
		return 0;
	}

	reply(s, "+OK %s POP3 ready", setting(SET_HOSTNAME));
	while (!s->quit) {
		size_t len;
		enum io_result r = io_read_line(&s->io, line, sizeof(line), &len);

		if (r == IO_TOOLONG) {
			s->bad_commands++;
			s->have_user = 0;
			reply(s, "-ERR line too long");
		} else if (r == IO_TIMEOUT) {
			/* RFC 1939 3: autologout, without entering UPDATE. */
			reply(s, "-ERR Autologout: idle for too long");
			s->end = "timeout";
			break;
		} else if (r != IO_OK) {
			s->end = r == IO_EOF ? "eof" : "error";
			break;
		} else {
			dispatch(s, line, len);
			/* PASS lines hold passwords: keep none in memory. */
			memset(line, 0, len);
		}
		if (!s->quit && s->bad_commands >= POP3_BAD_COMMANDS_MAX) {
			reply(s, "-ERR Too many bad commands, closing the connection");
			s->end = "too_many_errors";
			break;
		}
	}
	io_flush(&s->io);
	if (s->tls_active)
		tls_end(&s->io);
	/* Anything but QUIT deletes nothing: the lock goes, the files stay. */
	maildrop_close(&s->drop);
	log_end(s, s->end ? s->end : "quit");
	io_linger_close(&s->io);
	return 0;
}
