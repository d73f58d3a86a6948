#include "signing.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "base64.h"
#include "config.h"
#include "db.h"
#include "dkim.h"
#include "limits.h"
#include "log.h"

/* -- DKIM ------------------------------------------------------------------ */

/* The enabled keys of domain, Ed25519 last, into rows; how many. A row
 * whose selector does not fit gets an empty one (dkim_sign_with refuses
 * it, logged). */
static size_t key_rows(const char *domain, struct dkim_key_row *rows, size_t max)
{
	struct db_q *q = db_stmt(SQL_DKIM_KEYS);
	size_t n = 0;

	if (!q)
		return 0;
	db_bind_text(q, 1, domain);
	db_bind_int64(q, 2, DKIM_SIGN_MAX);
	while (n < max && db_step(q) == DB_ROW) {
		const char *sel = db_col_text(q, 0);
		const char *alg = db_col_text(q, 1);
		const char *path = db_col_text(q, 2);

		snprintf(rows[n].selector, sizeof(rows[n].selector), "%s",
			 sel && strlen(sel) < sizeof(rows[n].selector) ? sel : "");
		snprintf(rows[n].algorithm, sizeof(rows[n].algorithm), "%s", alg ? alg : "");
		snprintf(rows[n].path, sizeof(rows[n].path), "%s", path ? path : "");
		n++;
	}
	db_reset(q);
	return n;
}

/* Signs for domain (one we host) with its keys; hb is freed. */
static long sign_for(int fd, off_t size, struct header_block *hb, const char *domain, char *out,
		     size_t cap)
{
	/* not re-entered: called once per message being signed */
	static struct dkim_key_row rows[DKIM_SIGN_MAX];
	size_t n = key_rows(domain, rows, DKIM_SIGN_MAX);

	if (n == 0) {
		header_block_free(hb);
		return 0;
	}
	return dkim_sign_with(fd, size, hb, domain, rows, n, out, cap);
}

long signing_dkim(int fd, off_t size, char *out, size_t cap, char *domain)
{
	struct header_block hb;
	int r, local;

	domain[0] = '\0';
	r = dkim_sign_begin(fd, size, &hb);
	if (r <= 0)
		return r;
	local = dkim_author_domain(&hb, domain) ? domain_is_local(domain) : 0;
	if (local != 1) {
		header_block_free(&hb);
		return local < 0 ? -1 : 0;
	}
	return sign_for(fd, size, &hb, domain, out, cap);
}

long signing_dkim_as(int fd, off_t size, const char *domain, char *out, size_t cap)
{
	struct header_block hb;
	int r, local = domain_is_local(domain);

	if (local != 1)
		return local < 0 ? -1 : 0;
	r = dkim_sign_begin(fd, size, &hb);
	if (r <= 0)
		return r;
	return sign_for(fd, size, &hb, domain, out, cap);
}

/* -- SRS ------------------------------------------------------------------- */

static char secret[SRS_SECRET_MAX];

/* The secret: the setting, or (create) a new random one stored with an
 * upsert, so concurrent first uses agree on one. 1, 0 (none), -1. */
static int srs_secret(int create)
{
	unsigned char rnd[32];
	char fresh[64];
	struct db_q *q;
	enum db_rc rc;

	if (secret[0])
		return 1;
	if (setting(SET_SRS_SECRET)[0]) {
		snprintf(secret, sizeof(secret), "%s", setting(SET_SRS_SECRET));
		return 1;
	}
	if (!create)
		return 0;
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -1;
	base64_encode(rnd, sizeof(rnd), fresh, sizeof(fresh));
	if (db_begin() < 0)
		return -1;
	q = db_stmt(SQL_SRS_SECRET_INSERT);
	if (!q)
		goto fail;
	db_bind_text(q, 1, fresh);
	rc = db_step(q);
	db_reset(q);
	if (rc != DB_DONE)
		goto fail;
	q = db_stmt(SQL_SRS_SECRET_SELECT);
	if (!q)
		goto fail;
	if (db_step(q) == DB_ROW)
		db_col_copy(q, 0, secret, sizeof(secret));
	db_reset(q);
	if (db_commit() < 0 || !secret[0]) {
		secret[0] = '\0';
		return -1;
	}
	explicit_bzero(rnd, sizeof(rnd));
	log_event(LOG_NOTICE, "event=srs result=secret_created");
	return 1;
fail:
	db_rollback();
	return -1;
}

int signing_srs_forward(const struct address *sender, const char *srs_domain, int sender_trusted,
			char *out, size_t cap)
{
	int local;

	if (sender->is_null || !sender->domain[0] || sender->is_literal)
		return 0;
	local = sender_trusted ? domain_is_local(sender->domain) : 0;
	if (local != 0)
		return local < 0 ? -1 : 0;
	if (srs_secret(1) < 0) {
		log_event(LOG_ERR, "event=srs result=error error=\"cannot make or read srs_secret\"");
		return -1;
	}
	return srs_forward(sender, srs_domain, secret, out, cap);
}

enum srs_result signing_srs_reverse(const struct address *rcpt, char *out, size_t cap)
{
	int n;

	if (!srs_is_srs0(rcpt))
		return SRS_NOT_SRS;
	n = domain_is_local(rcpt->domain);
	if (n <= 0)
		return n < 0 ? SRS_TEMPFAIL : SRS_NOT_SRS;
	if (srs_secret(0) < 0)
		return SRS_TEMPFAIL;
	return srs_reverse(rcpt, secret, out, cap);
}
