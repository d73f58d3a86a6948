/* What the queue runner's own files share: runner.c (a run and its
 * passes: what is due, the delivery children, recording what they
 * report), deliver.c (a child's delivery to one destination) and
 * housekeeping.c (bounces, delay warnings, removal of finished messages,
 * the sweep of what a crash left). */
#ifndef POSTAGE_QUEUE_RUNNER_H
#define POSTAGE_QUEUE_RUNNER_H

#include <stddef.h>

#include "queue.h"

/* ---- what a pass works on ------------------------------------------- */

struct relay {
	int set;
	int bad;                          /* relayhost is malformed */
	char host[ADDRESS_DOMAIN_MAX + 1];
	int port;
	int no_mx;                        /* [host]: used as given */
};

struct qmsg {
	char id[QUEUE_ID_LEN + 1];
	char sender[ADDRESS_PATH_MAX + 1];
	long long created_at;
	unsigned long long size;
	int body_8bit, smtputf8;
	int verp;                         /* a list's copies: one sender per recipient */
	int missing;                      /* its queue file is gone */
	int held;                         /* waits for its journal */
};

struct qrcpt {
	size_t msg;                       /* index into msgs */
	size_t order;                     /* as selected, for a stable sort */
	char recipient[ADDRESS_PATH_MAX + 1];
	char orig_rcpt[ADDRESS_PATH_MAX + 1]; /* VERP: the member the copy is for */
	char nexthop[ADDRESS_DOMAIN_MAX + 1]; /* domain, or "" for the relayhost */
	int attempts;
	int reported;
};

struct pass {
	struct qmsg *msgs;
	size_t nmsgs;
	struct qrcpt *rcpts;
	size_t nrcpts;
	struct relay relay;
	struct client_auth auth;
	struct client_tls_policy relay_tls; /* what the relayhost's TLS must be */
	long long lifetime;               /* seconds */
};

/* What a child tells the parent about one recipient: a fixed-size record
 * on the child's own pipe. */
struct report {
	size_t index;
	char id[QUEUE_ID_LEN + 1];
	struct status_text st;
	char relay[ADDRESS_DOMAIN_MAX + 80]; /* "host[ip]:port" or "none" */
	char tls[160];                       /* "" when none */
	int tls_verified;
};

/* ---- runner.c ------------------------------------------------------- */


/* ---- deliver.c ------------------------------------------------------ */

/* In a child process: sends p's recipients start to end (one nexthop)
 * over one reused connection, and writes a struct report for each on
 * the pipe out. */
void deliver_destination(const struct pass *p, size_t start, size_t end, int out);

/* ---- housekeeping.c ------------------------------------------------- */

void send_bounces(const struct pass *p);
void send_delay_warnings(const struct pass *p);
void remove_finished(void);
void sweep_orphans(void);

#endif
