/* Dovecot's dovecot-uidlist and pop3_uidl_format, so that POP3 clients
 * moved from Dovecot keep their UIDLs (README: "Moving from Dovecot").
 *
 * The file, in a Maildir beside cur/ new/ tmp/, maps IMAP UIDs to file
 * base names (the name up to ':', which stays when flags change):
 *
 *   version 3 (Dovecot 1.1 on):  3 V<uidvalidity> N<nextuid> G<guid> ...
 *                                <uid> [<K><value> ...] :<name>
 *   version 1 (Courier's too):   1 <uidvalidity> <nextuid>
 *                                <uid> <name>
 *
 * Extension fields are a capital letter and a value without spaces: G is
 * the message's GUID, P a POP3 UIDL Dovecot saved (pop3_save_uidl; an
 * empty one means the base name), W and S sizes. Records come in rising
 * UID order; a reader takes no lock, as new records are only ever
 * appended and a rewrite replaces the file by rename(). A writer holds
 * dovecot-uidlist.lock, a dotlock made with O_EXCL that holds
 * "<pid>:<host>".
 *
 * Nothing here opens the database or reads settings: the caller passes
 * the format and the Maildir. */
#ifndef POSTAGE_UIDLIST_H
#define POSTAGE_UIDLIST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "limits.h"

#define UIDLIST_NAME "dovecot-uidlist"
#define UIDLIST_LOCK_NAME "dovecot-uidlist.lock"
/* Dovecot's own temporary name for a rewrite, written only by the holder
 * of the lock. */
#define UIDLIST_TMP_NAME "dovecot-uidlist.tmp"

/* ---- pop3_uidl_format ------------------------------------------------ */

/* The variables a format uses (Dovecot's %u %v %f %g). */
enum uidl_key {
	UIDL_KEY_UID = 1 << 0,
	UIDL_KEY_UIDVALIDITY = 1 << 1,
	UIDL_KEY_FILENAME = 1 << 2,
	UIDL_KEY_GUID = 1 << 3,
};

struct uidl_format {
	char text[UIDL_FORMAT_MAX + 1];
	unsigned keys;
};

/* Checks a format as Dovecot 2.3's var_expand reads it:
 * %[-][0][width][.[0][-]offset][modifiers]<key>, keys u v f g (or
 * %{uid} %{uidvalidity} %{filename} %{guid}) and %%, modifiers L U X.
 * 0, or -1 with *why (static text) for anything else: a variable or
 * modifier we cannot make exactly as Dovecot does (%m, H, M ...), a
 * format with no variable (Dovecot refuses it too), or one too long. */
int uidl_format_parse(const char *text, struct uidl_format *f, const char **why);

struct uidl_values {
	uint32_t uid;
	uint32_t uidvalidity;
	const char *filename; /* the base name: the file name up to ':' */
	const char *guid;     /* the record's G field; NULL: the base name */
};

/* Expands a parsed format into out (NUL-terminated). Its length, or -1
 * when it does not fit in cap - 1 octets. */
long uidl_format_expand(const struct uidl_format *f, const struct uidl_values *v, char *out,
			size_t cap);

/* ---- reading dovecot-uidlist ----------------------------------------- */

struct uidlist_header {
	unsigned version;     /* 1 or 3 */
	uint32_t uidvalidity; /* never 0 */
	uint32_t next_uid;    /* as written; see uidlist_next_uid */
};

/* One record. The pointers point into the line being parsed. */
struct uidlist_record {
	uint32_t uid;
	const char *name;      /* the base name (up to ':'), never empty */
	size_t name_len;
	const char *guid;      /* G field, or NULL */
	size_t guid_len;
	const char *pop3_uidl; /* P field, or NULL; length 0: the base name */
	size_t pop3_uidl_len;
};

/* Parses the first line (without its LF). 0, or -1 with *why. */
int uidlist_parse_header(const char *line, size_t len, struct uidlist_header *h,
			 const char **why);

/* Parses a record line (without its LF) of a file of that version. 0, or
 * -1 with *why. Order against the other records is the reader's check. */
int uidlist_parse_record(unsigned version, const char *line, size_t len, struct uidlist_record *r,
			 const char **why);

enum uidlist_result {
	UIDLIST_OK = 0,
	UIDLIST_BROKEN,  /* not a uidlist Dovecot would read (why, line) */
	UIDLIST_TOO_BIG, /* over UIDLIST_BYTES_MAX */
	UIDLIST_IO,      /* a read failed (errno) */
};

/* A reader: set record (and ctx), then feed it a buffer or a file. The
 * callback sees each record once, in file order; a later record for the
 * same base name replaces an earlier one, as in Dovecot. */
struct uidlist_reader {
	void (*record)(void *ctx, const struct uidlist_record *r);
	void *ctx;

	struct uidlist_header header;
	uint32_t last_uid;   /* the highest UID read, 0 for none */
	unsigned long lines; /* complete lines read */
	size_t bytes;        /* octets of the complete lines: a partial last
				line (an append under way) is not read */
	const char *why;     /* UIDLIST_BROKEN: what */
};

/* Reads len octets of buf as a whole file. */
enum uidlist_result uidlist_parse(struct uidlist_reader *r, const char *buf, size_t len);

/* Reads fd from its start, at most UIDLIST_BYTES_MAX octets. */
enum uidlist_result uidlist_read_fd(struct uidlist_reader *r, int fd);

/* The UID the next new message gets: the header's, or past the last
 * record when Dovecot appended records without rewriting the header. 0
 * when none is left. */
uint32_t uidlist_next_uid(const struct uidlist_reader *r);

/* ---- writing, under Dovecot's lock ----------------------------------- */

struct uidlist_lock {
	int fd;
	dev_t dev;
	ino_t ino;
	char path[PATH_MAX_POSTAGE + 32];
};

enum uidlist_lock_result {
	UIDLIST_LOCKED = 0,
	UIDLIST_LOCK_BUSY,  /* held by a live process for all of wait_ms */
	UIDLIST_LOCK_ERROR, /* errno */
};

/* Takes maildir/dovecot-uidlist.lock as Dovecot does, waiting up to
 * wait_ms; a stale lock (its process gone, or untouched for
 * UIDLIST_LOCK_STALE_SECONDS) is replaced. */
enum uidlist_lock_result uidlist_lock(const char *maildir, long wait_ms, struct uidlist_lock *l);

/* Removes the lock if it is still ours. */
void uidlist_unlock(struct uidlist_lock *l);

/* Under the lock: writes maildir/dovecot-uidlist.tmp holding the current
 * file's complete lines (old_fd, as r read them; old_fd -1 and r NULL
 * when there is none, and then a new version 3 header with a fresh
 * UIDVALIDITY and GUID), then one record for each of names[0..n-1] (file
 * names; what follows ':' is left out) with UIDs first_uid, first_uid+1
 * ..., fsyncs it and renames it over dovecot-uidlist. A version 1 file
 * gets its header's next UID raised, as version 1 requires. *uidvalidity
 * is set to the file's. 0, or -1 with errno: then nothing was replaced,
 * unless only the last fsync (of the Maildir) failed. */
int uidlist_append(const char *maildir, const struct uidlist_lock *l, int old_fd,
		   const struct uidlist_reader *r, uint32_t first_uid, const char *const *names,
		   size_t n, uint32_t *uidvalidity);

#endif
