/* Our keys on our mail: DKIM signatures made with the keys that the
 * dkim_keys rows name, and SRS addresses made and checked with the
 * srs_secret setting (made at random and stored on first use). Here the
 * database meets mailauth/'s algorithms, which are given keys and
 * secrets and read nothing themselves. */
#ifndef POSTAGE_SIGNING_H
#define POSTAGE_SIGNING_H

#include <stddef.h>
#include <sys/types.h>

#include "address.h"
#include "srs.h"

/* The DKIM-Signature fields for the message in fd (size bytes, LF form),
 * one per enabled row of dkim_keys for the domain of its From: field when
 * we host that domain (dkim_sign_with says how). Returns the length; 0
 * when there is nothing to sign with (no key, a From: we do not host, a
 * key that cannot be used: logged); -1 on error (logged). The domain used
 * goes to domain (cap ADDRESS_DOMAIN_MAX + 1). */
long signing_dkim(int fd, off_t size, char *out, size_t cap, char *domain);

/* The same, signed by domain (one we host) whatever the From: field says:
 * a mailing list signs its copies by its own domain (a second signature
 * beside the poster's own, or the only one once From: is the list's). */
long signing_dkim_as(int fd, off_t size, const char *domain, char *out, size_t cap);

/* srs_forward with our secret (made now if there is none yet). A sender
 * in one of our own domains stays as it is when sender_trusted says the
 * client had the right to send it: SPF passes as it is. From anyone else
 * it is forged, and rewritten like any other, so our SPF record does not
 * vouch for it further on. 1 rewritten, 0 kept, -1 trouble (logged). */
int signing_srs_forward(const struct address *sender, const char *srs_domain, int sender_trusted,
			char *out, size_t cap);

/* srs_reverse for an SRS0 address in a domain we host (else
 * SRS_NOT_SRS), with our secret. */
enum srs_result signing_srs_reverse(const struct address *rcpt, char *out, size_t cap);

#endif
