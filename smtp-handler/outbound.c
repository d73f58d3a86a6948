/* Mail for remote recipients enters the queue here, once: DKIM-signed
 * when one of our users sends it, so every retry sends the same bytes;
 * with an SRS envelope sender when a forward sends it on. And bounces to
 * those SRS addresses, accepted at RCPT and sent back. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "edit.h"
#include "headers.h"
#include "limits.h"
#include "log.h"
#include "maildir.h"
#include "message.h"
#include "session.h"
#include "signing.h"
#include "spool.h"
#include "srs.h"

/* Signs a copy of the staged message when the client has the right to
 * send (AUTH, relay_networks, POP-before-SMTP) and its From: domain has
 * keys. Any trouble leaves the message unsigned, never lost. Returns the
 * copy's fd (path in path, size in *size), or -1 to queue the original. */
static int sign_copy(struct session *s, const char *qid, int fd, off_t *size, char *path,
		     size_t cap)
{
	static char fields[DKIM_FIELDS_MAX];
	char domain[ADDRESS_DOMAIN_MAX + 1], name[QUEUE_ID_LEN + 16];
	off_t signed_size;
	long n;
	int sfd;

	if (session_may_relay(s) != 1)
		return -1;
	n = signing_dkim(fd, *size, fields, sizeof(fields), domain);
	if (n <= 0) {
		if (n < 0)
			log_event(LOG_ERR, "event=dkim result=not_signed id=%s domain=%s", qid,
				  domain[0] ? domain : "-");
		return -1;
	}
	snprintf(name, sizeof(name), "%s.dkim", qid);
	/* On disk: it is linked into the queue. */
	sfd = header_copy_edited(fd, *size, fields, (size_t)n, NULL, 0, name, 0, path, cap,
				 &signed_size);
	if (sfd < 0) {
		log_event(LOG_ERR, "event=dkim result=not_signed id=%s domain=%s error=\"%s\"", qid, domain,
			  strerror(errno));
		return -1;
	}
	log_event(LOG_INFO, "event=dkim result=signed id=%s domain=%s", qid, domain);
	*size = signed_size;
	return sfd;
}

/* RFC 5322 2.1.1: our users' lines longer than MESSAGE_LINE_MAX are
 * broken (LF SPACE) before the message is signed and queued, as Postfix's
 * smtp_line_length_limit does: a server further on would otherwise break
 * or refuse them, and a break after signing would spoil the signature.
 * Mail from outside is sent on as it came. Returns the copy's fd (path in
 * path, size in *size), or -1 when there is nothing to break (or trouble:
 * then the message goes as it is). */
static int wrap_copy(struct session *s, const char *qid, int fd, off_t *size, char *path,
		     size_t cap)
{
	char name[QUEUE_ID_LEN + 16];

	if (session_may_relay(s) != 1)
		return -1;
	snprintf(name, sizeof(name), "%s.wrap", qid);
	return message_wrap_copy(name, fd, size, path, cap);
}

int message_wrap_copy(const char *name, int fd, off_t *size, char *path, size_t cap)
{
	static char in[16384], out[2 * sizeof(in) + 16];
	struct line_wrap w;
	size_t col = 0;
	int too_long = 0, wfd, e;
	off_t at, wsize;

	for (at = 0; at < *size && !too_long;) {
		ssize_t n = pread(fd, in, sizeof(in), at);
		if (n <= 0)
			return -1;
		for (ssize_t i = 0; i < n && !too_long; i++) {
			col = in[i] == '\n' ? 0 : col + 1;
			too_long = col > MESSAGE_LINE_MAX;
		}
		at += n;
	}
	if (!too_long)
		return -1;
	wfd = spool_staging_open(name, path, cap);
	if (wfd < 0)
		goto fail;
	memset(&w, 0, sizeof(w));
	for (at = 0; at < *size;) {
		ssize_t n = pread(fd, in, sizeof(in), at);
		size_t m;
		if (n <= 0)
			goto fail;
		m = line_wrap_feed(&w, in, (size_t)n, out);
		if (fd_write_all(wfd, out, m) < 0)
			goto fail;
		at += n;
	}
	if (fd_write_all(wfd, out, line_wrap_finish(&w, out)) < 0)
		goto fail;
	wsize = lseek(wfd, 0, SEEK_END);
	if (wsize < 0 || lseek(wfd, 0, SEEK_SET) < 0)
		goto fail;
	*size = wsize;
	log_event(LOG_INFO, "event=data result=lines_broken id=%s breaks=%llu", name, w.breaks);
	return wfd;
fail:
	e = errno;
	log_event(LOG_ERR, "event=data result=lines_not_broken id=%s error=\"%s\"", name, strerror(e));
	if (wfd >= 0) {
		close(wfd);
		unlink(path);
	}
	return -1;
}

