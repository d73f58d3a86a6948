/* Mail addresses: parse a path (RFC 5321 4.1.2, RFC 6531 for UTF-8),
 * normalise it, and resolve a recipient through addresses, forwards and
 * catch-alls. */
#ifndef POSTAGE_ADDRESS_H
#define POSTAGE_ADDRESS_H

#include <stddef.h>

#include "limits.h"

struct address {
	char local[ADDRESS_PATH_MAX + 1];  /* as it goes on the wire (quoted if needed) */
	char domain[ADDRESS_DOMAIN_MAX + 1]; /* lower-cased ASCII */
	int is_null;                       /* <> */
	int is_postmaster;                 /* <postmaster>, no domain */
	int is_literal;                    /* domain is an address literal [..] */
	int non_ascii;                     /* UTF-8 in local part or domain */
};

enum address_parse {
	ADDRESS_OK = 0,
	ADDRESS_SYNTAX,    /* malformed */
	ADDRESS_TOOLONG,   /* over the RFC 5321 4.5.3.1 sizes */
	ADDRESS_NEED_UTF8, /* non-ASCII without SMTPUTF8 */
};

/* Parses "<path>" at arg (leading spaces allowed); *rest points after '>'.
 * A source route (@a,@b:) is dropped. allow_null lets "<>" through;
 * allow_utf8 accepts UTF-8 (SMTPUTF8 given). */
enum address_parse address_parse_path(const char *arg, int allow_null, int allow_utf8,
				      struct address *out, const char **rest);
/* Parses a bare "local@domain" (no brackets), e.g. a forward target. */
enum address_parse address_parse_plain(const char *s, int allow_utf8, struct address *out);

/* "local@domain" (or "" for the null path) into buf. */
void address_format(const struct address *a, char *buf, size_t cap);

/* Domain syntax check (labels of letters, digits, '-', UTF-8 when allowed,
 * or an address literal). */
int address_domain_valid(const char *d, size_t len, int allow_utf8);

/* For the paths whose local part may pass 64 octets (an SRS address, a
 * list's VERP address: RFC 5321 4.5.3.1 asks servers to take longer ones
 * where they can), the path from p to close (its '>'), its '@' at at
 * (NULL: there was none): ADDRESS_SYNTAX without '@'; ADDRESS_TOOLONG
 * when the local part and the domain do not fit a path, or the local part
 * starts or ends with a dot; else ADDRESS_OK. The caller checks the
 * characters. */
enum address_parse address_long_path_check(const char *p, const char *at, const char *close);

/* out from such a path (checked, its domain valid): the local part as it
 * is, the domain lower-cased; the rest of out zero. */
void address_long_path_take(struct address *out, const char *p, const char *at,
			    const char *close);

/* A well-formed UTF-8 sequence starting at s (within n bytes, s[0] >=
 * 0x80): its length, or 0. Overlongs and surrogates are refused. */
size_t utf8_seq(const unsigned char *s, size_t n);

/* Is domain one we host? 1 yes, 0 no, -1 database trouble. */
int domain_is_local(const char *domain);

enum destination_kind { DEST_MAILBOX, DEST_REMOTE, DEST_LIST };

struct destination {
	enum destination_kind kind;
	char mailbox[ADDRESS_LOCAL_MAX + 1];           /* DEST_MAILBOX */
	char address[ADDRESS_PATH_MAX + 1];            /* DEST_REMOTE; DEST_LIST: the list */
	long long quota_bytes;                         /* -1: none */
	int enabled;
	int forwarded;  /* DEST_REMOTE reached through forwards (SRS applies) */
	int list_role;  /* DEST_LIST: enum list_role (list.h) */
	char list_arg[ADDRESS_PATH_MAX + 1];           /* DEST_LIST: member or token */
};

enum resolve_result {
	RESOLVE_OK = 0,
	RESOLVE_UNKNOWN,   /* hosted domain, nobody there */
	RESOLVE_NOT_LOCAL, /* a domain we do not host */
	RESOLVE_LOOP,      /* only forwarding loops */
	RESOLVE_TEMPFAIL,  /* database trouble */
};

/* Resolves a recipient, in order: addresses, forwards (recursively, with
 * a depth limit and loop detection), a mailing list's addresses (list.h:
 * DEST_LIST; <list>-owner@ resolves to the owner), the domain's
 * catch-all. Adds at most max destinations to out (deduplicated) and
 * sets *n. */
enum resolve_result resolve_recipient(const struct address *rcpt, struct destination *out,
				      size_t max, size_t *n);

/* Mailbox that owns an address (exact, or the domain's catch-all), for
 * sender checks; 1 found, 0 not, -1 database trouble. */
int address_owner(const struct address *a, char *login, size_t cap);

#endif
