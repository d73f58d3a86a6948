/* Delivery status notifications (RFC 3464): the bounce that tells a
 * sender which recipients failed and why, in the remote server's own
 * words, and the one-time "still trying" warning. Written once to a
 * staging file, then put straight into a local sender's Maildir or queued
 * for a remote one, always with the null sender. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "address.h"
#include "config.h"
#include "limits.h"
#include "log.h"
#include "maildir.h"
#include "msgout.h"
#include "queue.h"
#include "signing.h"
#include "spool.h"

static int non_ascii(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

/* "name[ip]" -> "name" */
static void mta_name(const char *mta, char *out, size_t cap)
{
	size_t n = strcspn(mta, "[");

	if (n >= cap)
		n = cap - 1;
	memcpy(out, mta, n);
	out[n] = '\0';
}

/* The plain-words account of one recipient, for the first part. */
static void explain(struct msg_out *o, const struct dsn_rcpt *r, long long lifetime_hours)
{
	msg_out_printf(o, "<%s>:", r->recipient);
	if (r->orig_rcpt && *r->orig_rcpt && strcasecmp(r->orig_rcpt, r->recipient) != 0)
		msg_out_printf(o, " (forwarded from <%s>)", r->orig_rcpt);
	msg_out_printf(o, "\n");
	if (r->expired)
		msg_out_printf(o,
			   "    postage gave up: the message could not be delivered within\n"
			   "    %lld hours (queue_lifetime_hours). The last attempt ended with:\n",
			   lifetime_hours);
	if (r->mta && *r->mta) {
		msg_out_printf(o, "    host %s said:\n    %s\n", r->mta, r->text);
		if (r->command && *r->command)
			msg_out_printf(o, "    (in reply to %s)\n", r->command);
	} else {
		msg_out_printf(o, "    %s\n", r->text);
	}
	msg_out_printf(o, "\n");
}

/* The original's header section (LF form), up to DSN_HEADERS_MAX bytes,
 * ending at a whole line. 0, or -1 when the queue file is gone. */
