/* The mail a list sends by itself: confirmations and help (to whoever
 * asked), the welcome and goodbye after a confirmation, the owner's
 * notices (a held post, a member disabled by bounces). Each is marked
 * RFC 3834 Auto-Submitted, so no well-behaved responder answers it; its
 * envelope sender is the list's bounces address (team-bounces@), whose
 * mail is never answered either. A notice for a remote address is queued,
 * DKIM-signed by the list's domain (its From: is there); for a local one
 * it goes into the Maildir. */
#ifndef POSTAGE_LISTMAIL_H
#define POSTAGE_LISTMAIL_H

#include <sys/types.h>

#include "list.h"

struct list_notice {
	const struct list_info *list;
	const char *to;             /* the one recipient */
	const char *from_role;      /* "request" (team-request@) or "owner" (team-owner@) */
	const char *subject;        /* printable ASCII */
	const char *reply_to;       /* or NULL */
	const char *auto_submitted; /* "auto-replied" (an answer) or "auto-generated" */
	const char *in_reply_to;    /* the request's Message-ID ("<...>"), or NULL */
	const char *text;           /* the body, LF line ends, UTF-8 */
	int attach_fd;              /* a message to attach (a held post), or -1 */
	off_t attach_size;
};

/* n for the list l, from its role: "request" (an answer to whoever
 * asked: auto-replied) or "owner" (a notice for the owner:
 * auto-generated), to to, with subject and text; nothing attached, no
 * Reply-To, no In-Reply-To (set those after). */
void list_notice_init(struct list_notice *n, const struct list_info *l, const char *role,
		      const char *to, const char *subject, const char *text);

/* Composes and delivers n. hook (may be NULL) runs inside the commit that
 * makes the notice visible, for the database writes that belong with it
 * (a confirmation's row): it returns 1 to go on, 0 to send nothing (a
 * limit said no), -1 on trouble. Returns 1 sent, 0 not sent because the
 * hook said so (or the address cannot take it: logged), -1 trouble with
 * nothing sent. */
int list_notice_send(const struct list_notice *n, int (*hook)(void *ctx), void *ctx);

/* The owner's notice that member was disabled after that many bounces. */
int list_notify_disabled(const struct list_info *l, const char *member, long long bounces);

#endif
