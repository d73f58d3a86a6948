/* One POP3 session (RFC 1939): its state, and the verbs that move it. */
#ifndef POSTAGE_POP3_SESSION_H
#define POSTAGE_POP3_SESSION_H

#include <stddef.h>

#include "io.h"
#include "limits.h"
#include "maildrop.h"
#include "net.h"

/* RFC 1939 3. UPDATE is not a state the loop waits in: QUIT in
 * TRANSACTION enters it, commits the deletions and ends the session. */
enum pop3_state {
	STATE_AUTHORIZATION,
	STATE_TRANSACTION,
};

struct session {
	struct io io;
	struct peer peer;
	char id[24];
	enum pop3_state state;

	/* TLS: STLS (RFC 2595) or implicit on 995 (--tls) */
	int implicit_tls;
	int tls_active;
	char tls_info[128];

	/* AUTHORIZATION */
	int have_user;                       /* USER given, PASS may follow */
	char user[POP3_COMMAND_LINE_MAX + 1];
	int auth_failures;

	/* TRANSACTION */
	char login[ADDRESS_LOCAL_MAX + 1];
	struct maildrop drop;
	unsigned long retrieved;             /* RETR answered */
	unsigned long long retrieved_octets;
	size_t removed;                      /* unlinked at QUIT */

	int bad_commands;
	int quit;
	const char *end;                     /* why the session ended, for the log */
};

enum cmd_flags {
	CMD_AUTHORIZATION = 1 << 0, /* allowed before login */
	CMD_TRANSACTION = 1 << 1,   /* allowed after login */
};

struct command {
	const char *verb;
	void (*run)(struct session *s, const char *arg);
	unsigned flags;
};

extern const struct command pop3_commands[];

/* Writes one reply line (text ends without CRLF). */
void reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int session_run(struct session *s);

/* USER/PASS and AUTH PLAIN end here: checks the password, locks and
 * snapshots the maildrop, records the POP-before-SMTP login, replies. */
void session_login(struct session *s, const char *mech, const char *login, const char *password);

/* STLS: +OK, then the handshake over whatever the client sends next. */
void session_stls(struct session *s);

/* "local" for a peer on pipes, else the IP: for log lines. */
const char *session_ip(const struct session *s);

#endif
