/* One SMTP session: its state, and the verbs that move it. */
#ifndef POSTAGE_SMTP_SESSION_H
#define POSTAGE_SMTP_SESSION_H

#include "address.h"
#include "checks.h"
#include "io.h"
#include "limits.h"
#include "net.h"

enum smtp_mode { MODE_MX, MODE_SUBMISSION, MODE_SUBMISSIONS };

/* Where the session is in the dialog; only session_enter_state changes
 * it. In this order: a later state has passed every earlier one. */
enum smtp_state {
	SMTP_STATE_CONNECTED, /* no HELO/EHLO yet (or since STARTTLS) */
	SMTP_STATE_GREETED,   /* HELO/EHLO: no transaction */
	SMTP_STATE_MAIL,      /* MAIL accepted, no recipient yet */
	SMTP_STATE_RCPT,      /* at least one recipient accepted */
	SMTP_STATE_DATA,      /* receiving the message (after 354) */
	SMTP_STATE_QUIT,      /* the session ends after this command */
};

struct txn_destination {
	struct destination dest;
	int rcpt; /* index into rcpts: the RCPT address it came from */
};

/* One mail transaction: everything that belongs to one message, from
 * MAIL to the end of DATA. It is dropped whole (session_reset_transaction)
 * at RSET, HELO/EHLO, STARTTLS and the end of DATA, so no field of one
 * message can leak into the next. */
struct smtp_tx {
	struct address sender;
	int body_8bit;                       /* BODY=8BITMIME */
	int smtputf8;                        /* SMTPUTF8 */
	unsigned long long declared_size;    /* SIZE=, 0 when not given */
	struct inbound_checks checks;        /* checks.c: SPF, DKIM, DMARC of this message */
	size_t nrcpts;
	size_t ndests;
	/* Left as they are by a reset: only the first nrcpts and ndests
	 * entries are ever read, and clearing 600 KB at every EHLO and
	 * message would touch memory most sessions never use. A field that
	 * must be cleared goes above (session.c asserts this part is last). */
	struct {
		char rcpts[SMTP_RECIPIENTS_MAX][ADDRESS_PATH_MAX + 1];
		struct txn_destination dests[MESSAGE_DESTINATIONS_MAX];
	};
};

struct session {
	enum smtp_mode mode;
	struct io io;
	struct peer peer;
	char id[24];
	enum smtp_state state;

	/* HELO/EHLO */
	int esmtp;
	char helo[SMTP_HELO_MAX + 1];

	/* TLS and the right to send */
	int tls_active;
	char tls_info[128];     /* "TLSv1.3 with cipher ..." for Received */
	char auth_login[ADDRESS_LOCAL_MAX + 1];
	int relay_checked;      /* relay_networks / POP-before-SMTP looked up */
	int relay_allowed;
	char relay_reason[32];
	char pop_login[ADDRESS_LOCAL_MAX + 1]; /* POP-before-SMTP login */
	int auth_failures;

	struct helo_spf helo_spf; /* checks.c: SPF of the HELO name, once per name */

	/* the mail transaction in progress, if any */
	struct smtp_tx tx;

	int errors;         /* error replies since the last accepted message */
	int junk_commands;
	const char *end_reason; /* the disconnect line's result= */
	unsigned messages;
};

enum cmd_flags {
	CMD_ANY_STATE = 0,
	CMD_NEED_HELO = 1 << 0,
	CMD_NEED_MAIL = 1 << 1,
	CMD_NEED_RCPT = 1 << 2,
	CMD_JUNK = 1 << 3, /* counts towards SMTP_JUNK_COMMANDS_MAX */
};

/* What a command did. The dispatcher (session_run) counts the refusals,
 * in one place, towards SMTP_ERRORS_SOFT and SMTP_ERRORS_HARD. */
enum cmd_result {
	CMD_OK,      /* it replied 2xx or 3xx */
	CMD_REFUSED, /* it replied 4xx or 5xx (421 aside): one more error */
	CMD_CLOSED,  /* the session ends (421, or the client is gone) */
};

struct command {
	const char *verb;
	enum cmd_result (*run)(struct session *s, const char *arg);
	unsigned flags;
};

extern const struct command smtp_commands[];

/* Writes one reply line (text ends without CRLF). Returns what its code
 * says, so that a handler can end with return reply(...): CMD_OK for 2xx
 * and 3xx, CMD_CLOSED for 421, else CMD_REFUSED. */
