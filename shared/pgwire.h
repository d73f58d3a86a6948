/* A PostgreSQL client for db.c's second engine (issue 25): the frontend/
 * backend protocol 3.0 (PostgreSQL's documentation, chapter 55) over a
 * unix socket or TCP, with no library to load. libpq costs a handler
 * about 3 ms of dlopen (it pulls in OpenSSL, Kerberos and LDAP) where the
 * budget is 0.3 ms, and a handler needs only this much of it: connect,
 * authenticate (trust, password, MD5, SCRAM-SHA-256), run one statement
 * with parameters (Parse, Bind, Execute, Sync on the unnamed statement,
 * which pgbouncer passes in transaction mode), read its rows as text.
 * No TLS: the connection is to a local pgbouncer or PostgreSQL socket.
 *
 * Every read is bounded in length (PGWIRE_MESSAGE_MAX, PGWIRE_RESULT_MAX)
 * and in time (the caller's deadline). */
#ifndef POSTAGE_PGWIRE_H
#define POSTAGE_PGWIRE_H

#include <stddef.h>
#include <stdint.h>

/* One cell of a result: value at buf + off (NUL-terminated), len bytes,
 * or len -1 for NULL. */
struct pgwire_cell {
	uint32_t off;
	int32_t len;
};

struct pgwire_result {
	int ncols, nrows;
	char *buf;                 /* the values, each NUL-terminated */
	size_t used, cap;
	struct pgwire_cell *cells; /* nrows * ncols */
	size_t ncells, cellcap;
	char tag[64];              /* CommandComplete: "INSERT 0 1", "COMMIT" */
	char sqlstate[6];          /* "" unless failed */
	char error[256];           /* the server's message, or ours */
	int failed;
};

/* The parts of a postgresql:// URI that matter here. */
struct pgwire_target {
	char host[256];     /* a directory (unix socket) or a name/address */
	char port[8];
	char user[64];
	char password[256];
	char dbname[64];
	int connect_timeout_ms;
};

/* Parses postgresql://user:password@host:port/dbname?host=/dir&port=N&
 * user=&password=&dbname=&connect_timeout=S (percent-decoded). Missing
 * parts: host /run/postgresql, port 5432, user the process's user,
 * dbname the user. 0, or -1 when it is not such a URI. */
int pgwire_parse_uri(const char *uri, struct pgwire_target *t);
/* 1 when s starts with postgresql:// or postgres:// */
int pgwire_is_uri(const char *s);

/* Connects and authenticates; 0, or -1 with the reason in err. */
int pgwire_connect(const struct pgwire_target *t, char *err, size_t errlen);
/* 1 while the connection is usable. */
int pgwire_connected(void);
/* 'I' idle, 'T' in a transaction, 'E' in a failed one, 0 not connected. */
char pgwire_tx_status(void);
void pgwire_close(void);

/* Runs sql with n parameters (vals[i] NULL for NULL; fmts[i] 1 for
 * binary, lens[i] its length) to its end, its rows into r (reset first).
 * 0 when the server ran it; -1 otherwise, with r->failed, r->sqlstate
 * ("08006" when the connection failed, which is then closed) and
 * r->error. */
int pgwire_exec(const char *sql, int n, const char *const *vals, const int *lens,
		const int *fmts, struct pgwire_result *r);

void pgwire_result_clear(struct pgwire_result *r);
void pgwire_result_free(struct pgwire_result *r);
/* The cell's text (NULL for NULL) and length. */
const char *pgwire_value(const struct pgwire_result *r, int row, int col, int *len);

/* For the fuzz target: one backend message (type, body of len bytes)
 * into r as a statement's reply would. 0, or -1 when malformed. */
int pgwire_feed(struct pgwire_result *r, char type, const unsigned char *body, size_t len);
/* For the fuzz target: checks a SCRAM server-first message against the
 * client nonce; fills nonce (cap), salt (decoded, cap), *iterations.
 * 0 or -1. */
int pgwire_scram_parse_first(const char *msg, const char *cnonce, char *nonce, size_t noncecap,
			     unsigned char *salt, size_t saltcap, size_t *saltlen,
			     unsigned *iterations);

#endif
