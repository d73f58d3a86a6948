/* Maildir delivery and names, compatible with Dovecot and Courier:
 * <time>.M<usec>P<pid>.<host>,S=<bytes>,W=<crlf bytes>[:2,<flags>] */
#ifndef POSTAGE_MAILDIR_H
#define POSTAGE_MAILDIR_H

#include <stddef.h>
#include <sys/types.h>

#include "limits.h"

/* mail_root/login into dir; creates the Maildir (cur new tmp, mode 0700)
 * when create is set. 0, or -1 with errno. */
int maildir_path(const char *mail_root, const char *login, char *dir, size_t cap, int create);

/* A new unique base name (no sizes, no flags). */
void maildir_unique_name(char *buf, size_t cap);

/* Delivers prefix (headers) + the first src_len bytes of src_fd into
 * maildir/new: written in tmp/, fsynced, renamed into new/ with ,S= and ,W=
 * (lf_count is the number of LFs in prefix and source, so W = S + LFs),
 * then new/ fsynced. The file name goes to name_out. 0, or -1 with errno
 * and nothing left behind. */
int maildir_deliver(const char *maildir, const char *prefix, size_t prefix_len, int src_fd,
		    off_t src_len, unsigned long long lf_count, char *name_out, size_t name_cap);

/* maildir_deliver in steps, for a caller that must not let a reader see
 * a copy before the whole message is committed (the SMTP handler queues
 * the remote recipients in between): maildir_stage writes and fsyncs
 * tmp/<base>, which no reader looks at; maildir_publish links it into
 * new/ under its final name; maildir_sync fsyncs new/, after which the
 * copy survives a crash; maildir_discard takes back any of them (after
 * publish, from new/, or from cur/ when a reader moved it there). A
 * caller delivering several copies publishes them all, then syncs them
 * all, so that a crash in between rarely leaves some and not others. */
struct maildir_staged {
	char dir[PATH_MAX_POSTAGE]; /* the Maildir */
	char base[256];             /* tmp/<base> */
	char name[512];             /* the name in new/: <base>,S=<s>,W=<w> */
	int published;
};
int maildir_stage(const char *maildir, const char *prefix, size_t prefix_len, int src_fd,
		  off_t src_len, unsigned long long lf_count, struct maildir_staged *st);
/* The same without the fsync: for the first copy of a file that is then
 * linked into other Maildirs (maildir_stage_link) and synced once, links
 * and all (maildir_stage_sync). */
int maildir_stage_unsynced(const char *maildir, const char *prefix, size_t prefix_len, int src_fd,
			   off_t src_len, unsigned long long lf_count, struct maildir_staged *st);
/* Another copy of a staged message (the same bytes: a mailing list's
 * post for many local members) in maildir: a hard link of from's tmp/
 * file into maildir/tmp/ under a new base name, with from's ,S= and ,W=.
 * The caller calls maildir_stage_sync once after the last link: the fsync
 * of the one inode commits its links with it (ext4 and XFS journal them
 * together), as maildir_stage's fsync does for its tmp/ name. 0, or -1
 * with errno (EXDEV, EMLINK: then stage a copy of its own). */
int maildir_stage_link(const char *maildir, const struct maildir_staged *from,
		       struct maildir_staged *st);
/* fsync of a staged copy's file. 0, or -1 with errno. */
int maildir_stage_sync(const struct maildir_staged *st);
/* An fd (read-only) of a staged copy's file, which stays valid however
 * the file is renamed: after maildir_publish of every hard link of one
 * file, one fsync of it commits all their new/ names, as each link
 * changed the inode in the same journal (ext4: the link's transaction
 * holds the directory entry; XFS: the log is forced past it), in place of
 * one directory fsync each, which costs a disk flush apiece. -1 with
 * errno. */
int maildir_stage_open(const struct maildir_staged *st);
int maildir_publish(struct maildir_staged *st);
int maildir_sync(const struct maildir_staged *st);
void maildir_discard(struct maildir_staged *st);

/* Removes files in tmp/ older than MAILDIR_TMP_STALE_SECONDS: what a
 * delivery killed half-way left (maildir(5)). Returns how many. */
int maildir_sweep_tmp(const char *maildir);

/* Bytes used by the messages (sizes from ,S= when present) in new/ and
 * cur/ of the Maildir and of each of its Maildir++ folders (.Sent/,
 * .Drafts/, .Trash/, ...: the directories named with a leading dot), as
 * Dovecot's Maildir++ quota counts them, so mail an IMAP client keeps
 * in folders counts too. At most MAILDIR_FOLDERS_MAX folders are read. */
long long maildir_usage(const char *maildir);

/* The number after ",<tag>=" in a file name (tag 'S' or 'W'); 1 found. */
int maildir_name_size(const char *name, char tag, unsigned long long *value);

/* The unique part of a name: up to the first ':' or ','. Stays the same
 * when the file moves from new/ to cur/. */
size_t maildir_name_uid(const char *name, char *buf, size_t cap);

/* write() all of buf, through EINTR and short writes. 0, or -1 with errno. */
int fd_write_all(int fd, const void *buf, size_t len);

/* Copies bytes from..to of in (pread) to out. 0, or -1 with errno (EIO
 * when in ends early). */
int fd_copy_range(int out, int in, off_t from, off_t to);

/* fsync a directory by path. */
int fsync_dir(const char *dir);

#endif
