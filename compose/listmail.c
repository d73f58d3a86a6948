#include "edit.h"
#include "listmail.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "headers.h"
#include "limits.h"
#include "log.h"
#include "maildir.h"
#include "msgout.h"
#include "signing.h"
#include "spool.h"

static int has_non_ascii(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

static void compose(struct msg_out *o, const struct list_notice *n, const char *id)
{
	const struct list_info *l = n->list;
	char date[64], boundary[64];
	unsigned rnd = 0;

	rfc5322_date((long long)time(NULL), date, sizeof(date));
	if (getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK) != (ssize_t)sizeof(rnd))
		rnd = (unsigned)getpid();
	msg_out_printf(o, "From: \"%s list\" <%s-%s@%s>\n", l->local, l->local, n->from_role, l->domain);
	msg_out_printf(o, "To: <%s>\n", n->to);
	msg_out_printf(o, "Subject: %s\n", n->subject);
	msg_out_printf(o, "Date: %s\n", date);
	msg_out_printf(o, "Message-ID: <%s.list.%08x@%s>\n", id, rnd, setting(SET_HOSTNAME));
	if (n->reply_to)
		msg_out_printf(o, "Reply-To: <%s>\n", n->reply_to);
	if (n->in_reply_to)
		msg_out_printf(o, "In-Reply-To: %s\nReferences: %s\n", n->in_reply_to, n->in_reply_to);
	/* RFC 3834 5: never answered by another responder. */
	msg_out_printf(o, "Auto-Submitted: %s\n", n->auto_submitted);
	msg_out_printf(o, "X-Auto-Response-Suppress: All\n");
	msg_out_printf(o, "MIME-Version: 1.0\n");
	if (n->attach_fd < 0) {
		msg_out_printf(o, "Content-Type: text/plain; charset=utf-8\n");
		msg_out_printf(o, "Content-Transfer-Encoding: 8bit\n\n");
		msg_out_write(o, n->text, strlen(n->text));
		return;
	}
	snprintf(boundary, sizeof(boundary), "%s.%08x/%s", id, rnd, setting(SET_HOSTNAME));
	msg_out_printf(o, "Content-Type: multipart/mixed; boundary=\"%s\"\n\n", boundary);
	msg_out_printf(o, "This is a MIME-encapsulated message.\n\n");
	msg_out_printf(o, "--%s\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n",
		    boundary);
	msg_out_write(o, n->text, strlen(n->text));
	if (n->attach_size <= LIST_HELD_ATTACH_MAX) {
		msg_out_printf(o, "\n--%s\nContent-Type: message/rfc822\nContent-Disposition: inline\n\n",
			    boundary);
		msg_out_copy(o, n->attach_fd, 0, n->attach_size);
	} else {
		/* Too big to travel whole: its header section tells what it is. */
		struct header_block hb;
		msg_out_printf(o, "\n--%s\nContent-Type: text/rfc822-headers\n"
			    "Content-Description: the header section of the post (%lld bytes)\n\n",
			    boundary, (long long)n->attach_size);
		if (header_block_read(n->attach_fd, 0, n->attach_size, &hb) == 0) {
			msg_out_write(o, hb.buf, hb.len);
			header_block_free(&hb);
		}
	}
	msg_out_printf(o, "\n--%s--\n", boundary);
}

