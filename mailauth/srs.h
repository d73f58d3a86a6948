/* SRS, the Sender Rewriting Scheme: mail that a forward sends on to a
 * remote address leaves with an envelope sender in our domain, so SPF
 * passes at the next hop, and bounces to it come back to us, are checked
 * and go on to the original sender.
 *
 *   SRS0=HHHHHHHH=TT=domain=local@our-domain
 *
 * HHHHHHHH: the first 40 bits of HMAC-SHA256(srs_secret, lower-cased
 * "TT=domain=local") in base32, so an MTA that changes the case of the
 * address does not break it; TT: the day it was made, base32 of days
 * since 1970 modulo 1024 (as in libsrs2). The secret is the caller's
 * (compose/signing.c keeps it in the settings, made at random on first
 * use); nothing here reads the database. */
#ifndef POSTAGE_SRS_H
#define POSTAGE_SRS_H

#include <stddef.h>

#include "address.h"

/* The SRS form of sender in srs_domain under secret, into out (cap
 * bytes). 1 when rewritten; 0 when sender stays as it is (null, quoted,
 * too long: logged); -1 on trouble (logged; the caller keeps the
 * sender). Whether a sender in one of our own domains is rewritten is
 * the caller's choice. */
int srs_forward(const struct address *sender, const char *srs_domain, const char *secret, char *out,
		size_t cap);

enum srs_result {
	SRS_NOT_SRS = 0, /* not an SRS0 address of one of our domains */
	SRS_OK,          /* verified: the original sender is in out */
	SRS_FORGED,      /* malformed, or the hash does not match */
	SRS_EXPIRED,     /* older than SRS_MAX_AGE_DAYS */
	SRS_TEMPFAIL,    /* database or crypto trouble */
};

/* Whether a has the SRS0= form (whatever its domain). */
int srs_is_srs0(const struct address *a);

/* For RCPT: reverses rcpt, an SRS0 address in a domain we host (the
 * caller checked the domain), with secret (NULL or empty: none was ever
 * made, so it is forged), into out (cap bytes). */
enum srs_result srs_reverse(const struct address *rcpt, const char *secret, char *out, size_t cap);

/* Parses a path "<SRS0=...@domain>" (or SRS1=) whose local part is longer
 * than the 64 octets address_parse_path accepts: SRS addresses often are,
 * and RFC 5321 4.5.3.1 asks servers to accept longer ones where they
 * can. Same contract as address_parse_path; ADDRESS_TOOLONG when it is
 * not such an address. */
enum address_parse srs_parse_path(const char *arg, struct address *out, const char **rest);

#endif