/* Is remote[i] a destination a forward reached? Its recipient points
 * into s->tx.dests. */
static int is_forwarded(const struct session *s, const struct queue_rcpt *q)
{
	for (size_t i = 0; i < s->tx.ndests; i++)
		if (q->recipient == s->tx.dests[i].dest.address)
			return s->tx.dests[i].dest.forwarded;
	return 0;
}

/* The ids the last queue_outbound queued, for queue_outbound_cancel. */
static char queued_ids[2 + LIST_PARTS_MAX][QUEUE_ID_LEN + 8];
static size_t nqueued;

static void remember_queued(const char *id)
{
	if (nqueued < sizeof(queued_ids) / sizeof(queued_ids[0]))
		snprintf(queued_ids[nqueued++], sizeof(queued_ids[0]), "%s", id);
}

void queue_outbound_cancel(void)
{
	for (size_t i = 0; i < nqueued; i++) {
		log_event(LOG_NOTICE, "event=queue_cancel id=%s", queued_ids[i]);
		queue_remove(queued_ids[i]);
	}
	nqueued = 0;
}

int queue_outbound(struct session *s, const char *qid, int *fd, char *staging, size_t cap, off_t size,
		   int eight_bit, const char *sender, const struct queue_rcpt *remote, size_t nremote,
		   const struct queue_extra *extra,
		   int (*before_commit)(const char *const *ids, size_t n))
{
	const char *ids[2 + LIST_PARTS_MAX] = { NULL };
	/* not re-entered: its hooks (list approvals, the journal) queue nothing */
	static struct queue_rcpt plain[MESSAGE_DESTINATIONS_MAX], fwd[MESSAGE_DESTINATIONS_MAX];
	static struct queue_entry entries[2 + LIST_PARTS_MAX];
	char signed_path[PATH_MAX_POSTAGE], srs_sender[ADDRESS_PATH_MAX + 1], fwd_id[QUEUE_ID_LEN + 8];
	char wrapped_path[PATH_MAX_POSTAGE];
	const char *path = staging, *srs_domain = NULL;
	size_t nplain = 0, nfwd = 0, nentries = 0, nextra = extra ? extra->n : 0;
	int sfd = -1, wfd = -1, qfd = -1, r = 0, e, rewritten = 0;

	nqueued = 0;
	if (nextra > LIST_PARTS_MAX) {
		errno = E2BIG;
		return -1;
	}
	for (size_t i = 0; i < nremote; i++) {
		if (is_forwarded(s, &remote[i])) {
			fwd[nfwd++] = remote[i];
			if (!srs_domain && remote[i].orig_rcpt && strrchr(remote[i].orig_rcpt, '@'))
				srs_domain = strrchr(remote[i].orig_rcpt, '@') + 1;
		} else {
			plain[nplain++] = remote[i];
		}
	}
	/* SRS: the forwarding address's domain is ours, so bounces come back
	 * here and SPF at the next hop checks our own record. */
	if (nfwd > 0 && srs_domain)
		rewritten = signing_srs_forward(&s->tx.sender, srs_domain, session_may_relay(s) == 1, srs_sender,
					sizeof(srs_sender)) == 1;
	/* One queue entry per envelope sender; then the lists' copies. */
	if (nremote > 0) {
		ids[nentries++] = qid;
		if (rewritten && nplain > 0) {
			queue_new_id(fwd_id, sizeof(fwd_id));
			ids[nentries++] = fwd_id;
		}
	}
	for (size_t i = 0; i < nextra; i++)
		ids[nentries + i] = extra->entries[i].id;
	if (before_commit && before_commit(ids, nentries + nextra) < 0)
		return -1;

	if (nremote > 0) {
		wfd = wrap_copy(s, qid, *fd, &size, wrapped_path, sizeof(wrapped_path));
		sfd = sign_copy(s, qid, wfd >= 0 ? wfd : *fd, &size, signed_path, sizeof(signed_path));
		if (sfd >= 0) {
			qfd = sfd;
			path = signed_path;
		} else if (wfd >= 0) {
			qfd = wfd;
			path = wrapped_path;
		} else if (spool_staging_to_disk(fd, qid, staging, cap) < 0) {
			return -1;
		} else {
			/* The queue file is the staging file, linked. */
			qfd = *fd;
		}
	}
	for (size_t i = 0; i < nentries; i++) {
		struct queue_entry *q = &entries[i];

		memset(q, 0, sizeof(*q));
		q->id = ids[i];
		q->fd = qfd;
		q->path = path;
		q->size = (unsigned long long)size;
		q->body_8bit = eight_bit;
		q->smtputf8 = s->tx.smtputf8;
		q->client_ip = s->peer.ip;
		q->auth_login = s->auth_login;
		if (!rewritten) {
			q->sender = sender;
			q->rcpts = remote;
			q->n = nremote;
		} else if (nplain > 0 && i == 0) {
			q->sender = sender;
			q->rcpts = plain;
			q->n = nplain;
		} else {
			q->sender = srs_sender;
			q->rcpts = fwd;
			q->n = nfwd;
		}
	}
	for (size_t i = 0; i < nextra; i++)
		entries[nentries + i] = extra->entries[i];
	r = queue_enqueue_batch(entries, nentries + nextra, extra ? extra->hook : NULL,
				extra ? extra->ctx : NULL);
	if (r > 0) {
		/* the lists' writes could not be made after all */
		errno = EAGAIN;
		r = -1;
	}
	if (r == 0) {
		for (size_t i = 0; i < nentries + nextra; i++)
			remember_queued(ids[i]);
		if (rewritten)
			log_event(LOG_INFO, "event=srs result=rewritten id=%s sender=\"%s\" rcpts=%zu",
				  nplain > 0 ? fwd_id : qid, srs_sender, nfwd);
	}
	e = errno;
	if (sfd >= 0) {
		close(sfd);
		unlink(signed_path);
	}
	if (wfd >= 0) {
		close(wfd);
		unlink(wrapped_path);
	}
	errno = e;
	return r;
}