int list_notice_send(const struct list_notice *n, int (*hook)(void *ctx), void *ctx)
{
	/* not re-entered: no hook (pending_hook, a database write) sends a notice */
	static struct destination dests[NOTICE_DESTINATIONS_MAX];
	static struct maildir_staged staged[NOTICE_DESTINATIONS_MAX];
	static struct queue_rcpt remote[NOTICE_DESTINATIONS_MAX];
	static struct msg_out o;
	static char sig[NOTICE_DKIM_MAX];
	const struct list_info *l = n->list;
	char id[QUEUE_ID_LEN + 8], staging[PATH_MAX_POSTAGE], signed_path[PATH_MAX_POSTAGE] = "";
	char bounces[ADDRESS_PATH_MAX + 1], prefix[2 * ADDRESS_PATH_MAX + 64], safe[ADDRESS_PATH_MAX * 4 + 8];
	char domain[ADDRESS_DOMAIN_MAX + 1];
	size_t nd = 0, nstaged = 0, nremote = 0;
	struct address to;
	int fd, sfd = -1, local, ret = -1, plen, h = 1;
	off_t size;

	log_printable(safe, sizeof(safe), n->to, strlen(n->to));
	if (snprintf(bounces, sizeof(bounces), "%s-bounces@%s", l->local, l->domain) >=
	    (int)sizeof(bounces))
		return -1;
	if (address_parse_plain(n->to, 1, &to) != ADDRESS_OK) {
		log_event(LOG_WARNING, "event=list_notice result=dropped list=%s to=\"%s\" reason=bad_address",
			  l->address, safe);
		return 0;
	}
	local = to.is_literal ? 0 : domain_is_local(to.domain);
	if (local < 0)
		return -1;
	if (local) {
		enum resolve_result rr = resolve_recipient(&to, dests, NOTICE_DESTINATIONS_MAX, &nd);
		if (rr == RESOLVE_TEMPFAIL)
			return -1;
		if (rr != RESOLVE_OK)
			nd = 0;
	} else {
		memset(&dests[0], 0, sizeof(dests[0]));
		dests[0].kind = DEST_REMOTE;
		snprintf(dests[0].address, sizeof(dests[0].address), "%s", n->to);
		nd = 1;
	}

	queue_new_id(id, sizeof(id));
	fd = spool_staging_open(id, staging, sizeof(staging));
	if (fd < 0)
		return -1;
	msg_out_init(&o, fd, 1);
	compose(&o, n, id);
	msg_out_flush(&o);
	if (o.error) {
		errno = o.error;
		goto out;
	}
	size = (off_t)o.total;

	plen = snprintf(prefix, sizeof(prefix), "Return-Path: <%s>\nDelivered-To: %s\n", bounces, n->to);
	for (size_t i = 0; i < nd; i++) {
		char dir[PATH_MAX_POSTAGE];

		if (dests[i].kind == DEST_REMOTE) {
			remote[nremote].recipient = dests[i].address;
			remote[nremote].orig_rcpt = n->to;
			nremote++;
			continue;
		}
		if (dests[i].kind != DEST_MAILBOX || !dests[i].enabled) {
			/* a list's own address, a disabled mailbox: not followed */
			log_event(LOG_NOTICE, "event=list_notice result=skipped list=%s to=\"%s\" reason=%s",
				  l->address, safe, dests[i].kind == DEST_MAILBOX ? "disabled" : "list_address");
			continue;
		}
		if (plen < 0 || (size_t)plen >= sizeof(prefix) ||
		    maildir_path(setting(SET_MAIL_ROOT), dests[i].mailbox, dir, sizeof(dir), 1) < 0 ||
		    maildir_stage(dir, prefix, (size_t)plen, fd, size, o.lfs + 2, &staged[nstaged]) < 0)
			goto out;
		nstaged++;
	}
	if (nstaged == 0 && nremote == 0) {
		log_event(LOG_WARNING, "event=list_notice result=dropped list=%s to=\"%s\" reason=\"no mailbox "
			  "and no remote address\"", l->address, safe);
		ret = 0;
		goto out;
	}
	if (nremote > 0) {
		/* Signed by the list's domain: From: is there. */
		long slen = signing_dkim(fd, size, sig, sizeof(sig), domain);
		struct queue_entry e;
		off_t ssize = size;
		int r;

		if (slen > 0) {
			char name[QUEUE_ID_LEN + 16];
			snprintf(name, sizeof(name), "%s.dkim", id);
			sfd = header_copy_edited(fd, size, sig, (size_t)slen, NULL, 0, name, 0, signed_path,
						 sizeof(signed_path), &ssize);
		}
		memset(&e, 0, sizeof(e));
		e.id = id;
		e.fd = sfd >= 0 ? sfd : fd;
		e.path = sfd >= 0 ? signed_path : staging;
		e.sender = bounces;
		e.size = (unsigned long long)ssize;
		e.body_8bit = o.eight_bit;
		e.smtputf8 = has_non_ascii(n->to);
		e.rcpts = remote;
		e.n = nremote;
		r = queue_enqueue_batch(&e, 1, hook, ctx);
		if (r != 0) {
			ret = r > 0 ? 0 : -1;
			goto out;
		}
	} else if (hook) {
		if (db_begin() < 0)
			goto out;
		h = hook(ctx);
		if (h <= 0 || db_commit() < 0) {
			db_rollback();
			ret = h == 0 ? 0 : -1;
			goto out;
		}
	}
	for (size_t k = 0; k < nstaged; k++)
		if (maildir_publish(&staged[k]) < 0 || maildir_sync(&staged[k]) < 0)
			log_event(LOG_ERR, "event=list_notice result=error list=%s error=\"%s\"", l->address,
				  strerror(errno));
	nstaged = 0;
	log_event(LOG_INFO, "event=list_notice result=sent list=%s id=%s to=\"%s\" subject=\"%s\" local=%zu "
		  "remote=%zu", l->address, id, safe, n->subject, nd - nremote, nremote);
	ret = 1;
out:
	if (ret < 0)
		log_event(LOG_ERR, "event=list_notice result=error list=%s to=\"%s\" error=\"%s\"", l->address,
			  safe, strerror(errno));
	for (size_t k = 0; k < nstaged; k++)
		maildir_discard(&staged[k]);
	if (sfd >= 0) {
		close(sfd);
		unlink(signed_path);
	}
	close(fd);
	unlink(staging);
	return ret;
}

