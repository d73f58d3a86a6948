/* The message on the wire and on disk: the DATA reader (only <CRLF>.<CRLF>
 * ends it; bare CR or LF is refused; dot-unstuffing; CRLF to LF; a header
 * scan that counts Received lines), and the reverse for sending (LF to
 * CRLF, dot-stuffing), used by POP3 RETR/TOP and the queue's SMTP client. */
#ifndef POSTAGE_MESSAGE_H
#define POSTAGE_MESSAGE_H

#include <stddef.h>

#include "limits.h"

struct data_reader {
	int at_line_start;   /* the last byte seen ended a CRLF */
	int pending_cr;      /* a CR ended the last chunk: LF must follow */
	int in_headers;
	int received;        /* Received: headers in the header section */
	int bare;            /* a bare CR or LF was seen */
	int has_nul;
	int eight_bit;       /* a byte >= 0x80 was seen */
	int ended;           /* the terminator was read */
	unsigned long long wire_bytes; /* message octets as sent (CRLF, unstuffed) */
	unsigned long long lf_count;   /* LFs written in LF form */
};

void data_reader_init(struct data_reader *r);

/* Feeds one chunk as io_read_chunk returns it (it ends at an LF or at the
 * chunk cap). Writes the LF form into out (room for len bytes) and returns
 * how many bytes; sets r->ended at the terminator. */
size_t data_feed(struct data_reader *r, const char *chunk, size_t len, char *out);

/* Breaking lines longer than MESSAGE_LINE_MAX in the LF form: LF SPACE is
 * inserted, which folds a header field and keeps a MIME body readable
 * (what Postfix does); a line of MESSAGE_LINE_MAX or fewer is untouched.
 * The state carries between calls: start it zeroed. out needs room for
 * 2 * len + 16 bytes. Returns the bytes written; line_wrap_finish writes
 * what is held at the end (out: 16 bytes). */
struct line_wrap {
	size_t col;                /* bytes of the current line written */
	char hold[MESSAGE_LINE_BREAK_SLACK + 1]; /* its bytes past the slack mark */
	size_t nhold;
	unsigned long long breaks; /* inserted so far */
};
size_t line_wrap_feed(struct line_wrap *w, const char *in, size_t len, char *out);
size_t line_wrap_finish(struct line_wrap *w, char *out);

/* LF form to wire form: LF becomes CRLF (a CRLF stays as it is), a '.' at
 * a line start is doubled. out needs room for 2 * len bytes.
 * at_line_start carries state between calls: start it at 1; it is 1 after
 * a line end, 2 after a CR, else 0. */
size_t wire_encode(int *at_line_start, const char *in, size_t len, char *out);

/* Splits a command line into verb (upper-cased into verb, at most cap-1
 * octets) and argument (after one space, or "" ). Returns 0, or -1 when the
 * verb is empty or too long. */
int command_split(const char *line, char *verb, size_t cap, const char **arg);

/* ESMTP parameters after a path: "KEY=VALUE KEY2" (RFC 5321 4.1.2).
 * Calls back per parameter with key (upper-cased) and value (NULL when
 * none). Stops at the first callback that returns nonzero, returning it;
 * -1 on malformed syntax. */
int esmtp_params(const char *s, int (*each)(void *ctx, const char *key, const char *value),
		 void *ctx);

#endif
