/* The POP3 maildrop: one mailbox's Maildir, locked for the session, with
 * new/ moved into cur/ and a snapshot of cur/ taken at login. Messages
 * delivered later are seen by the next session; only QUIT deletes. */
#ifndef POSTAGE_POP3_MAILDROP_H
#define POSTAGE_POP3_MAILDROP_H

#include <stddef.h>

#include "io.h"
#include "limits.h"

/* The lock file inside the Maildir: a dot file, so Dovecot and Courier
 * ignore it. flock() on it dies with the process, however it ends. */
#define MAILDROP_LOCK_NAME ".postage-pop3.lock"

struct pop3_message {
	char *name;                 /* file name in cur/ */
	char uid[POP3_UID_MAX + 1]; /* postage's UIDL: the Maildir base name */
	char *dovecot_uid;          /* pop3_uidl_format's UIDL, or NULL (uidl.c) */
	unsigned long long size;    /* octets RETR sends (CRLF form, unstuffed) */
	unsigned size_known : 1;
	unsigned deleted : 1;       /* DELE: unlinked at QUIT */
	unsigned missing : 1;       /* the file went away during the session */
};

struct maildrop {
	char dir[PATH_MAX_POSTAGE];
	int lock_fd;                /* -1 when the Maildir does not exist */
	int cur_fd;                 /* cur/, or -1 */
	struct pop3_message *msgs;
	size_t count;
	int truncated;              /* more than POP3_MESSAGES_MAX in cur/ */
};

enum maildrop_status {
	MAILDROP_OK = 0,
	MAILDROP_IN_USE,  /* another session holds the lock */
	MAILDROP_ERROR,   /* disk trouble (logged) */
};

/* Locks mail_root/login, moves new/ into cur/ (adding ":2,") and takes the
 * snapshot. A Maildir that does not exist is an empty maildrop.
 * uidl_format: the pop3_uidl_format setting; NULL or "" for postage's own
 * UIDLs (then no other file is opened). */
enum maildrop_status maildrop_open(struct maildrop *d, const char *mail_root, const char *login,
				   const char *uidl_format);

/* Releases the lock and the snapshot. */
void maildrop_close(struct maildrop *d);

/* Octets RETR sends for message i (0-based): from ",W=" in the name when
 * present, else by reading the file once. 0, or -1 (file gone). */
int maildrop_size(struct maildrop *d, size_t i, unsigned long long *size);

/* Messages not marked deleted, and their octets (sizes computed). -1 when
 * a size could not be read: such a message counts as 0 octets. */
int maildrop_stat(struct maildrop *d, size_t *count, unsigned long long *octets);

/* A message-number argument: 1 to count, decimal digits only. */
enum maildrop_lookup {
	LOOKUP_OK = 0,
	LOOKUP_SYNTAX,   /* not a number */
	LOOKUP_NO_SUCH,  /* outside 1..count */
	LOOKUP_DELETED,  /* marked by DELE */
};
enum maildrop_lookup maildrop_find(const struct maildrop *d, const char *arg, size_t *index);

/* A non-negative decimal number (TOP's line count): 0, or -1 when it is
 * not one. Values past max are clamped to max. */
int pop3_parse_count(const char *s, size_t len, unsigned long max, unsigned long *value);

/* Opens message i for reading, following a rename in cur/ (another
 * program adding flags). The fd, or -1 with errno. */
int maildrop_open_message(struct maildrop *d, size_t i);

/* Sends the message on fd to io in wire form (CRLF, dot-stuffed), then the
 * terminating ".". top_lines < 0: all of it; else the headers, the blank
 * line and that many body lines (TOP). Octets written (with stuffing) are
 * added to *sent. 0, or -1 on a read or write error part-way. */
int maildrop_send(int fd, long top_lines, struct io *io, unsigned long long *sent);

/* UPDATE state: unlinks the messages marked deleted, then fsyncs cur/.
 * Returns how many could not be removed (0 on success); *removed counts
 * those that were. */
size_t maildrop_commit(struct maildrop *d, size_t *removed);

/* The UIDL a client is given for message m. */
static inline const char *pop3_message_uid(const struct pop3_message *m)
{
	return m->dovecot_uid ? m->dovecot_uid : m->uid;
}

/* uidl.c: gives the snapshot Dovecot's UIDLs made with format from the
 * Maildir's dovecot-uidlist, numbering the messages it does not list yet
 * (under Dovecot's lock) so that Dovecot shows them with the same UIDL
 * later. Never fails the login: what cannot be done is logged and falls
 * back (see uidl.c). */
void maildrop_dovecot_uids(struct maildrop *d, const char *format);

/* The UIDL of a Maildir file name: its base name (up to the first ':' or
 * ','), kept when printable and at most 70 characters, else a hash of it
 * prefixed with "H" so that it still meets RFC 1939. */
void pop3_uid_from_name(const char *name, char *uid, size_t cap);

#endif