/* s with each ' doubled, for an SQL string the owner may paste. */
static void sql_quoted(const char *s, char *out, size_t cap)
{
	size_t o = 0;

	for (; *s && o + 3 < cap; s++) {
		if (*s == '\'')
			out[o++] = '\'';
		out[o++] = *s;
	}
	out[o] = '\0';
}

void list_notice_init(struct list_notice *n, const struct list_info *l, const char *role,
		      const char *to, const char *subject, const char *text)
{
	memset(n, 0, sizeof(*n));
	n->list = l;
	n->to = to;
	n->from_role = role;
	n->subject = subject;
	n->auto_submitted = strcmp(role, "request") == 0 ? "auto-replied" : "auto-generated";
	n->text = text;
	n->attach_fd = -1;
}

int list_notify_disabled(const struct list_info *l, const char *member, long long bounces)
{
	char text[2048], subject[ADDRESS_PATH_MAX + 64], qlist[2 * ADDRESS_PATH_MAX + 4];
	char qmember[2 * ADDRESS_PATH_MAX + 4];
	struct list_notice n;

	sql_quoted(l->address, qlist, sizeof(qlist));
	sql_quoted(member, qmember, sizeof(qmember));

	snprintf(subject, sizeof(subject), "%s: member disabled after bounces", l->address);
	snprintf(text, sizeof(text),
		 "Mail to %s, a member of the list %s, has bounced %lld times\n"
		 "within %d days. The member no longer gets the list's mail (it stays\n"
		 "a member, and may still post).\n\n"
		 "To send to it again once the address works:\n\n"
		 "  sqlite3 /var/lib/postage/postage.db \\\n"
		 "    \"UPDATE list_members SET enabled = 1 WHERE list = '%s' AND address = '%s'\"\n\n"
		 "or let the member subscribe again (mail to %s-subscribe@%s).\n",
		 member, l->address, bounces, LIST_BOUNCE_WINDOW_DAYS, qlist, qmember, l->local,
		 l->domain);
	list_notice_init(&n, l, "owner", l->owner, subject, text);
	return list_notice_send(&n, NULL, NULL);
}