enum cmd_result reply(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The result of a handler whose check returned -1 after replying (a
 * refusal), or after ending the session (CMD_CLOSED). */
enum cmd_result cmd_refused(const struct session *s);
/* The wait before each reply past SMTP_ERRORS_SOFT errors: the limit's
 * value, and 0 only in the fuzz target (a fuzzer must not sleep). */
extern int smtp_error_delay_ms;
/* Moves the session to state; the one place the state changes. */
void session_enter_state(struct session *s, enum smtp_state state);
/* Drops the transaction (struct smtp_tx): a session in MAIL, RCPT or
 * DATA is GREETED again. */
void session_reset_transaction(struct session *s);
/* Ends the session after this command; reason is logged once, in the
 * disconnect line ("quit", "timeout", "too_many_errors", ...). */
void session_end(struct session *s, const char *reason);
int session_run(struct session *s);
/* May this client send to domains we do not host? */
int session_may_relay(struct session *s);
/* Is the client in relay_networks (not merely POP-before-SMTP)? Only
 * there may a password cross the network without TLS. */
int session_trusted_network(struct session *s);

/* TLS (session.c): STARTTLS, implicit TLS on 465, close. */
enum cmd_result session_starttls(struct session *s);
int session_start_implicit_tls(struct session *s);
void session_end_tls(struct session *s);

/* auth.c: AUTH, and who may use which sender. */
enum cmd_result cmd_auth(struct session *s, const char *arg);
int sasl_decode(struct session *s, const char *in, char *out, size_t cap, long *len);
/* MAIL FROM on submission: the sender must belong to the login; replies
 * and returns -1 when it does not. */
int session_check_sender(struct session *s, const struct address *sender);
/* Relaying by POP-before-SMTP: the sender must belong to that login. */
int session_check_relay_sender(struct session *s);
/* At the end of DATA, for a message whose right to send comes from a
 * login (AUTH; POP-before-SMTP with a remote destination): every From:,
 * Sender: and Resent-From: address in a hosted domain must be the
 * login's own or granted by send_as. 0, or -1 after replying 553 5.7.1
 * (or a 4xx). header_start: where the client's header section begins. */
int session_check_headers(struct session *s, int fd, off_t header_start, off_t size);
/* May login use address a (its own, or granted by send_as)? 1, 0, -1. */
int session_login_may_use(const char *login, const struct address *a);

/* ratelimit.c: max_messages_per_hour_per_login. Each recipient counts as
 * one message. check: would wanted more keep the login within its hourly
 * limit? 0 yes, -1 after replying (450 4.7.1, or 451 on database trouble).
 * charge: adds count after a message was accepted. Both do nothing unless
 * the session is authenticated. */
int rate_limit_check(struct session *s, size_t wanted);
void rate_limit_charge(struct session *s, size_t count);

/* harvest.c: unknown-recipient refusals per client address. blocked: 1
 * when the address is past harvest_limit (and not a relay_networks
 * client), else 0. count_refusal: one more. */
int harvest_blocked(struct session *s);
void harvest_count_refusal(struct session *s);

/* delivery.c */
enum cmd_result receive_message(struct session *s);

/* outbound.c: queues the staged message for the remote recipients (DKIM
 * signing it when one of our users sends it, SRS for forwarded mail). A
 * staging file still in memory is first moved to disk (*fd, staging).
 * Once the queue ids are known, and before anything is committed,
 * before_commit(ids, n) is called (when not NULL); when it fails, nothing
 * is queued. 0, or -1 with errno and nothing queued. */
struct queue_rcpt;
struct queue_entry;
struct header_field;
/* What else commits with the message: the copies of the lists it was
 * posted to (their own files and senders), and the writes that belong
 * with them (hook: confirmations used up; see queue_enqueue_batch). */
struct queue_extra {
	const struct queue_entry *entries;
	size_t n;
	int (*hook)(void *ctx);
	void *ctx;
};
int queue_outbound(struct session *s, const char *qid, int *fd, char *staging, size_t cap, off_t size,
		   int eight_bit, const char *sender, const struct queue_rcpt *remote, size_t nremote,
		   const struct queue_extra *extra,
		   int (*before_commit)(const char *const *ids, size_t n));
/* Lines longer than MESSAGE_LINE_MAX broken (LF SPACE) in a copy of fd
 * (staging file spool_dir/tmp/<name>): its fd, path in path, size in
 * *size; -1 when no line is too long (or trouble: logged). */
int message_wrap_copy(const char *name, int fd, off_t *size, char *path, size_t cap);
/* Takes back what the last queue_outbound queued (a local copy of the
 * same message could not be delivered after all). */
void queue_outbound_cancel(void);
/* RCPT to an SRS0 address of ours: 1 accepted (found[0] is the original
 * sender, *n = 1), 0 not SRS, -1 refused (replied). */
int rcpt_srs(struct session *s, const struct address *rcpt, const char *safe,
	     struct destination *found, size_t *n);

/* checks.c (checks.h): at MAIL, SPF of MAIL FROM and HELO; 0, or -1
 * after replying (spf_reject_fail). At the end of data, DKIM and DMARC:
 * 0 to deliver, the message in *fd/staging now carrying the
 * Authentication-Results field (*size, *lf_count updated); -1 after
 * replying (DMARC reject, or trouble). header_start: where the client's
 * header section begins (after our Received). */
int checks_mail_from(struct session *s, const struct address *sender);
int checks_message(struct session *s, const char *qid, int *fd, char *staging, size_t cap,
		   off_t header_start, off_t *size, unsigned long long *lf_count);

/* Replaces the staged message (fd, its path in staging, size, LF count)
 * by a copy with prefix (plen bytes, LF lines) on top and the fields
 * drop[] (read from it) left out, named qid.suffix in the spool. 0, or
 * -1 after replying (storage). */
int staged_edit(struct session *s, const char *qid, const char *suffix, const char *prefix,
		size_t plen, const struct header_field *const *drop, size_t ndrop, int *fd,
		char *staging, size_t cap, off_t *size, unsigned long long *lf_count);

/* spam.c: rspamd's verdict when the setting rspamd names its worker, on
 * mail from outside on the MX (and on our users' mail under
 * rspamd_outbound). 0 to deliver, the message in *fd/staging carrying
 * our X-Spam fields and rspamd's Subject when it marked it (*size,
 * *lf_count updated); -1 after replying (550 5.7.1 reject, 451 4.7.1
 * soft reject or greylist, 451 4.3.0 rspamd unwell under
 * rspamd_required, or storage trouble). */
int spam_filter_message(struct session *s, const char *qid, int *fd, char *staging, size_t cap,
			off_t *size, unsigned long long *lf_count);

#endif
