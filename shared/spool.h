/* The spool: staging files for messages being received, and the outbound
 * queue (spool_dir/queue/<id> plus rows in queue_messages and
 * queue_recipients), written durably before any 250. */
#ifndef POSTAGE_SPOOL_H
#define POSTAGE_SPOOL_H

#include <stddef.h>

#define QUEUE_ID_LEN 16

/* A fresh queue id: 16 hex digits, time-ordered with random low bits. */
void queue_new_id(char *id, size_t cap);

/* Makes spool_dir and its tmp/ and queue/ where they are missing (mode
 * 0700). 0, or -1 with errno. */
int spool_make(void);

/* Creates spool_dir/tmp/<id> (mode 0600) for the message being received;
 * its path goes to path. Returns the fd (read-write) or -1 with errno.
 * The fd holds an flock on the file for as long as it is open: an
 * unlocked staging file belongs to no live process (the queue runner
 * sweeps those). */
int spool_staging_open(const char *id, char *path, size_t cap);

/* Removes the staging files this process made (the last
 * SPOOL_STAGING_LIVE_MAX): for a SIGTERM handler, async-signal-safe. */
void spool_staging_abandon(void);

/* Staging in memory (a memfd) for the message being received: one that
 * goes only to local Maildirs then never creates or removes a file in the
 * spool (on ext4 without a journal each removed inode also slows the next
 * file creations for a minute). path is set to "". Falls back to
 * spool_staging_open when memfd_create is not allowed. Returns the fd or
 * -1 with errno. */
int spool_staging_begin(const char *id, char *path, size_t cap);

/* Moves an in-memory staging file (path "") to spool_dir/tmp/<id>: when
 * it outgrows STAGING_MEMORY_MAX, or must be linked into the queue. *fd
 * becomes the disk file's, at its end. 0 (also when already on disk), or
 * -1 with errno and *fd, path unchanged. */
int spool_staging_to_disk(int *fd, const char *id, char *path, size_t cap);

struct queue_rcpt {
	const char *recipient; /* where it goes */
	const char *orig_rcpt; /* the RCPT address it came from */
};

/* Queues staging (fd, at path, size bytes) for the recipients: fsync,
 * link into spool_dir/queue/<id>, fsync the directory, insert the rows
 * and commit. 0, or -1 with nothing queued. */
int queue_enqueue(int fd, const char *path, const char *id, const char *sender,
		  unsigned long long size, int body_8bit, int smtputf8, const char *client_ip,
		  const char *auth_login, const struct queue_rcpt *rcpts, size_t n);

/* One message of a batch (queue_enqueue_batch). */
struct queue_entry {
	const char *id;
	int fd;                        /* the file, on disk at path */
	const char *path;
	const char *sender;
	unsigned long long size;
	int body_8bit, smtputf8;
	int verp;                      /* a list's copies: queue_messages.verp */
	const char *client_ip;         /* may be NULL */
	const char *auth_login;        /* may be NULL */
	const struct queue_rcpt *rcpts;
	size_t n;
};

/* Queues n messages in one database transaction (a list's copies, the
 * message itself, a notice): each file fsynced and linked into
 * spool_dir/queue/, the directory fsynced once, every row inserted, then
 * hook (may be NULL) inside the same transaction for writes that must
 * commit with them; it returns 1 to commit, 0 to give up quietly, -1 on
 * trouble. Returns 0 queued, 1 when the hook gave up, -1 on trouble
 * (errno); in both of the latter nothing is queued. */
int queue_enqueue_batch(const struct queue_entry *e, size_t n, int (*hook)(void *ctx), void *ctx);

/* Takes a queued message out: its rows (committed), then its file.
 * 0, or -1 with the rows left as they were. */
int queue_remove(const char *id);

/* 1 when the message is queued (its rows and its file are there), 0 when
 * not, -1 when the database cannot tell. */
int queue_exists(const char *id);

/* Path of a queued message's file. */
void queue_path(const char *id, char *path, size_t cap);

#endif
