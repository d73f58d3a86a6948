/* DKIM (RFC 6376, RFC 8463, RFC 8301): signing of mail that leaves for a
 * remote recipient, and verification of mail that comes in. The crypto
 * is GnuTLS's, loaded with dlopen only when a message is signed or
 * carries a signature (tls-crypto.h). Messages are the spool's LF form;
 * the canonical forms are computed with CRLF, as on the wire. */
#ifndef POSTAGE_DKIM_H
#define POSTAGE_DKIM_H

#include <stddef.h>
#include <sys/types.h>

#include "headers.h"
#include "limits.h"

/* One key to sign with: a row of dkim_keys that the caller read
 * (compose/signing.c); nothing here reads the database. */
struct dkim_key_row {
	char selector[64];
	char algorithm[32];
	char path[PATH_MAX_POSTAGE];
};

/* The header section of the message in fd (size bytes, LF form) into hb,
 * to sign it: 1, 0 when there is nothing to sign (a header section too
 * big: logged), -1 on a read error (logged). */
int dkim_sign_begin(int fd, off_t size, struct header_block *hb);

/* The domain of hb's From: field when it holds one address, into domain:
 * 1, or 0 (no From:, several, or several addresses: nothing to sign
 * for; domain is then empty). */
int dkim_author_domain(const struct header_block *hb, char domain[ADDRESS_DOMAIN_MAX + 1]);

/* The DKIM-Signature fields for the message in fd (size bytes, LF form,
 * its header section in hb), one per usable key of rows (at most
 * DKIM_SIGN_MAX), all signing for domain: relaxed/relaxed, the header
 * fields of RFC 6376 5.4.1 that are present, From signed once more than
 * it occurs (so none can be added). Written into out (cap bytes, folded,
 * LF line ends). Returns the length; 0 when there is nothing to sign
 * with (no key, a key that cannot be used: logged); -1 on error
 * (logged). hb is freed. */
long dkim_sign_with(int fd, off_t size, struct header_block *hb, const char *domain,
		    const struct dkim_key_row *rows, size_t nrows, char *out, size_t cap);

enum dkim_result {
	DKIM_NONE = 0,
	DKIM_PASS,
	DKIM_FAIL,
	DKIM_NEUTRAL,
	DKIM_TEMPERROR,
	DKIM_PERMERROR,
};

struct dkim_verdict {
	enum dkim_result result;
	char domain[ADDRESS_DOMAIN_MAX + 1]; /* d= (lower-cased) */
	char selector[64];                   /* s= */
	char algorithm[32];                  /* a= */
	char b[12];                          /* the first 8 characters of b= (RFC 6008) */
	const char *reason;                  /* for the Authentication-Results comment */
};

/* Verifies each DKIM-Signature field of hb (at most max, up to
 * DKIM_VERIFY_MAX) against the message in fd; key lookups end at
 * deadline (dns.h). Returns the number of verdicts written. */
size_t dkim_verify(int fd, const struct header_block *hb, struct dkim_verdict *out, size_t max,
		   long long deadline);

const char *dkim_result_name(enum dkim_result r);

/* For tests: the SHA-256 body hash of fd's bytes [from, to) (LF form),
 * canonicalised relaxed or simple (RFC 6376 3.4.3/3.4.4) and cut after
 * limit octets (~0ULL: all). 0, or -1 (GnuTLS unavailable, read error). */
int dkim_body_hash(int fd, off_t from, off_t to, int relaxed, unsigned long long limit,
		   unsigned char digest[32]);
/* For tests: the canonical form of one field (raw, LF folds) with its
 * CRLF, into out. The length, or -1 when it does not fit. */
long dkim_canon_header(int relaxed, const char *raw, size_t len, char *out, size_t cap);

/* Tag lists, "name=value; name=value" (RFC 6376 3.2, also DMARC's
 * records): values point into the parsed text, FWS around them trimmed. */
struct tag {
	char name[16];
	const char *value;
	size_t len;
};
/* 0, or -1 when malformed (a bad name, a duplicate, more than TAGS_MAX). */
int tags_parse(const char *s, size_t len, struct tag *tags, size_t *n);
const struct tag *tag_get(const struct tag *tags, size_t n, const char *name);
/* The value is exactly value (case-insensitive). */
int tag_is(const struct tag *t, const char *value);
/* The value without FWS into out; -1 when it does not fit. */
int tag_copy(const struct tag *t, char *out, size_t cap);

#endif