int rcpt_srs(struct session *s, const struct address *rcpt, const char *safe,
	     struct destination *found, size_t *n)
{
	char orig[ADDRESS_PATH_MAX + 1], osafe[ADDRESS_PATH_MAX * 4 + 8];
	enum srs_result r = signing_srs_reverse(rcpt, orig, sizeof(orig));

	if (r == SRS_NOT_SRS)
		return 0;
	/* An SRS address exists to take bounces (the null sender) back to
	 * the original sender. Anything else sent to it would make us a relay
	 * to whatever address an outsider found in one forwarded message:
	 * refused before its hash is even looked at, so it is no oracle. */
	if (!s->tx.sender.is_null) {
		log_event(LOG_NOTICE, "event=rcpt result=srs_not_bounce rcpt=\"%s\"", safe);
		reply(s, "550 5.7.1 <%s>: Recipient address rejected: an SRS address takes bounces only",
		      safe);
		return -1;
	}
	switch (r) {
	case SRS_NOT_SRS:
		return 0;
	case SRS_TEMPFAIL:
		reply(s, "451 4.3.0 <%s>: Temporary lookup failure, try again later", safe);
		return -1;
	case SRS_FORGED:
		log_event(LOG_NOTICE, "event=rcpt result=srs_forged rcpt=\"%s\"", safe);
		reply(s, "550 5.7.1 <%s>: Recipient address rejected: invalid SRS address", safe);
		return -1;
	case SRS_EXPIRED:
		log_event(LOG_NOTICE, "event=rcpt result=srs_expired rcpt=\"%s\"", safe);
		reply(s, "550 5.1.1 <%s>: Recipient address rejected: SRS address expired", safe);
		return -1;
	case SRS_OK:
		break;
	}
	log_printable(osafe, sizeof(osafe), orig, strlen(orig));
	log_event(LOG_INFO, "event=rcpt result=srs_reversed rcpt=\"%s\" to=\"%s\"", safe, osafe);
	memset(&found[0], 0, sizeof(found[0]));
	found[0].kind = DEST_REMOTE;
	snprintf(found[0].address, sizeof(found[0].address), "%s", orig);
	*n = 1;
	return 1;
}
