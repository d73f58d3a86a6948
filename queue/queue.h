/* The queue runner's parts: the run (runner.c, with a child's delivery
 * in deliver.c and the bounces, removal and sweep in housekeeping.c;
 * runner.h is theirs), the SMTP client (client.c), MX and address
 * lookup (dns.c) and delivery status notifications (dsn.c). */
#ifndef POSTAGE_QUEUE_H
#define POSTAGE_QUEUE_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>
#include <time.h>

#include "io.h"
#include "limits.h"
#include "spool.h"

/* ---- the outcome of one recipient ---------------------------------- */

enum outcome { OUTCOME_SENT = 0, OUTCOME_TEMP, OUTCOME_PERM };

/* Why a recipient ended as it did: the remote server's reply (remote set,
 * with the host that said it), or postage's own reason. */
struct status_text {
	enum outcome outcome;
	char status[16];                      /* RFC 3463 enhanced code, "5.1.1" */
	char text[CLIENT_REPLY_TEXT_MAX + 1]; /* "550 5.1.1 <bob@x>: user unknown" */
	char command[16];                     /* what it answered: "RCPT TO", "end of DATA" */
	char mta[ADDRESS_DOMAIN_MAX + 72];    /* "name[ip]" when remote, else "" */
};

/* Fills st for a reason of our own (no remote reply). */
void status_set_local(struct status_text *st, enum outcome o, const char *status,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* ---- dns.c ---------------------------------------------------------- */

enum mx_result {
	MX_OK = 0,
	MX_TEMPFAIL,   /* try later */
	MX_NOTFOUND,   /* no such domain, or no MX and no address: permanent */
	MX_NULLMX,     /* RFC 7505: the domain takes no mail */
};

struct mx_host {
	char name[ADDRESS_DOMAIN_MAX + 1];
	int preference;
};

/* MX hosts of domain by preference, random among equals; when the domain
 * has no MX, the domain itself (RFC 5321 5.1) and *implicit set. */
enum mx_result dns_mx_lookup(const char *domain, struct mx_host *out, size_t max, size_t *n,
			      int *implicit, struct status_text *why);

struct host_address {
	struct sockaddr_storage sa;
	socklen_t len;
	char ip[64];
};

/* Addresses of host (a name or a literal IP) with getaddrinfo AF_UNSPEC.
 * MX_NOTFOUND when the name has none. */
enum mx_result dns_host_addresses(const char *host, struct host_address *out, size_t max,
				   size_t *n, struct status_text *why);

/* ---- client.c ------------------------------------------------------- */

/* Extensions the server announced in its EHLO reply. */
enum {
	EXT_STARTTLS = 1 << 0,
	EXT_SIZE = 1 << 1,
	EXT_8BITMIME = 1 << 2,
	EXT_PIPELINING = 1 << 3,
	EXT_SMTPUTF8 = 1 << 4,
	EXT_AUTH_PLAIN = 1 << 5,
	EXT_AUTH_LOGIN = 1 << 6,
};

/* What a connection demands of TLS: relayhost_tls for the relayhost,
 * "may" for MX delivery. */
enum tls_level {
	TLS_LEVEL_MAY = 0,  /* STARTTLS when offered, else (or after a failed handshake) plain text */
	TLS_LEVEL_ENCRYPT,  /* TLS or nothing; any certificate */
	TLS_LEVEL_VERIFY,   /* TLS with a certificate that is trusted and names the next hop */
};

struct client_tls_policy {
	enum tls_level level;
	const char *ca_file;           /* trusted besides the system's CAs; "" for none */
	/* The name (or IP address) the certificate must carry: the relayhost
	 * as configured. The host connected to counts as well when it lies
	 * within that name's domain (an MX host of "host:port"). NULL: the
	 * host connected to (MX delivery). */
	const char *nexthop;
};

struct smtp_client {
	struct io io;
	int fd;
	char host[ADDRESS_DOMAIN_MAX + 1];
	char ip[64];
	int port;
	unsigned ext;
	unsigned long long size_max;   /* SIZE n; 0 when none */
	int tls;
	int tls_verified;              /* the certificate is trusted and names the next hop */
	char tls_info[160];
	char tls_unverified[200];      /* why not, when not */
	enum tls_level tls_level;      /* what this connection was opened to demand */
	int transactions;              /* on this connection, for RSET before the next */
	int loops;                     /* greeted with our own hostname: it is us */
	int broken;                    /* unusable: close, do not reuse */
};

/* A smarthost's login (relayhost_login/relayhost_password); login is ""
 * when none is set. */
struct client_auth {
	const char *login;
	const char *password;
};

/* How a connection gets TLS. */
enum client_tls {
	CLIENT_TLS_STARTTLS = 0, /* STARTTLS whenever offered (opportunistic) */
	CLIENT_TLS_NONE,         /* not at all: the retry after a failed handshake */
	CLIENT_TLS_IMPLICIT,     /* TLS from the first byte (a relayhost on port 465, RFC 8314) */
};

/* Connects to one address of host and runs greeting, EHLO, TLS as tls
 * says, and AUTH. 0 when ready for a transaction; -1 with the reason in
 * why (temporary, but for a server that greets with our own hostname:
 * c->loops set, 5.4.6), and *tls_failed set when a STARTTLS handshake
 * itself failed (then the caller may try the same address once more
 * without TLS, when policy->level is "may"). TLS that policy does not
 * accept ends the connection before AUTH or MAIL (4.7.5). */
int client_open(struct smtp_client *c, const char *host, const struct host_address *addr,
		int port, enum client_tls tls, const struct client_tls_policy *policy,
		const struct client_auth *auth, struct status_text *why, int *tls_failed);

struct outbound {
	const char *id;
	const char *sender;
	int fd;                        /* the spool file, LF form */
	unsigned long long size;       /* its bytes */
	unsigned long long wire_size;  /* bytes with CRLF: for SIZE= */
	int body_8bit;
	int smtputf8;
};

/* One transaction for n recipients (at most CLIENT_RCPTS_PER_TRANSACTION):
 * MAIL, RCPT, DATA, with PIPELINING when offered. Fills result[i] for
 * every recipient. */
void client_transaction(struct smtp_client *c, const struct outbound *m, const char *const *rcpts,
			size_t n, struct status_text *result);

/* QUIT (when usable) and close. */
void client_close(struct smtp_client *c);

/* ---- dsn.c ---------------------------------------------------------- */

enum dsn_kind { DSN_FAILED, DSN_DELAYED };

struct dsn_rcpt {
	const char *recipient;
	const char *orig_rcpt;   /* may be NULL */
	const char *status;      /* "5.1.1" */
	const char *text;        /* reply or reason */
	const char *command;     /* may be "" */
	const char *mta;         /* "name[ip]" or "" */
	int expired;             /* failed because the queue lifetime ran out */
};

struct dsn_message {
	const char *id;
	const char *sender;
	long long created_at;
	long long give_up_at;    /* for a delay warning */
	long long lifetime_hours;
};

/* Makes an RFC 3464 report for the sender of m about the recipients, and
 * delivers it: into the sender's Maildir when the sender is ours, else
 * through the queue. 0 done (or dropped on purpose, logged), -1 try again
 * on the next pass. */
int dsn_send(enum dsn_kind kind, const struct dsn_message *m, const struct dsn_rcpt *rcpts,
	     size_t n);

/* ---- runner.c ------------------------------------------------------- */

struct runner_options {
	int once;
	long long now;          /* 0: the clock */
};

/* Lock, then passes over what is due. 0 done (or another runner holds the
 * lock), -1 trouble. */
int runner_run(const struct runner_options *opt);

/* The pass's idea of now (--now, else the clock). */
long long queue_now(void);

#endif
