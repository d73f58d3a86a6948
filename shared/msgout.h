#ifndef POSTAGE_MSGOUT_H
#define POSTAGE_MSGOUT_H

/* A message that postage writes itself (a bounce, a delay warning, a
 * list's notice) going into a spool file: a buffered writer that counts
 * what the Maildir name and the queue need (bytes, LFs, whether any byte
 * is 8-bit). The first write error is kept; later writes do nothing. */

#include <stddef.h>
#include <sys/types.h>

struct msg_out {
	int fd;
	int drop_cr; /* drop CRs: text that may hold CRLF, into the spool's LF form */
	int error;   /* the first errno, or 0 */
	int eight_bit;
	unsigned long long total, lfs;
	size_t len;
	char buf[8192];
};

void msg_out_init(struct msg_out *o, int fd, int drop_cr);
void msg_out_write(struct msg_out *o, const char *p, size_t n);
/* One formatted piece (up to 4 KiB; longer is cut). */
void msg_out_printf(struct msg_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Bytes [from, to) of fd. */
void msg_out_copy(struct msg_out *o, int fd, off_t from, off_t to);
/* Writes out what is buffered; 0, or -1 (o->error says why). */
int msg_out_flush(struct msg_out *o);

/* t (seconds since 1970) as an RFC 5322 date-time, local time. */
void rfc5322_date(long long t, char *buf, size_t cap);
#endif
