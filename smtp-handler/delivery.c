/* DATA: read the message into a staging file (in memory while it is
 * small, spool.h), check it, deliver it to every local Maildir and queue
 * it for remote recipients, and only then answer 250. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "edit.h"
#include "headers.h"
#include "journal.h"
#include "lists.h"
#include "log.h"
#include "maildir.h"
#include "message.h"
#include "session.h"
#include "spool.h"

static void rfc5322_date(char *buf, size_t cap)
{
	time_t now = time(NULL);
	struct tm tm;

	localtime_r(&now, &tm);
	strftime(buf, cap, "%a, %d %b %Y %H:%M:%S %z", &tm);
}

static const char *protocol_name(const struct session *s)
{
	/* RFC 3848 / RFC 6531 "with" values. */
	static const char *const names[2][2][2] = {
		{ { "ESMTP", "ESMTPA" }, { "ESMTPS", "ESMTPSA" } },
		{ { "UTF8SMTP", "UTF8SMTPA" }, { "UTF8SMTPS", "UTF8SMTPSA" } },
	};

	if (!s->esmtp)
		return "SMTP";
	return names[s->tx.smtputf8 ? 1 : 0][s->tls_active ? 1 : 0][s->auth_login[0] ? 1 : 0];
}

static int received_header(const struct session *s, const char *qid, char *buf, size_t cap)
{
	char date[64], auth[128] = "", tls[200] = "", for_clause[ADDRESS_PATH_MAX + 16] = "";
	const char *ip = s->peer.ip[0] ? s->peer.ip : NULL;
	int n;

	rfc5322_date(date, sizeof(date));
	if (s->tls_active)
		snprintf(tls, sizeof(tls), "\n\t(using %s)", s->tls_info);
	if (s->auth_login[0]) {
		if (setting_int(SET_RECEIVED_SHOW_LOGIN))
			snprintf(auth, sizeof(auth), "\n\t(authenticated as %s)", s->auth_login);
		else
			snprintf(auth, sizeof(auth), "\n\t(authenticated)");
	}
	if (s->tx.nrcpts == 1) {
		char safe[ADDRESS_PATH_MAX * 4 + 8];
		log_printable(safe, sizeof(safe), s->tx.rcpts[0], strlen(s->tx.rcpts[0]));
		/* UTF-8 addresses stay as they are in an SMTPUTF8 message. */
		snprintf(for_clause, sizeof(for_clause), "\n\tfor <%s>",
			 s->tx.smtputf8 ? s->tx.rcpts[0] : safe);
	}
	n = snprintf(buf, cap, "Received: from %s (%s%s%s)%s%s\n\tby %s (postage) with %s id %s%s; %s\n",
		     s->helo[0] ? s->helo : "unknown",
		     /* RFC 5321 4.1.3 address literal: [192.0.2.1], [IPv6:2001:db8::1] */
		     !ip ? "" : strchr(ip, ':') ? "[IPv6:" : "[", ip ? ip : "local",
		     ip ? "]" : "", tls, auth, setting(SET_HOSTNAME), protocol_name(s), qid,
		     for_clause, date);
	return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* Writes a block of the message to the staging file, moving it from
 * memory to disk once it outgrows STAGING_MEMORY_MAX. */
static void stage_block(int *fd, char *staging, size_t cap, const char *qid, const char *block,
			size_t len, unsigned long long *stored, int *write_error)
{
	if (*write_error)
		return;
	if (!staging[0] && *stored + len > STAGING_MEMORY_MAX &&
	    spool_staging_to_disk(fd, qid, staging, cap) < 0) {
		*write_error = errno;
		return;
	}
	if (fd_write_all(*fd, block, len) < 0)
		*write_error = errno;
	*stored += len;
}

/* Reads DATA to its end, writing the LF form into *fd in blocks of
 * sizeof(block) (not a write per line). Returns 0 when the terminator came
 * (the verdict in r), -1 when the connection failed (nothing to answer). */
static int read_data(struct session *s, int *fd, char *staging, size_t cap, const char *qid,
		     struct data_reader *r, unsigned long long max, int *write_error)
{
	static char chunk[SMTP_DATA_CHUNK_MAX], block[16 * SMTP_DATA_CHUNK_MAX];
	int saved_timeout = s->io.timeout_ms;
	size_t held = 0;
	unsigned long long stored = 0;

	s->io.timeout_ms = SMTP_DATA_TIMEOUT_MS;
	while (!r->ended) {
		size_t len, n;
		enum io_result res = io_read_chunk(&s->io, chunk, sizeof(chunk), &len);

		if (res != IO_OK) {
			s->io.timeout_ms = saved_timeout;
			if (res == IO_TIMEOUT) {
				reply(s, "421 4.4.2 %s Error: timeout exceeded", setting(SET_HOSTNAME));
				io_flush(&s->io);
			}
			log_event(LOG_NOTICE, "event=data result=%s bytes=%llu",
				  res == IO_TIMEOUT ? "timeout" : "connection_lost", r->wire_bytes);
			return -1;
		}
		if (held + len > sizeof(block)) {
			stage_block(fd, staging, cap, qid, block, held, &stored, write_error);
			held = 0;
		}
		/* data_feed writes at most len bytes. */
		n = data_feed(r, chunk, len, block + held);
		/* Stop keeping it once the message is refused anyway. */
		if (!r->bare && !r->has_nul && r->wire_bytes <= max && !*write_error)
			held += n;
	}
	if (held > 0)
		stage_block(fd, staging, cap, qid, block, held, &stored, write_error);
	s->io.timeout_ms = saved_timeout;
	return 0;
}

static void refuse_storage(struct session *s, int e, const char *what)
{
	if (e == ENOSPC || e == EDQUOT)
		reply(s, "452 4.3.1 Error: insufficient system storage");
	else
		reply(s, "451 4.3.0 Error: %s, try again later", what);
}

/* Quota at the end of DATA, when the size is known (a client need not
 * declare SIZE=). One DATA reply cannot refuse some recipients only: when
 * every destination is a mailbox the message would overflow, it is refused
 * (552 5.2.2 when it could never fit, else 452 4.2.2); when some
 * destination takes it, the full mailboxes get it too rather than a
 * bounce, and RCPT refuses them from then on. Returns -1 after replying. */
static int quota_refusal(struct session *s, const char *qid, off_t size)
{
	int never = 1;

	for (size_t i = 0; i < s->tx.ndests; i++) {
		const struct destination *d = &s->tx.dests[i].dest;
		char dir[PATH_MAX_POSTAGE];
		long long used = 0;

		if (d->kind != DEST_MAILBOX || d->quota_bytes < 0)
			return 0;
		if (maildir_path(setting(SET_MAIL_ROOT), d->mailbox, dir, sizeof(dir), 0) == 0)
			used = maildir_usage(dir);
		if (used + (long long)size <= d->quota_bytes)
			return 0;
		if ((long long)size <= d->quota_bytes)
			never = 0;
	}
	log_event(LOG_INFO, "event=data result=over_quota id=%s size=%lld", qid, (long long)size);
	if (never)
		reply(s, "552 5.2.2 Error: message larger than the mailbox quota");
	else
		reply(s, "452 4.2.2 Error: mailbox full, try again later");
	return -1;
}

/* Every local copy is first written into its Maildir's tmp/, where no
 * reader looks; then the remote recipients are queued (the database
 * commit, which may wait out the busy timeout); only then do the local
 * copies appear in new/. So a failure, or a crash, before the commit
 * leaves nothing a POP3 or IMAP client could already have taken, and the
 * client's retry makes no second copy; a crash after it is finished by
 * the queue runner from the journal. */
static struct maildir_staged staged_fixed[MESSAGE_DESTINATIONS_MAX];
/* staged_fixed, or (when lists add their members' copies) a bigger
 * array made for this message. */
static struct maildir_staged *staged = staged_fixed;
/* For each staged copy: how it is made durable once published. */
enum copy_sync { SYNC_DIR = 0, SYNC_LINKS, SYNC_NONE };
static unsigned char sync_fixed[MESSAGE_DESTINATIONS_MAX];
static unsigned char *copy_sync = sync_fixed;
/* SYNC_LINKS: the file all the links of a list's copy share, open, for
 * one fsync after they are all published (maildir_stage_open). */
static int link_fds[LIST_PARTS_MAX];
static size_t nlink_fds;

static void close_link_fds(void)
{
	for (size_t i = 0; i < nlink_fds; i++)
		close(link_fds[i]);
	nlink_fds = 0;
}

/* The message being delivered, for write_journal. */
static struct {
	const char *qid;
	size_t nstaged;
	int journal;      /* a journal is held */
	size_t nids;      /* queue ids it names */
} pending;

/* Before the queue commit, or before the links when nothing is queued:
 * when more than one step makes the message visible, a journal lets a
 * crash in between be finished or taken back whole (journal.h). */
static int write_journal(const char *const *ids, size_t nids)
{
	if (pending.nstaged + nids < 2)
		return 0;
	if (journal_begin(pending.qid, staged, pending.nstaged, ids, nids) < 0) {
		log_event(LOG_ERR, "event=journal result=error id=%s error=\"%s\"", pending.qid,
			  strerror(errno));
		return -1;
	}
	pending.journal = 1;
	pending.nids = nids;
	return 0;
}

/* Stages the local copies of the lists' parts after the message's own
 * (staged[from..]): the first copy of a part is written, the others are
 * hard links of it, and one fsync of that file makes them all durable.
 * Returns how many, or -1 with errno (the caller discards staged[0..*n)). */
static long stage_list_copies(const char *qid, size_t from, size_t *n)
{
	struct list_part *parts;
	size_t nparts = lists_parts(&parts);

	*n = from;
	for (size_t i = 0; i < nparts; i++) {
		struct list_part *p = &parts[i];
		size_t first = *n;

		for (size_t k = 0; k < p->nmailboxes; k++) {
			char dir[PATH_MAX_POSTAGE];
			int r;

			if (maildir_path(setting(SET_MAIL_ROOT), p->mailboxes[k], dir, sizeof(dir), 1) < 0)
				return -1;
			r = -1;
			if (k > 0) {
				r = maildir_stage_link(dir, &staged[first], &staged[*n]);
				if (r < 0 && errno != EXDEV && errno != EMLINK)
					return -1;
			}
			/* The first copy's fsync after the last publish makes every
			 * link of it durable; one made apart syncs its own new/. */
			copy_sync[*n] = k == 0 ? SYNC_LINKS : r == 0 ? SYNC_NONE : SYNC_DIR;
			if (r < 0 && (k == 0 ? maildir_stage_unsynced : maildir_stage)(
					     dir, p->prefix, p->prefix_len, p->fd, p->size, p->lfs + 2,
					     &staged[*n]) < 0) {
				log_event(LOG_ERR, "event=deliver result=error id=%s mailbox=%s list=%s "
					  "error=\"%s\"", qid, p->mailboxes[k], p->list, strerror(errno));
				return -1;
			}
			(*n)++;
		}
		if (p->nmailboxes == 1)
			copy_sync[first] = SYNC_DIR;
		if (p->nmailboxes == 0)
			continue;
		/* one fsync: the first copy's bytes and every link of it */
		if (maildir_stage_sync(&staged[first]) < 0)
			return -1;
		if (copy_sync[first] == SYNC_LINKS) {
			int lfd = maildir_stage_open(&staged[first]);
			if (lfd < 0 || nlink_fds >= LIST_PARTS_MAX) {
				if (lfd >= 0)
					close(lfd);
				return -1;
			}
			link_fds[nlink_fds++] = lfd;
		}
	}
	return (long)(*n - from);
}

static int deliver(struct session *s, const char *qid, int *fd, char *staging, size_t cap,
		   const struct data_reader *r, off_t size)
{
	/* not re-entered: once per DATA, from the session loop */
	static size_t staged_dest[MESSAGE_DESTINATIONS_MAX];
	static struct queue_rcpt remote[MESSAGE_DESTINATIONS_MAX];
	char sender[ADDRESS_PATH_MAX + 1], prefix[2 * ADDRESS_PATH_MAX + 64];
	struct list_part *parts;
	size_t nstaged = 0, nremote = 0, nown, nlist_local = 0, nparts = lists_parts(&parts);
	struct queue_extra extra = { NULL, 0, NULL, NULL };
	int e;

	/* The lists' local copies need room beside the message's own. */
	for (size_t i = 0; i < nparts; i++)
		nlist_local += parts[i].nmailboxes;
	staged = staged_fixed;
	copy_sync = sync_fixed;
	memset(sync_fixed, 0, sizeof(sync_fixed));
	if (nlist_local > 0) {
		staged = calloc(s->tx.ndests + nlist_local, sizeof(*staged));
		copy_sync = calloc(s->tx.ndests + nlist_local, 1);
		if (!staged || !copy_sync) {
			free(staged);
			free(copy_sync);
			staged = staged_fixed;
			copy_sync = sync_fixed;
			refuse_storage(s, ENOMEM, "out of memory");
			return -1;
		}
	}
	extra.n = lists_queue_entries(&extra.entries);
	if (lists_have_writes())
		extra.hook = lists_commit_hook;

	address_format(&s->tx.sender, sender, sizeof(sender));
	for (size_t i = 0; i < s->tx.ndests; i++) {
		const struct txn_destination *d = &s->tx.dests[i];
		char dir[PATH_MAX_POSTAGE];
		int plen;

		if (d->dest.kind == DEST_LIST)
			continue; /* lists.c did its work */
		if (d->dest.kind == DEST_REMOTE) {
			remote[nremote].recipient = d->dest.address;
			remote[nremote].orig_rcpt = s->tx.rcpts[d->rcpt];
			nremote++;
			continue;
		}
		plen = snprintf(prefix, sizeof(prefix), "Return-Path: <%s>\nDelivered-To: %s\n", sender,
				s->tx.rcpts[d->rcpt]);
		if (plen < 0 || (size_t)plen >= sizeof(prefix) ||
		    maildir_path(setting(SET_MAIL_ROOT), d->dest.mailbox, dir, sizeof(dir), 1) < 0 ||
		    maildir_stage(dir, prefix, (size_t)plen, *fd, size, r->lf_count + 2,
				  &staged[nstaged]) < 0) {
			e = errno;
			log_event(LOG_ERR, "event=deliver result=error id=%s mailbox=%s error=\"%s\"", qid,
				  d->dest.mailbox, strerror(e));
			goto undo;
		}
		staged_dest[nstaged++] = i;
	}
	nown = nstaged;
	if (nlist_local > 0 && stage_list_copies(qid, nown, &nstaged) < 0) {
		e = errno;
		goto undo;
	}
	pending.qid = qid;
	pending.nstaged = nstaged;
	pending.journal = 0;
	pending.nids = 0;
	if (nremote == 0 && extra.n == 0 && !extra.hook && write_journal(NULL, 0) < 0) {
		e = errno;
		goto undo;
	}
	if (extra.n > 0)
		db_checkpoint_defer();
	if ((nremote > 0 || extra.n > 0 || extra.hook) &&
	    queue_outbound(s, qid, fd, staging, cap, size, s->tx.body_8bit || r->eight_bit, sender, remote,
			   nremote, &extra, write_journal) < 0) {
		e = errno;
		log_event(LOG_ERR, "event=enqueue result=error id=%s error=\"%s\"", qid, strerror(e));
		for (size_t k = 0; k < nstaged; k++)
			maildir_discard(&staged[k]);
		journal_end(0);
		refuse_storage(s, e, "queue file write error");
		goto fail;
	}
	/* All the links first, then the fsyncs: a crash between two links
	 * is the only way to some copies and not others, and links are
	 * quick where an fsync may take milliseconds. */
	for (size_t pass = 0; pass < 2; pass++) {
		for (size_t k = 0; k < nstaged; k++) {
			const struct txn_destination *d = k < nown ? &s->tx.dests[staged_dest[k]] : NULL;

			int sr = 0;

			if (pass == 0) {
				sr = maildir_publish(&staged[k]);
			} else {
				/* the lists' copies made of links: one fsync a file */
				if (k == nown)
					for (size_t f = 0; f < nlink_fds && sr == 0; f++)
						sr = fsync(link_fds[f]);
				if (sr == 0 && copy_sync[k] == SYNC_DIR)
					sr = maildir_sync(&staged[k]);
			}
			if (sr < 0) {
				e = errno;
				log_event(LOG_ERR, "event=deliver result=error id=%s mailbox=%s error=\"%s\"",
					  qid, d ? d->dest.mailbox : staged[k].dir, strerror(e));
				/* From here a crash takes every copy back. */
				if (pending.journal && journal_abort() < 0)
					log_event(LOG_ERR, "event=journal result=error id=%s error=\"%s\"",
						  qid, strerror(errno));
				if (nremote > 0 || extra.n > 0)
					queue_outbound_cancel();
				goto undo;
			}
			/* (a list's copies are logged once per list: lists_finish) */
			if (pass == 1 && d)
				log_event(LOG_INFO, "event=deliver result=ok id=%s mailbox=%s rcpt=\"%s\" "
					  "file=%s", qid, d->dest.mailbox, s->tx.rcpts[d->rcpt], staged[k].name);
		}
	}
	journal_end(pending.nids > 1);
	for (size_t i = 0; i < nremote; i++)
		log_event(LOG_INFO, "event=queue result=ok id=%s rcpt=\"%s\"", qid, remote[i].recipient);
	s->messages++;
	s->junk_commands = 0;
	s->errors = 0; /* as Postfix: errors count "without delivering mail" */
	rate_limit_charge(s, s->tx.nrcpts);
	log_event(LOG_INFO,
		  "event=message result=accepted id=%s ip=%s from=\"%s\" size=%lld rcpts=%zu local=%zu "
		  "remote=%zu login=%s tls=%d",
		  qid, s->peer.ip[0] ? s->peer.ip : "local", sender, (long long)size, s->tx.nrcpts, nown,
		  nremote, s->auth_login[0] ? s->auth_login : "-", s->tls_active);
	reply(s, "250 2.0.0 Ok: queued as %s", qid);
	if (extra.n > 0) {
		/* the client has its answer: now the WAL may be copied back */
		io_flush(&s->io);
		db_checkpoint();
	}
	close_link_fds();
	if (staged != staged_fixed) {
		free(staged);
		free(copy_sync);
	}
	staged = staged_fixed;
	copy_sync = sync_fixed;
	return 0;

undo:
	for (size_t k = 0; k < nstaged; k++)
		maildir_discard(&staged[k]);
	journal_end(0);
	refuse_storage(s, e, "local delivery failed");
fail:
	close_link_fds();
	if (extra.n > 0)
		db_checkpoint();
	if (staged != staged_fixed) {
		free(staged);
		free(copy_sync);
	}
	staged = staged_fixed;
	copy_sync = sync_fixed;
	return -1;
}

/* RFC 6409 8.2, 8.3: a message from one of our own users (a client with
 * the right to send) that has no Date: or no Message-ID: field gets one
 * from us, below our Received: line, before it is delivered, queued or
 * signed. Big providers refuse mail without a Message-ID. Mail from
 * outside is never touched (RFC 5321 6.4 leaves that to its submission
 * server). Returns 0 (the staging file is replaced when fields were added;
 * any trouble reading the header section leaves the message as it is),
 * or -1 after a 4xx reply. */
static int add_missing_fields(struct session *s, const char *qid, int *fd, char *staging,
			      size_t cap, const char *received, int hlen, off_t *size,
			      unsigned long long *lf_count)
{
	static char prefix[2048 + 512];
	struct header_field ours;
	const struct header_field *drop[1] = { &ours };
	struct header_block hb;
	char date[64], newpath[PATH_MAX_POSTAGE], name[QUEUE_ID_LEN + 16];
	int has_date, has_id, nfd, n;
	size_t len = (size_t)hlen;
	long pos = -1;
	off_t newsize;

	if (s->tx.checks.active || session_may_relay(s) != 1 ||
	    header_block_read(*fd, hlen, *size, &hb) < 0)
		return 0;
	has_date = header_next(&hb, "date", &pos) != NULL;
	pos = -1;
	has_id = header_next(&hb, "message-id", &pos) != NULL;
	header_block_free(&hb);
	if ((has_date && has_id) || len >= sizeof(prefix))
		return 0;
	memcpy(prefix, received, len);
	if (!has_date) {
		rfc5322_date(date, sizeof(date));
		n = snprintf(prefix + len, sizeof(prefix) - len, "Date: %s\n", date);
		if (n < 0 || (size_t)n >= sizeof(prefix) - len)
			return 0;
		len += (size_t)n;
	}
	if (!has_id) {
		n = snprintf(prefix + len, sizeof(prefix) - len, "Message-ID: <%lld.%s@%s>\n",
			     (long long)time(NULL), qid, setting(SET_HOSTNAME));
		if (n < 0 || (size_t)n >= sizeof(prefix) - len)
			return 0;
		len += (size_t)n;
	}
	/* Our Received: is the first hlen bytes: dropped from the copy and
	 * written again at the head of the prefix, the new fields under it. */
	memset(&ours, 0, sizeof(ours));
	ours.raw_len = (size_t)hlen;
	snprintf(name, sizeof(name), "%s.hdr", qid);
	nfd = header_copy_edited(*fd, *size, prefix, len, drop, 1, name, 1, newpath, sizeof(newpath),
				 &newsize);
	if (nfd < 0) {
		int e = errno;

		log_event(LOG_ERR, "event=data result=spool_error id=%s error=\"%s\"", qid, strerror(e));
		refuse_storage(s, e, "adding Date/Message-ID failed");
		return -1;
	}
	close(*fd);
	if (staging[0])
		unlink(staging);
	*fd = nfd;
	snprintf(staging, cap, "%s", newpath);
	*size = newsize;
	*lf_count += (unsigned long long)!has_date + (unsigned long long)!has_id;
	log_event(LOG_INFO, "event=data added=%s%s%s id=%s", has_date ? "" : "date",
		  !has_date && !has_id ? "," : "", has_id ? "" : "message-id", qid);
	return 0;
}

int staged_edit(struct session *s, const char *qid, const char *suffix, const char *prefix,
		size_t plen, const struct header_field *const *drop, size_t ndrop, int *fd,
		char *staging, size_t cap, off_t *size, unsigned long long *lf_count)
{
	char newpath[PATH_MAX_POSTAGE], name[QUEUE_ID_LEN + 16];
	unsigned long long added = 0, dropped = 0;
	off_t newsize;
	int nfd;

	for (size_t i = 0; i < plen; i++)
		added += prefix[i] == '\n';
	for (size_t i = 0; i < ndrop; i++)
		for (size_t k = 0; k < drop[i]->raw_len; k++)
			dropped += drop[i]->raw[k] == '\n';
	snprintf(name, sizeof(name), "%s.%s", qid, suffix);
	nfd = header_copy_edited(*fd, *size, prefix, plen, drop, ndrop, name, 1, newpath, sizeof(newpath),
				 &newsize);
	if (nfd < 0) {
		int e = errno;

		log_event(LOG_ERR, "event=data result=spool_error id=%s error=\"%s\"", qid, strerror(e));
		reply(s, e == ENOSPC || e == EDQUOT ? "452 4.3.1 Error: insufficient system storage" :
						      "451 4.3.0 Error: cannot store message, try again later");
		return -1;
	}
	close(*fd);
	if (staging[0])
		unlink(staging);
	*fd = nfd;
	snprintf(staging, cap, "%s", newpath);
	*size = newsize;
	/* Maildir's W= counts every LF (a CRLF on the wire). */
	*lf_count = *lf_count + added - dropped;
	return 0;
}

enum cmd_result receive_message(struct session *s)
{
	char qid[QUEUE_ID_LEN + 8], staging[PATH_MAX_POSTAGE], header[2048];
	unsigned long long max = (unsigned long long)setting_int(SET_MAX_MESSAGE_BYTES);
	struct data_reader r;
	int fd, hlen, write_error = 0;
	struct stat st;
	enum cmd_result result;

	queue_new_id(qid, sizeof(qid));
	fd = spool_staging_begin(qid, staging, sizeof(staging));
	if (fd < 0) {
		int e = errno;
		log_event(LOG_ERR, "event=data result=spool_error error=\"%s\"", strerror(e));
		return reply(s, e == ENOSPC || e == EDQUOT ? "452 4.3.1 Error: insufficient system storage" :
							     "451 4.3.0 Error: cannot store message, try again later");
	}
	hlen = received_header(s, qid, header, sizeof(header));
	errno = 0;
	if (hlen < 0 || write(fd, header, (size_t)hlen) != hlen) {
		/* A short write means the disk filled up: say so (RFC 3463 4.3.1). */
		int e = hlen >= 0 && (errno == 0 || errno == ENOSPC || errno == EDQUOT) ? ENOSPC : errno;
		log_event(LOG_ERR, "event=data result=spool_error error=\"%s\"", strerror(e ? e : EIO));
		result = reply(s, e == ENOSPC || e == EDQUOT ? "452 4.3.1 Error: insufficient system storage" :
							       "451 4.3.0 Error: cannot store message, try again later");
		goto done;
	}

	session_enter_state(s, SMTP_STATE_DATA);
	reply(s, "354 End data with <CR><LF>.<CR><LF>");
	io_flush(&s->io);
	data_reader_init(&r);
	if (read_data(s, &fd, staging, sizeof(staging), qid, &r, max, &write_error) < 0) {
		session_end(s, "data_lost");
		result = CMD_CLOSED;
		goto done;
	}

	if (r.bare) {
		log_event(LOG_NOTICE, "event=data result=refused reason=bare_cr_lf id=%s", qid);
		result = reply(s, "550 5.6.0 Error: bare CR or LF in message data is not allowed");
	} else if (r.has_nul) {
		/* RFC 6152: 8BITMIME data holds no NUL, and we offer no
		 * BINARYMIME. A server further on that drops NULs would turn
		 * <CRLF><NUL>.<CRLF> into an end of data (SMTP smuggling). */
		log_event(LOG_NOTICE, "event=data result=refused reason=nul id=%s", qid);
		result = reply(s, "550 5.6.0 Error: NUL in message data is not allowed");
	} else if (r.wire_bytes > max) {
		log_event(LOG_NOTICE, "event=data result=refused reason=too_big id=%s bytes=%llu", qid,
			  r.wire_bytes);
		result = reply(s, "552 5.3.4 Error: message size exceeds fixed limit");
	} else if (r.received > SMTP_RECEIVED_MAX) {
		log_event(LOG_NOTICE, "event=data result=refused reason=loop id=%s received=%d", qid,
			  r.received);
		result = reply(s, "554 5.4.6 Error: too many hops (Received headers), mail loop");
	} else if (write_error) {
		log_event(LOG_ERR, "event=data result=spool_error id=%s error=\"%s\"", qid,
			  strerror(write_error));
		result = reply(s, write_error == ENOSPC || write_error == EDQUOT ?
					  "452 4.3.1 Error: insufficient system storage" :
					  "451 4.3.0 Error: cannot store message, try again later");
	} else if (fstat(fd, &st) < 0) {
		result = reply(s, "451 4.3.0 Error: cannot store message, try again later");
	} else {
		/* The Received line's LFs count for W= too: the prefix's two
		 * are added in deliver(). */
		unsigned long long header_lfs = 0;
		for (int i = 0; i < hlen; i++)
			header_lfs += header[i] == '\n';
		r.lf_count += header_lfs;
		if (quota_refusal(s, qid, st.st_size) == 0 &&
		    session_check_headers(s, fd, hlen, st.st_size) == 0 &&
		    checks_message(s, qid, &fd, staging, sizeof(staging), hlen, &st.st_size,
				   &r.lf_count) == 0 &&
		    add_missing_fields(s, qid, &fd, staging, sizeof(staging), header, hlen,
				       &st.st_size, &r.lf_count) == 0 &&
		    spam_filter_message(s, qid, &fd, staging, sizeof(staging), &st.st_size,
					&r.lf_count) == 0 &&
		    lists_message(s, qid, fd, st.st_size) == 0 &&
		    deliver(s, qid, &fd, staging, sizeof(staging), &r, st.st_size) == 0) {
			lists_finish(1);
			result = CMD_OK;
		} else {
			lists_finish(0);
			result = cmd_refused(s);
		}
	}
done:
	close(fd);
	if (staging[0])
		unlink(staging);
	session_reset_transaction(s);
	return result;
}
