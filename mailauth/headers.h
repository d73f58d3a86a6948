/* The header section of a stored message (LF line ends, as in the spool
 * and the Maildirs): read once into a bounded buffer and split into
 * fields, for DKIM and DMARC; and a copy of a staged message with fields
 * added on top or dropped (DKIM-Signature, Authentication-Results). */
#ifndef POSTAGE_HEADERS_H
#define POSTAGE_HEADERS_H

#include <stddef.h>
#include <sys/types.h>

#include "limits.h"

struct header_field {
	const char *name;   /* into the block's buffer */
	size_t name_len;
	const char *value;  /* after the colon, folds included */
	size_t value_len;   /* up to the field's final LF, not including it */
	const char *raw;    /* the whole field */
	size_t raw_len;     /* including its final LF */
	off_t offset;       /* of raw in the file */
};

struct header_block {
	char *buf;          /* the header section (malloc'd) */
	size_t len;
	off_t start;        /* file offset of buf[0] */
	off_t body;         /* file offset of the body; the file size when none */
	off_t size;         /* the file size */
	struct header_field *fields;
	size_t n;
};

/* Reads the header section of the message in fd (size bytes) beginning at
 * file offset start: fields up to the empty line, or up to the first line
 * that is neither a field nor a fold (then the body begins there). 0, or
 * -1 with errno (EFBIG: more than MESSAGE_HEADER_MAX bytes or
 * MESSAGE_HEADER_FIELDS_MAX fields). */
int header_block_read(int fd, off_t start, off_t size, struct header_block *hb);
void header_block_free(struct header_block *hb);

/* Is field f named name (case-insensitive)? */
int header_is(const struct header_field *f, const char *name);

/* The next field named name after index *pos (start *pos at -1); NULL
 * when none is left. */
const struct header_field *header_next(const struct header_block *hb, const char *name, long *pos);

/* Unfolds and trims a field value into out (cap bytes): CR and LF
 * removed, each run of spaces and tabs made one space, leading and
 * trailing space dropped. Returns the length, or -1 when it does not fit. */
long header_value_flat(const struct header_field *f, char *out, size_t cap);

/* The mailboxes (addr-specs, "local@domain") of an address-list field
 * such as From:, Sender: or Resent-From: (RFC 5322 3.4: display names,
 * comments, quoted strings and groups allowed), at most max into out; a
 * quoted local part keeps its quotes. Returns how many. *malformed is set
 * when an element is not a mailbox whose domain is valid, or more than
 * max are there: a caller that must see every author refuses then. */
size_t header_mailboxes(const struct header_field *f, char (*out)[ADDRESS_PATH_MAX + 1],
			size_t max, int *malformed);

/* The distinct domains of the mailboxes in an address-list field such
 * as From: (RFC 5322 3.4: display names, comments, quoted strings, groups
 * and the obsolete spaces allowed; a malformed mailbox gives every
 * address it holds), lower-cased, at most max of them into out. Returns
 * how many; a mailbox without a valid domain is skipped. *unchecked (may
 * be NULL) counts the mailboxes left out: of a domain beyond the first
 * max, or longer than HEADER_MAILBOX_MAX. */
size_t header_address_domains(const struct header_field *f, char (*out)[ADDRESS_DOMAIN_MAX + 1],
			      size_t max, size_t *unchecked);

#endif
