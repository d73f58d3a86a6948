/* Mailing lists in the SMTP handler (lists.c): RCPT checks, the end of
 * DATA, and the parts a post adds to the message's delivery. */
#ifndef POSTAGE_SMTP_LISTS_H
#define POSTAGE_SMTP_LISTS_H

#include <stddef.h>
#include <sys/types.h>

#include "limits.h"
#include "spool.h"

struct session;
struct destination;

/* One list's copy of a post: its file (on disk, with the list's fields,
 * signed), the local mailboxes that get it (hard links of one file) and
 * the remote recipients (one queue entry, VERP). */
struct list_part {
	char list[ADDRESS_PATH_MAX + 1];
	char qid[QUEUE_ID_LEN + 8];
	int fd;
	char path[PATH_MAX_POSTAGE];
	off_t size;
	unsigned long long lfs;
	int eight_bit, smtputf8;
	char sender[ADDRESS_PATH_MAX + 1];           /* <list>-bounces@<domain> */
	char prefix[2 * ADDRESS_PATH_MAX + 64];      /* local copies' Return-Path, Delivered-To */
	size_t prefix_len;
	char (*mailboxes)[ADDRESS_LOCAL_MAX + 1];
	size_t nmailboxes;
	struct queue_rcpt *remote;                   /* recipient, orig_rcpt = the member */
	char (*addrs)[ADDRESS_PATH_MAX + 1];         /* their strings */
	size_t nremote;
};

/* RCPT to a list's address (a DEST_LIST destination): 0 to accept, -1
 * after replying (550 5.7.1 to a post on an announce list from anyone
 * but the owner; 550 5.1.1 to an unknown confirmation; ...). */
int lists_rcpt(struct session *s, const struct destination *d, const char *safe);

/* End of DATA, before delivery: what the message does to each list
 * address among its destinations. The message is fd (size bytes). Posts
 * that go out become parts (lists_parts); confirmations, holds and
 * bounces are committed here. 0 to deliver, -1 after replying. */
int lists_message(struct session *s, const char *qid, int fd, off_t size);

/* The parts the last lists_message made. */
size_t lists_parts(struct list_part **out);
/* Their queue entries (the parts with remote members). */
size_t lists_queue_entries(const struct queue_entry **out);
/* Does the delivery's commit carry writes of the lists (approved posts'
 * confirmations used up: lists_commit_hook)? */
int lists_have_writes(void);
int lists_commit_hook(void *ctx);
/* After delivery (delivered: the message was accepted): logs, and the
 * temporary files go. */
void lists_finish(int delivered);

#endif