static int copy_headers(struct msg_out *o, const char *id)
{
	static char buf[DSN_HEADERS_MAX];
	char path[PATH_MAX_POSTAGE];
	size_t have = 0, end = 0;
	int fd;

	queue_path(id, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	while (have < sizeof(buf)) {
		ssize_t n = read(fd, buf + have, sizeof(buf) - have);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	close(fd);
	/* Up to the empty line that ends the headers. */
	for (size_t i = 0; i < have; i++) {
		if (buf[i] != '\n')
			continue;
		end = i + 1;
		if (i == 0 || buf[i - 1] == '\n') {
			end = i; /* keep the previous line's LF, drop the empty line */
			break;
		}
	}
	if (end == 0 && have > 0 && buf[0] != '\n')
		return -1;
	msg_out_write(o, buf, end);
	return 0;
}

static void compose(struct msg_out *o, enum dsn_kind kind, const struct dsn_message *m,
		    const char *to, const struct dsn_rcpt *rcpts, size_t n, const char *id)
{
	const char *host = setting(SET_HOSTNAME);
	char date[64], arrival[64], until[64], boundary[64];
	int utf8_addr = non_ascii(m->sender) || non_ascii(to);
	int utf8;
	const char *addr_type;

	for (size_t i = 0; i < n; i++)
		utf8_addr |= non_ascii(rcpts[i].recipient) || non_ascii(rcpts[i].orig_rcpt);
	addr_type = utf8_addr ? "utf-8" : "rfc822";
	/* RFC 6533: UTF-8 addresses, or a remote server's reply in UTF-8
	 * (kept as it said it), make the report the global kind. */
	utf8 = utf8_addr;
	for (size_t i = 0; i < n; i++)
		utf8 |= non_ascii(rcpts[i].text);
	rfc5322_date(time(NULL), date, sizeof(date));
	rfc5322_date(m->created_at, arrival, sizeof(arrival));
	rfc5322_date(m->give_up_at, until, sizeof(until));
	snprintf(boundary, sizeof(boundary), "=_postage_dsn_%s", id);

	msg_out_printf(o, "Received: by %s (postage) id %s; %s\n", host, id, date);
	msg_out_printf(o, "Date: %s\n", date);
	msg_out_printf(o, "From: Mail Delivery System <MAILER-DAEMON@%s>\n", host);
	msg_out_printf(o, "To: <%s>\n", to);
	msg_out_printf(o, "Subject: %s\n", kind == DSN_FAILED ? "Undelivered Mail Returned to Sender" :
							    "Delayed Mail (still being retried)");
	msg_out_printf(o, "Message-ID: <%s.dsn@%s>\n", id, host);
	/* RFC 3834 5: no auto-reply should answer this. */
	msg_out_printf(o, "Auto-Submitted: auto-replied\n");
	msg_out_printf(o, "MIME-Version: 1.0\n");
	msg_out_printf(o, "Content-Type: multipart/report; report-type=delivery-status;\n"
		      "\tboundary=\"%s\"\n\n", boundary);
	msg_out_printf(o, "This is a MIME-encapsulated message.\n\n");

	/* 1: for people */
	msg_out_printf(o, "--%s\nContent-Description: Notification\n"
		      "Content-Type: text/plain; charset=%s\n%s\n",
		   boundary, utf8 ? "utf-8" : "us-ascii",
		   utf8 ? "Content-Transfer-Encoding: 8bit\n" : "");
	msg_out_printf(o, "This is the mail system at host %s.\n\n", host);
	if (kind == DSN_FAILED) {
		msg_out_printf(o, "I'm sorry to have to inform you that your message could not\n"
			      "be delivered to one or more recipients. For each of them the\n"
			      "reason follows. The headers of your message are attached.\n\n"
			      "If you need help, send this report to postmaster@%s.\n\n", host);
	} else {
		msg_out_printf(o,
			   "####################################################################\n"
			   "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n"
			   "####################################################################\n\n"
			   "Your message has not yet been delivered to the recipients below.\n"
			   "postage is still trying, and will give up at\n    %s\n"
			   "if it still cannot deliver it by then; you will be told again.\n\n",
			   until);
	}
	for (size_t i = 0; i < n; i++)
		explain(o, &rcpts[i], m->lifetime_hours);

	/* 2: for programs (RFC 3464 2; RFC 6533 when addresses are UTF-8) */
	msg_out_printf(o, "--%s\nContent-Description: Delivery report\nContent-Type: %s\n%s\n", boundary,
		   utf8 ? "message/global-delivery-status" : "message/delivery-status",
		   utf8 ? "Content-Transfer-Encoding: 8bit\n" : "");
	msg_out_printf(o, "Reporting-MTA: dns; %s\n", host);
	msg_out_printf(o, "X-Postage-Queue-ID: %s\n", m->id);
	msg_out_printf(o, "X-Postage-Sender: %s; %s\n", addr_type, m->sender);
	msg_out_printf(o, "Arrival-Date: %s\n", arrival);
	for (size_t i = 0; i < n; i++) {
		const struct dsn_rcpt *r = &rcpts[i];

		msg_out_printf(o, "\nFinal-Recipient: %s; %s\n", addr_type, r->recipient);
		if (r->orig_rcpt && *r->orig_rcpt && strcasecmp(r->orig_rcpt, r->recipient) != 0)
			msg_out_printf(o, "Original-Recipient: %s; %s\n", addr_type, r->orig_rcpt);
		msg_out_printf(o, "Action: %s\n", kind == DSN_FAILED ? "failed" : "delayed");
		msg_out_printf(o, "Status: %s\n", r->status && *r->status ? r->status :
					      (kind == DSN_FAILED ? "5.0.0" : "4.0.0"));
		if (r->mta && *r->mta) {
			char name[ADDRESS_DOMAIN_MAX + 72];
			mta_name(r->mta, name, sizeof(name));
			msg_out_printf(o, "Remote-MTA: dns; %s\n", name);
			msg_out_printf(o, "Diagnostic-Code: smtp; %s\n", r->text);
		} else {
			msg_out_printf(o, "Diagnostic-Code: X-Postage; %s\n", r->text);
		}
		if (kind == DSN_DELAYED)
			msg_out_printf(o, "Will-Retry-Until: %s\n", until);
	}
	msg_out_printf(o, "\n");

	/* 3: the original's headers */
	msg_out_printf(o, "--%s\nContent-Description: %s\nContent-Type: %s\n%s\n", boundary,
		   kind == DSN_FAILED ? "Undelivered Message Headers" : "Delayed Message Headers",
		   utf8 ? "message/global-headers" : "text/rfc822-headers",
		   utf8 ? "Content-Transfer-Encoding: 8bit\n" : "");
	if (copy_headers(o, m->id) < 0)
		msg_out_printf(o, "X-Postage-Note: the original message is no longer in the queue\n");
	msg_out_printf(o, "\n--%s--\n", boundary);
}

/* Removes Maildir copies made before a later step failed. */
static void undo(char (*paths)[PATH_MAX_POSTAGE], size_t n)
{
	for (size_t i = 0; i < n; i++)
		unlink(paths[i]);
}

static int deliver_notice(const struct address *sender, const char *sender_text,
			  const char *orig_id, const char *id, int fd, const char *staging,
			  const struct msg_out *o, enum dsn_kind kind)
{
	/* not re-entered: its one caller, dsn_send, is not */
	static struct destination dests[DSN_DESTINATIONS_MAX];
	static char delivered[DSN_DESTINATIONS_MAX][PATH_MAX_POSTAGE];
	static struct queue_rcpt remote[DSN_DESTINATIONS_MAX];
	const char *what = kind == DSN_FAILED ? "bounce" : "delay_warning";
	size_t nd = 0, ndelivered = 0, nremote = 0;
	int local = sender->is_literal ? 0 : domain_is_local(sender->domain);

	if (local < 0)
		return -1;
	if (local) {
		char prefix[ADDRESS_PATH_MAX + 64];
		int plen = snprintf(prefix, sizeof(prefix), "Return-Path: <>\nDelivered-To: %s\n",
				    sender_text);
		enum resolve_result rr = resolve_recipient(sender, dests, DSN_DESTINATIONS_MAX, &nd);

		if (rr == RESOLVE_TEMPFAIL)
			return -1;
		if (rr != RESOLVE_OK || plen < 0 || (size_t)plen >= sizeof(prefix)) {
			log_event(LOG_WARNING,
				  "event=%s result=dropped id=%s to=\"%s\" reason=\"the sender's address "
				  "is in a local domain but has no mailbox\"",
				  what, orig_id, sender_text);
			return 0;
		}
		for (size_t i = 0; i < nd; i++) {
			char dir[PATH_MAX_POSTAGE], name[512];

			if (dests[i].kind == DEST_REMOTE) {
				remote[nremote].recipient = dests[i].address;
				remote[nremote].orig_rcpt = sender_text;
				nremote++;
				continue;
			}
			if (dests[i].kind == DEST_LIST) {
				/* A list's own address (its bounces address sent a
				 * notice that failed): a list never answers a bounce. */
				log_event(LOG_NOTICE, "event=%s result=dropped id=%s to=\"%s\" reason=list_address",
					  what, orig_id, sender_text);
				continue;
			}
			if (!dests[i].enabled) {
				log_event(LOG_NOTICE, "event=%s result=skipped id=%s mailbox=%s reason=disabled",
					  what, orig_id, dests[i].mailbox);
				continue;
			}
			if (maildir_path(setting(SET_MAIL_ROOT), dests[i].mailbox, dir, sizeof(dir), 1) < 0 ||
			    maildir_deliver(dir, prefix, (size_t)plen, fd, (off_t)o->total, o->lfs + 2, name,
					    sizeof(name)) < 0) {
				log_event(LOG_ERR, "event=%s result=error id=%s mailbox=%s error=\"%s\"", what,
					  orig_id, dests[i].mailbox, strerror(errno));
				undo(delivered, ndelivered);
				return -1;
			}
			snprintf(delivered[ndelivered++], PATH_MAX_POSTAGE, "%s/new/%s", dir, name);
			log_event(LOG_INFO, "event=%s result=delivered id=%s dsn_id=%s mailbox=%s file=%s",
				  what, orig_id, id, dests[i].mailbox, name);
		}
	} else {
		remote[0].recipient = sender_text;
		remote[0].orig_rcpt = sender_text;
		nremote = 1;
	}
	if (nremote > 0) {
		if (queue_enqueue(fd, staging, id, "", o->total, o->eight_bit, non_ascii(sender_text),
				  NULL, NULL, remote, nremote) < 0) {
			log_event(LOG_ERR, "event=%s result=error id=%s error=\"cannot queue: %s\"", what,
				  orig_id, strerror(errno));
			undo(delivered, ndelivered);
			return -1;
		}
		log_event(LOG_INFO, "event=%s result=queued id=%s dsn_id=%s to=\"%s\"", what, orig_id, id,
			  sender_text);
	}
	return 0;
}

/* Who gets the notice: the envelope sender, or, when that is one of our
 * SRS addresses (mail a forward sent on), the original sender behind it.
 * 1 found (in *to and text), 0 drop (logged), -1 try later. */
static int notice_recipient(const struct dsn_message *m, const char *what, struct address *to,
			    char *text, size_t cap)
{
	char safe[ADDRESS_PATH_MAX * 4 + 8], orig[ADDRESS_PATH_MAX + 1];
	enum address_parse ap = address_parse_plain(m->sender, 1, to);

	log_printable(safe, sizeof(safe), m->sender, strlen(m->sender));
	if (ap == ADDRESS_TOOLONG) {
		/* SRS addresses often have local parts over 64 octets. */
		char path[ADDRESS_PATH_MAX + 8];
		const char *rest;
		snprintf(path, sizeof(path), "<%s>", m->sender);
		ap = srs_parse_path(path, to, &rest);
		if (ap == ADDRESS_OK && *rest)
			ap = ADDRESS_SYNTAX; /* more than one path: not an address */
	}
	if (ap != ADDRESS_OK) {
		log_event(LOG_WARNING, "event=%s result=dropped id=%s from=\"%s\" reason=bad_sender",
			  what, m->id, safe);
		return 0;
	}
	switch (signing_srs_reverse(to, orig, sizeof(orig))) {
	case SRS_NOT_SRS:
		snprintf(text, cap, "%s", m->sender);
		return 1;
	case SRS_TEMPFAIL:
		return -1;
	case SRS_FORGED:
	case SRS_EXPIRED:
		log_event(LOG_WARNING, "event=%s result=dropped id=%s from=\"%s\" reason=bad_srs",
			  what, m->id, safe);
		return 0;
	case SRS_OK:
		break;
	}
	if (address_parse_plain(orig, 1, to) != ADDRESS_OK) {
		log_event(LOG_WARNING, "event=%s result=dropped id=%s from=\"%s\" reason=bad_sender",
			  what, m->id, safe);
		return 0;
	}
	snprintf(text, cap, "%s", orig);
	{
		char osafe[ADDRESS_PATH_MAX * 4 + 8];
		log_event(LOG_INFO, "event=%s result=srs_reversed id=%s from=\"%s\" to=\"%s\"", what,
			  m->id, safe, log_printable(osafe, sizeof(osafe), orig, strlen(orig)));
	}
	return 1;
}

int dsn_send(enum dsn_kind kind, const struct dsn_message *m, const struct dsn_rcpt *rcpts,
	     size_t n)
{
	/* not re-entered: a notice is delivered without sending another */
	static struct msg_out o;
	char id[QUEUE_ID_LEN + 8], staging[PATH_MAX_POSTAGE], to_text[ADDRESS_PATH_MAX + 1];
	const char *what = kind == DSN_FAILED ? "bounce" : "delay_warning";
	struct address to;
	int fd, r;

	if (!m->sender[0])
		return 0; /* never: a notice about a notice would loop */
	r = notice_recipient(m, what, &to, to_text, sizeof(to_text));
	if (r <= 0)
		return r;
	queue_new_id(id, sizeof(id));
	fd = spool_staging_open(id, staging, sizeof(staging));
	if (fd < 0) {
		log_event(LOG_ERR, "event=%s result=error id=%s error=\"spool: %s\"", what, m->id,
			  strerror(errno));
		return -1;
	}
	msg_out_init(&o, fd, 0);
	compose(&o, kind, m, to_text, rcpts, n, id);
	msg_out_flush(&o);
	if (o.error) {
		log_event(LOG_ERR, "event=%s result=error id=%s error=\"spool: %s\"", what, m->id,
			  strerror(o.error));
		close(fd);
		unlink(staging);
		return -1;
	}
	r = deliver_notice(&to, to_text, m->id, id, fd, staging, &o, kind);
	close(fd);
	unlink(staging);
	return r;
}
