/* Mailing lists in the SMTP handler (README "Mailing lists"). At RCPT,
 * what a list's addresses refuse (a stranger's post to an announce list,
 * an unknown confirmation). At the end of DATA, what mail to each of
 * them does:
 *
 *   post      goes out, or is held for the owner (posting policy);
 *             a message already carrying the list's List-Id is dropped
 *   subscribe, unsubscribe, request (Subject commands)
 *             a confirmation to the address concerned, with a token
 *   confirm   joins, leaves, or sends out a held post
 *   bounces   counts against the member its VERP address names
 *
 * A post that goes out becomes a "part" of the message's delivery: one
 * copy (list headers, subject prefix, "munge from" when the poster's
 * domain asks for DMARC, DKIM-signed by the list's domain), hard-linked
 * into each local member's Maildir and queued once with every remote
 * member as a recipient (VERP: the queue runner gives each its own
 * envelope sender). deliver() commits the parts with the message itself:
 * one journal, one queue transaction, so a post reaches every member or
 * none. The rest (confirmations, holds, bounces) commits here, each with
 * the notice it sends, before delivery. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* strcasestr */
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base64.h"
#include "config.h"
#include "db.h"
#include "dmarc.h"
#include "dns.h"
#include "edit.h"
#include "headers.h"
#include "limits.h"
#include "list.h"
#include "listmail.h"
#include "lists.h"
#include "log.h"
#include "maildir.h"
#include "session.h"
#include "signing.h"
#include "spool.h"

/* The parts this message makes, and what the queue transaction must do
 * with them. */
static struct list_part parts[LIST_PARTS_MAX];
static size_t nparts;
static struct queue_entry part_entries[LIST_PARTS_MAX];
static size_t copies; /* every local and remote copy of every part */
/* Held posts approved by this message: their confirmations are used up
 * in the queue transaction, their files removed after it. */
static struct {
	char list[ADDRESS_PATH_MAX + 1];
	char token[LIST_TOKEN_CHARS + 1];
	char held[64];
} approvals[LIST_PARTS_MAX];
static size_t napprovals;
static size_t nholds;
static const char *cur_qid;

static void part_free(struct list_part *p)
{
	if (p->fd >= 0)
		close(p->fd);
	if (p->path[0])
		unlink(p->path);
	free(p->mailboxes);
	free(p->remote);
	free(p->addrs);
	memset(p, 0, sizeof(*p));
	p->fd = -1;
}

void lists_finish(int delivered)
{
	for (size_t i = 0; i < nparts; i++) {
		struct list_part *p = &parts[i];

		if (delivered)
			log_event(LOG_INFO, "event=list result=posted list=%s id=%s copy=%s local=%zu "
				  "remote=%zu size=%lld", p->list, cur_qid ? cur_qid : "-",
				  p->nremote ? p->qid : "-", p->nmailboxes, p->nremote, (long long)p->size);
		part_free(p);
	}
	for (size_t i = 0; delivered && i < napprovals; i++) {
		char path[PATH_MAX_POSTAGE];
		if (list_held_path(approvals[i].held, path, sizeof(path), 0) == 0)
			unlink(path);
		log_event(LOG_INFO, "event=list result=approved list=%s held=%s", approvals[i].list,
			  approvals[i].held);
	}
	nparts = 0;
	napprovals = 0;
	nholds = 0;
	copies = 0;
	cur_qid = NULL;
}

size_t lists_parts(struct list_part **out)
{
	*out = parts;
	return nparts;
}

int lists_have_writes(void)
{
	return napprovals > 0;
}

int lists_commit_hook(void *ctx)
{
	struct list_pending p;
	long long now = time(NULL);

	(void)ctx;
	for (size_t i = 0; i < napprovals; i++) {
		int r = list_pending_take(approvals[i].list, approvals[i].token, now, &p);
		if (r <= 0) {
			/* approved twice at once: the other one sends it */
			log_event(LOG_NOTICE, "event=list result=approval_gone list=%s held=%s",
				  approvals[i].list, approvals[i].held);
			return -1;
		}
	}
	return 1;
}

size_t lists_queue_entries(const struct queue_entry **out)
{
	size_t n = 0;

	for (size_t i = 0; i < nparts; i++) {
		struct list_part *p = &parts[i];
		struct queue_entry *e;

		if (p->nremote == 0)
			continue;
		e = &part_entries[n++];
		memset(e, 0, sizeof(*e));
		e->id = p->qid;
		e->fd = p->fd;
		e->path = p->path;
		e->sender = p->sender;
		e->size = (unsigned long long)p->size;
		e->body_8bit = p->eight_bit;
		e->smtputf8 = p->smtputf8;
		e->verp = 1;
		e->rcpts = p->remote;
		e->n = p->nremote;
	}
	*out = part_entries;
	return n;
}

/* ---- small helpers ------------------------------------------------------- */

static const char *safe_of(const char *s, char *buf, size_t cap)
{
	return log_printable(buf, cap, s, strlen(s));
}

static int has_utf8(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

static int same_address(const char *a, const char *b)
{
	return strcasecmp(a, b) == 0;
}

/* The flat value of the first field name, or "" (cut to cap). */
static void field_flat(const struct header_block *hb, const char *name, char *out, size_t cap)
{
	long pos = -1;
	const struct header_field *f = header_next(hb, name, &pos);

	out[0] = '\0';
	if (f && header_value_flat(f, out, cap) < 0) {
		/* too long: what fits is enough for our looks */
		size_t n = f->value_len < cap - 1 ? f->value_len : cap - 1;
		memcpy(out, f->value, n);
		out[n] = '\0';
		for (char *c = out; *c; c++)
			if (*c == '\n' || *c == '\r' || *c == '\t')
				*c = ' ';
	}
}

/* Mail a list never answers or counts as a request (RFC 3834 2, 5):
 * a bounce (null sender), an auto-submitted message, bulk and list mail,
 * another list's post. */
static const char *automatic(struct session *s, const struct header_block *hb)
{
	char v[256];
	long pos = -1;

	if (s->tx.sender.is_null)
		return "null_sender";
	field_flat(hb, "auto-submitted", v, sizeof(v));
	if (v[0] && strncasecmp(v, "no", 2) != 0)
		return "auto_submitted";
	field_flat(hb, "precedence", v, sizeof(v));
	if (strcasecmp(v, "bulk") == 0 || strcasecmp(v, "junk") == 0 || strcasecmp(v, "list") == 0)
		return "precedence";
	if (header_next(hb, "list-id", &pos))
		return "list_mail";
	return NULL;
}

/* The Message-ID of a request, for In-Reply-To, when it looks sane. */
static const char *request_id(const struct header_block *hb, char *buf, size_t cap)
{
	field_flat(hb, "message-id", buf, cap);
	if (buf[0] != '<' || buf[strlen(buf) - 1] != '>' || strlen(buf) > 250)
		return NULL;
	for (const char *c = buf; *c; c++)
		if (*c <= ' ' || *c > '~')
			return NULL;
	return buf;
}

/* The address a request speaks for: its From: (one mailbox), else its
 * envelope sender. 1 found, 0 none usable. */
static int requester(struct session *s, const struct header_block *hb, char *out, size_t cap)
{
	static char boxes[2][ADDRESS_PATH_MAX + 1];
	const struct header_field *f;
	struct address a;
	long pos = -1;
	int malformed = 0;

	f = header_next(hb, "from", &pos);
	if (f && !header_next(hb, "from", &pos) && header_mailboxes(f, boxes, 2, &malformed) == 1 &&
	    !malformed && address_parse_plain(boxes[0], 1, &a) == ADDRESS_OK && !a.is_literal &&
	    a.local[0] != '"') {
		address_format(&a, out, cap);
		return 1;
	}
	if (s->tx.sender.is_null || s->tx.sender.is_literal || s->tx.sender.local[0] == '"')
		return 0;
	address_format(&s->tx.sender, out, cap);
	return 1;
}

/* Is address one of a list's own (on this server)? Such an address never
 * joins a list, nor gets a confirmation. */
static int is_list_address(const char *address)
{
	static struct list_info l;
	char arg[ADDRESS_PATH_MAX + 1];
	enum list_role role;
	struct address a;

	if (address_parse_plain(address, 1, &a) != ADDRESS_OK)
		return 0;
	if (domain_is_local(a.domain) != 1)
		return 0;
	return list_lookup(&a, &l, &role, arg, sizeof(arg)) != 0;
}

/* Calls fn with the envelope sender, then each From: author of the
 * message (normalised), until fn returns non-zero: that value, or 0. */
static int each_poster(struct session *s, const struct header_block *hb,
		       int (*fn)(const char *address, const void *arg), const void *arg)
{
	/* not re-entered: fn only compares or looks up */
	static char boxes[HEADER_AUTHORS_MAX][ADDRESS_PATH_MAX + 1];
	char env[ADDRESS_PATH_MAX + 1];
	const struct header_field *f;
	long pos = -1;
	int r;

	if (!s->tx.sender.is_null) {
		address_format(&s->tx.sender, env, sizeof(env));
		if ((r = fn(env, arg)) != 0)
			return r;
	}
	while ((f = header_next(hb, "from", &pos)) != NULL) {
		int malformed = 0;
		size_t n = header_mailboxes(f, boxes, HEADER_AUTHORS_MAX, &malformed);
		for (size_t i = 0; i < n; i++) {
			struct address a;
			char norm[ADDRESS_PATH_MAX + 1];
			if (address_parse_plain(boxes[i], 1, &a) != ADDRESS_OK)
				continue;
			address_format(&a, norm, sizeof(norm));
			if ((r = fn(norm, arg)) != 0)
				return r;
		}
	}
	return 0;
}

static int is_address(const char *address, const void *arg)
{
	return same_address(address, arg);
}

static int is_member(const char *address, const void *arg)
{
	const struct list_info *l = arg;

	return list_is_member(l->address, address);
}

/* Does the envelope sender or a From: author of the message equal
 * address? */
static int from_address(struct session *s, const struct header_block *hb, const char *address)
{
	return each_poster(s, hb, is_address, address);
}

/* Is the envelope sender or a From: author a member of l? 1, 0, -1. */
static int poster_is_member(struct session *s, const struct header_block *hb,
			    const struct list_info *l)
{
	return each_poster(s, hb, is_member, l);
}

/* An announce list's owner posting: is the claim to be the owner backed
 * by more than the envelope (which RCPT checked)? A login that may use
 * the address, a trusted network, or SPF of the owner's domain passing
 * for this client. Otherwise the post waits for the owner's approval. */
static int owner_credible(struct session *s, const struct list_info *l)
{
	struct address owner;

	if (address_parse_plain(l->owner, 1, &owner) != ADDRESS_OK)
		return 0;
	if (s->auth_login[0] && session_login_may_use(s->auth_login, &owner) == 1)
		return 1;
	if (session_trusted_network(s))
		return 1;
	if (session_may_relay(s) == 1 && strcmp(s->relay_reason, "pop_before_smtp") == 0 &&
	    s->pop_login[0] && session_login_may_use(s->pop_login, &owner) == 1)
		return 1;
	return s->tx.checks.active && s->tx.checks.spf_mailfrom == SPF_PASS;
}

/* ---- the copy of a post ------------------------------------------------------ */

/* Is the From: address of the post vouched for, beyond what its header
 * says? A login that may use every From: address in a hosted domain (the
 * tenants rule checked it for AUTH), a trusted network, or a DMARC pass
 * on the way in. */
static int poster_vouched(struct session *s, const struct header_block *hb)
{
	static char boxes[HEADER_AUTHORS_MAX][ADDRESS_PATH_MAX + 1];
	const char *login = s->auth_login[0] ? s->auth_login : NULL;
	const struct header_field *f;
	long pos = -1;

	if (session_trusted_network(s))
		return 1;
	if (s->tx.checks.active && s->tx.checks.from_dmarc_pass)
		return 1;
	if (!login && session_may_relay(s) == 1 && strcmp(s->relay_reason, "pop_before_smtp") == 0)
		login = s->pop_login[0] ? s->pop_login : NULL;
	if (!login)
		return 0;
	while ((f = header_next(hb, "from", &pos)) != NULL) {
		int malformed = 0;
		size_t n = header_mailboxes(f, boxes, HEADER_AUTHORS_MAX, &malformed);

		if (malformed || n == 0)
			return 0;
		for (size_t i = 0; i < n; i++) {
			struct address a;
			if (address_parse_plain(boxes[i], 1, &a) != ADDRESS_OK)
				return 0;
			if (domain_is_local(a.domain) == 1 && session_login_may_use(login, &a) != 1)
				return 0;
		}
	}
	return 1;
}

/* Would the list's signature align with a From: domain of the post
 * (the same organizational domain, RFC 7489 3.1.1)? */
static int from_aligned_with(const struct list_info *l, const struct header_block *hb)
{
	/* not re-entered: fan_out_at calls it before going a depth deeper */
	static char domains[DMARC_FROM_DOMAINS_MAX][ADDRESS_DOMAIN_MAX + 1];
	char ours[ADDRESS_DOMAIN_MAX + 1], theirs[ADDRESS_DOMAIN_MAX + 1];
	const struct header_field *f;
	long pos = -1;
	size_t unchecked = 0;

	dmarc_org_domain(l->domain, ours, sizeof(ours));
	while ((f = header_next(hb, "from", &pos)) != NULL) {
		size_t n = header_address_domains(f, domains, DMARC_FROM_DOMAINS_MAX, &unchecked);
		if (unchecked)
			return 1; /* cannot tell: assume the worst */
		for (size_t i = 0; i < n; i++) {
			dmarc_org_domain(domains[i], theirs, sizeof(theirs));
			if (strcmp(ours, theirs) == 0)
				return 1;
		}
	}
	return 0;
}

/* Does the post ask for "munge from": does a From: domain publish
 * p=quarantine or p=reject (or can it not be told)? Mail checked on the
 * way in has its answer already; else the policies are looked up. */
static int munge_wanted(struct session *s, const struct header_block *hb)
{
	/* not re-entered: fan_out_at calls it before going a depth deeper */
	static char domains[DMARC_FROM_DOMAINS_MAX][ADDRESS_DOMAIN_MAX + 1];
	const struct header_field *f;
	long long deadline;
	long pos = -1;
	size_t n, unchecked = 0;

	if (s->tx.checks.active && s->tx.checks.from_policy_known)
		return s->tx.checks.from_policy >= (int)DMARC_P_QUARANTINE;
	f = header_next(hb, "from", &pos);
	if (!f)
		return 0;
	n = header_address_domains(f, domains, DMARC_FROM_DOMAINS_MAX, &unchecked);
	deadline = dns_deadline(LIST_DMARC_TIME_MS);
	for (size_t i = 0; i < n; i++) {
		struct dmarc_verdict v;

		/* No SPF or DKIM result given: the verdict says only whether
		 * the domain publishes a policy, and which. */
		dmarc_check(domains[i], SPF_NONE, "", NULL, 0, deadline, &v);
		if (v.result == DMARC_TEMPERROR) {
			log_event(LOG_NOTICE, "event=list munge=yes reason=\"DMARC policy of %s unknown\"",
				  domains[i]);
			return 1;
		}
		if (v.policy >= DMARC_P_QUARANTINE)
			return 1;
	}
	return 0;
}

/* Appends text to a quoted-string being built (quotes and backslashes
 * escaped, control characters dropped). */
static void quoted_append(char *out, size_t cap, size_t *o, const char *text, size_t len)
{
	for (size_t i = 0; i < len && *o + 3 < cap; i++) {
		unsigned char c = (unsigned char)text[i];
		if (c < 0x20 || c == 0x7f)
			continue;
		if (c == '"' || c == '\\')
			out[(*o)++] = '\\';
		out[(*o)++] = (char)c;
	}
	out[*o] = '\0';
}

/* The display name for a munged From: "Poster via team" (RFC 5322
 * phrase), from the first author of the original From: value. */
static void munged_phrase(const char *from, const char *list_local, char *out, size_t cap)
{
	const char *lt = strchr(from, '<');
	size_t o = 0;
	char raw[512];
	size_t n;

	if (lt) {
		n = (size_t)(lt - from);
		while (n > 0 && from[n - 1] == ' ')
			n--;
		while (n > 0 && *from == ' ') {
			from++;
			n--;
		}
	} else {
		/* no display name: the address itself */
		n = strcspn(from, ",;(");
		while (n > 0 && from[n - 1] == ' ')
			n--;
	}
	if (n >= sizeof(raw))
		n = sizeof(raw) - 1;
	memcpy(raw, from, n);
	raw[n] = '\0';
	if (n >= 2 && raw[0] == '"' && raw[n - 1] == '"') {
		/* a quoted-string: its content, unescaped */
		size_t k = 0;
		for (size_t i = 1; i + 1 < n; i++) {
			if (raw[i] == '\\' && i + 2 < n)
				i++;
			raw[k++] = raw[i];
		}
		raw[k] = '\0';
		n = k;
	} else if (strstr(raw, "=?")) {
		/* encoded words stay a phrase of their own: atoms follow */
		snprintf(out, cap, "%s via %s", raw, list_local);
		return;
	}
	if (cap < 8)
		return;
	out[o++] = '"';
	quoted_append(out, cap - 1, &o, raw, n);
	quoted_append(out, cap - 1, &o, " via ", 5);
	quoted_append(out, cap - 1, &o, list_local, strlen(list_local));
	out[o++] = '"';
	out[o] = '\0';
}

/* The subject prefix as it goes into a field: itself when printable
 * ASCII, else an RFC 2047 encoded word. */
static void prefix_text(const char *prefix, char *out, size_t cap)
{
	int ascii = 1;

	for (const char *c = prefix; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
			ascii = 0;
	if (ascii) {
		snprintf(out, cap, "%s", prefix);
		return;
	}
	{
		char b64[LIST_PREFIX_MAX * 2 + 8];
		size_t n = base64_encode(prefix, strlen(prefix), b64, sizeof(b64));
		snprintf(out, cap, "=?UTF-8?B?%.*s?=", (int)n, b64);
	}
}

static int drops_field(const struct header_field *f, int prefix, int munge)
{
	static const char *const always[] = { "list-post", "list-unsubscribe", "list-subscribe",
					      "list-owner", "list-help", "list-archive",
					      "precedence" };

	for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++)
		if (header_is(f, always[i]))
			return 1;
	if (prefix && header_is(f, "subject"))
		return 1;
	return munge && (header_is(f, "from") || header_is(f, "reply-to"));
}

/* LFs and 8-bit bytes of the first size bytes of fd. */
static int scan_file(int fd, off_t size, unsigned long long *lfs, int *eight_bit)
{
	static char buf[65536];
	off_t at = 0;

	*lfs = 0;
	*eight_bit = 0;
	while (at < size) {
		ssize_t n = pread(fd, buf, sizeof(buf), at);
		if (n <= 0)
			return -1;
		for (ssize_t i = 0; i < n; i++) {
			*lfs += buf[i] == '\n';
			*eight_bit |= (unsigned char)buf[i] >= 0x80;
		}
		at += n;
	}
	return 0;
}

/* Makes p's copy of the post in src (size bytes, header section in hb):
 * list fields, subject prefix, munged From, long lines broken, signed by
 * the list's domain; on disk (it is linked into the queue). 0, or -1. */
static int make_copy(struct session *s, const struct list_info *l, int src, off_t size,
		     const struct header_block *hb, int munge, struct list_part *p)
{
	/* not re-entered: fan_out_at calls it before going a depth deeper */
	static const struct header_field *drop[MESSAGE_HEADER_FIELDS_MAX];
	static char fields[8192], sig[LIST_DKIM_MAX];
	char id[ADDRESS_PATH_MAX + 8], subj_cur[1024], pfx[LIST_PREFIX_MAX * 2 + 16];
	char name[QUEUE_ID_LEN + 24], tmp_path[PATH_MAX_POSTAGE] = "", wrap_path[PATH_MAX_POSTAGE] = "";
	size_t ndrop = 0, len = 0;
	int prefix = 0, fd = -1, wfd = -1, n, ret = -1;
	off_t csize = 0;
	long slen;

	(void)s;
	if (list_id(l, id, sizeof(id)) < 0)
		return -1;
	if (l->subject_prefix[0]) {
		long spos = -1;
		const struct header_field *sf = header_next(hb, "subject", &spos);

		field_flat(hb, "subject", subj_cur, sizeof(subj_cur));
		prefix_text(l->subject_prefix, pfx, sizeof(pfx));
		/* "Re: [team] ..." keeps the one it has; so does a Subject too
		 * long to rewrite here (it stays whole, without the prefix) */
		prefix = !strcasestr(subj_cur, l->subject_prefix) && !strcasestr(subj_cur, pfx) &&
			 (!sf || sf->value_len + strlen(pfx) + 4096 < sizeof(fields));
	}
	for (size_t i = 0; i < hb->n && ndrop < MESSAGE_HEADER_FIELDS_MAX; i++)
		if (drops_field(&hb->fields[i], prefix, munge))
			drop[ndrop++] = &hb->fields[i];

	/* RFC 2919 and RFC 2369 fields, on top. */
	n = snprintf(fields, sizeof(fields),
		     "List-Id: <%s>\n"
		     "List-Post: %s%s%s%s\n"
		     "List-Help: <mailto:%s-request@%s?subject=help>\n"
		     "List-Subscribe: <mailto:%s-subscribe@%s>\n"
		     "List-Unsubscribe: <mailto:%s-unsubscribe@%s>\n"
		     "List-Owner: <mailto:%s-owner@%s>\n"
		     "Precedence: list\n",
		     id, l->posting == LIST_POSTING_ANNOUNCE ? "NO (posting is for the owner only)" : "<mailto:",
		     l->posting == LIST_POSTING_ANNOUNCE ? "" : l->address,
		     l->posting == LIST_POSTING_ANNOUNCE ? "" : ">", "", l->local, l->domain, l->local,
		     l->domain, l->local, l->domain, l->local, l->domain);
	if (n < 0 || (size_t)n >= sizeof(fields))
		return -1;
	len = (size_t)n;
	if (prefix) {
		long pos = -1;
		const struct header_field *f = header_next(hb, "subject", &pos);
		if (f) {
			/* the original value, folds and encoded words as they were */
			const char *v = f->value;
			size_t vl = f->value_len;
			while (vl > 0 && (*v == ' ' || *v == '\t')) {
				v++;
				vl--;
			}
			n = snprintf(fields + len, sizeof(fields) - len, "Subject: %s %.*s\n", pfx, (int)vl, v);
		} else {
			n = snprintf(fields + len, sizeof(fields) - len, "Subject: %s (no subject)\n", pfx);
		}
		if (n < 0 || (size_t)n >= sizeof(fields) - len)
			return -1;
		len += (size_t)n;
	}
	if (munge) {
		/* The poster's domain asks for DMARC: the copy comes from the
		 * list, the poster stays reachable in Reply-To. */
		char from[1024], reply_to[1024], phrase[600];
		field_flat(hb, "from", from, sizeof(from));
		field_flat(hb, "reply-to", reply_to, sizeof(reply_to));
		munged_phrase(from, l->local, phrase, sizeof(phrase));
		n = snprintf(fields + len, sizeof(fields) - len, "From: %s <%s>\nReply-To: %s%s%s\n", phrase,
			     l->address, reply_to, reply_to[0] ? ", " : "", from);
		if (n < 0 || (size_t)n >= sizeof(fields) - len)
			return -1;
		len += (size_t)n;
	}
	snprintf(name, sizeof(name), "%s.l%zu", p->qid, nparts);
	fd = header_copy_edited(src, size, fields, len, drop, ndrop, name, 1, tmp_path, sizeof(tmp_path),
				&csize);
	if (fd < 0)
		return -1;
	snprintf(name, sizeof(name), "%s.w%zu", p->qid, nparts);
	wfd = message_wrap_copy(name, fd, &csize, wrap_path, sizeof(wrap_path));
	slen = signing_dkim_as(wfd >= 0 ? wfd : fd, csize, l->domain, sig, sizeof(sig));
	if (slen < 0)
		slen = 0; /* logged; the copy goes unsigned rather than not at all */
	p->fd = header_copy_edited(wfd >= 0 ? wfd : fd, csize, sig, (size_t)slen, NULL, 0, p->qid, 0,
				   p->path, sizeof(p->path), &p->size);
	if (p->fd < 0)
		goto out;
	if (scan_file(p->fd, p->size, &p->lfs, &p->eight_bit) < 0)
		goto out;
	ret = 0;
out:
	if (wfd >= 0) {
		close(wfd);
		unlink(wrap_path);
	}
	close(fd);
	if (tmp_path[0])
		unlink(tmp_path);
	return ret;
}

/* ---- members ------------------------------------------------------------------ */

static int name_compare(const void *a, const void *b)
{
	return strcmp((const char *)a, (const char *)b);
}

static int add_mailbox(struct list_part *p, size_t *cap, const char *login)
{
	if (p->nmailboxes == *cap) {
		size_t ncap = *cap ? 2 * *cap : 16;
		void *m = realloc(p->mailboxes, ncap * sizeof(*p->mailboxes));
		if (!m)
			return -1;
		p->mailboxes = m;
		*cap = ncap;
	}
	snprintf(p->mailboxes[p->nmailboxes++], sizeof(p->mailboxes[0]), "%s", login);
	return 0;
}

static int add_remote(struct list_part *p, size_t *cap, const char *rcpt, const char *member)
{
	if (p->nremote == *cap) {
		size_t ncap = *cap ? 2 * *cap : 64;
		void *r = realloc(p->remote, ncap * sizeof(*p->remote));
		void *a;
		if (!r)
			return -1;
		p->remote = r;
		a = realloc(p->addrs, 2 * ncap * sizeof(*p->addrs));
		if (!a)
			return -1;
		p->addrs = a;
		*cap = ncap;
		/* the strings moved: point at them again */
		for (size_t i = 0; i < p->nremote; i++) {
			p->remote[i].recipient = p->addrs[2 * i];
			p->remote[i].orig_rcpt = p->addrs[2 * i + 1];
		}
	}
	snprintf(p->addrs[2 * p->nremote], sizeof(p->addrs[0]), "%s", rcpt);
	snprintf(p->addrs[2 * p->nremote + 1], sizeof(p->addrs[0]), "%s", member);
	p->remote[p->nremote].recipient = p->addrs[2 * p->nremote];
	p->remote[p->nremote].orig_rcpt = p->addrs[2 * p->nremote + 1];
	p->smtputf8 |= has_utf8(rcpt);
	p->nremote++;
	return 0;
}

/* Does the mailbox take another message now (quota)? */
static int mailbox_has_room(const struct destination *d, off_t size)
{
	char dir[PATH_MAX_POSTAGE];

	if (d->quota_bytes < 0)
		return 1;
	if (maildir_path(setting(SET_MAIL_ROOT), d->mailbox, dir, sizeof(dir), 0) < 0)
		return 0;
	return maildir_usage(dir) + (long long)size <= d->quota_bytes;
}

struct nested {
	char address[ADDRESS_PATH_MAX + 1];
};

/* The state of one post's fan-out, allocated once for it and handed down
 * the recursion into nested lists: what a depth still reads while a
 * deeper one runs (the lists among its members, the one being followed)
 * has a slot per depth. */
struct fan_out_work {
	struct nested nested[LIST_NESTING_MAX][LIST_PARTS_MAX];
	struct list_info sub[LIST_NESTING_MAX];
};

/* Every enabled member of l into p: remote ones as queue recipients,
 * local ones resolved to their mailboxes (or forwards, or lists: those go
 * into nested). 0, or -1 after replying. */
static int collect_members(struct session *s, const struct list_info *l, struct list_part *p,
			   struct nested *nested, size_t *nnested)
{
	/* not re-entered: fan_out_at calls it before going a depth deeper */
	static struct destination found[FORWARD_TARGETS_MAX];
	char (*members)[ADDRESS_PATH_MAX + 1] = NULL;
	unsigned char *local = NULL;
	struct db_q *st;
	size_t nmembers = 0, mcap = 0, rcap = 0, bcap = 0;
	char safe[ADDRESS_PATH_MAX * 4 + 8];
	int rc, ret = -1;

	/* One snapshot for every lookup below (a thousand members would
	 * otherwise each take and drop the database's read lock). */
	if (db_read_begin() < 0)
		goto tempfail;
	/* One query: each member, and whether its domain is ours. */
	st = db_stmt(SQL_LIST_MEMBERS);
	if (!st)
		goto tempfail;
	db_bind_text(st, 1, l->address);
	db_bind_int64(st, 2, LIST_MEMBERS_MAX + 1);
	while ((rc = db_step(st)) == DB_ROW) {
		const char *a = db_col_text(st, 0);

		if (nmembers == mcap) {
			size_t ncap = mcap ? 2 * mcap : 256;
			void *m = realloc(members, ncap * sizeof(*members));
			void *k = realloc(local, ncap);
			if (m)
				members = m;
			if (k)
				local = k;
			if (!m || !k) {
				db_reset(st);
				goto tempfail;
			}
			mcap = ncap;
		}
		snprintf(members[nmembers], sizeof(members[0]), "%s", a ? a : "");
		local[nmembers] = (unsigned char)db_col_int(st, 1);
		nmembers++;
	}
	db_reset(st);
	if (rc != DB_DONE)
		goto tempfail;
	if (nmembers > LIST_MEMBERS_MAX) {
		log_event(LOG_WARNING, "event=list result=refused list=%s reason=too_many_members max=%d",
			  l->address, LIST_MEMBERS_MAX);
		reply(s, "550 5.5.3 <%s>: the list has more than %d members, more than this server sends "
		      "one post to", l->address, LIST_MEMBERS_MAX);
		goto out;
	}
	for (size_t i = 0; i < nmembers; i++) {
		struct address a;
		size_t n = 0;

		if (address_parse_plain(members[i], 1, &a) != ADDRESS_OK || a.is_literal) {
			log_event(LOG_WARNING, "event=list result=bad_member list=%s member=\"%s\"", l->address,
				  safe_of(members[i], safe, sizeof(safe)));
			continue;
		}
		if (!local[i]) {
			char norm[ADDRESS_PATH_MAX + 1];
			address_format(&a, norm, sizeof(norm));
			if (add_remote(p, &rcap, norm, norm) < 0)
				goto tempfail;
			continue;
		}
		switch (resolve_recipient(&a, found, FORWARD_TARGETS_MAX, &n)) {
		case RESOLVE_TEMPFAIL:
			goto tempfail;
		case RESOLVE_OK:
			break;
		default:
			log_event(LOG_NOTICE, "event=list result=member_unknown list=%s member=\"%s\"",
				  l->address, safe_of(members[i], safe, sizeof(safe)));
			continue;
		}
		for (size_t k = 0; k < n; k++) {
			const struct destination *d = &found[k];

			if (d->kind == DEST_REMOTE) {
				if (add_remote(p, &rcap, d->address, members[i]) < 0)
					goto tempfail;
			} else if (d->kind == DEST_MAILBOX) {
				if (!d->enabled || !mailbox_has_room(d, p->size)) {
					log_event(LOG_NOTICE, "event=list result=member_skipped list=%s "
						  "mailbox=%s reason=%s", l->address, d->mailbox,
						  d->enabled ? "mailbox_full" : "disabled");
					continue;
				}
				if (add_mailbox(p, &bcap, d->mailbox) < 0)
					goto tempfail;
			} else if (d->list_role == LIST_ROLE_POST && *nnested < LIST_PARTS_MAX) {
				snprintf(nested[(*nnested)++].address, sizeof(nested[0].address), "%s",
					 d->address);
			} else {
				log_event(LOG_NOTICE, "event=list result=member_skipped list=%s member=\"%s\" "
					  "reason=list_address", l->address,
					  safe_of(members[i], safe, sizeof(safe)));
			}
		}
	}
	/* The archive gets what the members get. */
	if (l->archive[0]) {
		char arch[ADDRESS_PATH_MAX + 1];
		struct destination d;
		st = db_stmt(SQL_MAILBOX_QUOTA);
		if (!st)
			goto tempfail;
		db_bind_text(st, 1, l->archive);
		rc = db_step(st);
		memset(&d, 0, sizeof(d));
		snprintf(d.mailbox, sizeof(d.mailbox), "%s", l->archive);
		if (rc == DB_ROW) {
			d.quota_bytes = db_col_is_null(st, 0) ? -1 : db_col_int64(st, 0);
			d.enabled = db_col_int(st, 1);
		}
		db_reset(st);
		snprintf(arch, sizeof(arch), "%s", l->archive);
		if (rc == DB_ROW && d.enabled && mailbox_has_room(&d, p->size)) {
			if (add_mailbox(p, &bcap, arch) < 0)
				goto tempfail;
		} else if (rc == DB_ROW || rc == DB_DONE) {
			log_event(LOG_WARNING, "event=list result=archive_skipped list=%s mailbox=%s", l->address,
				  arch);
		} else {
			goto tempfail;
		}
	}
	/* One copy a mailbox, whichever members lead there. */
	if (p->nmailboxes > 1) {
		size_t k = 1;
		qsort(p->mailboxes, p->nmailboxes, sizeof(p->mailboxes[0]), name_compare);
		for (size_t i = 1; i < p->nmailboxes; i++)
			if (strcmp(p->mailboxes[i], p->mailboxes[k - 1]) != 0)
				memmove(p->mailboxes[k++], p->mailboxes[i], sizeof(p->mailboxes[0]));
		p->nmailboxes = k;
	}
	ret = 0;
	goto out;
tempfail:
	reply(s, "451 4.3.0 Error: cannot read the list's members, try again later");
out:
	db_read_end();
	free(members);
	free(local);
	return ret;
}

/* The post in src goes out to l's members: a part of this message's
 * delivery, then the lists among the members (depth and chain bound
 * them). vouched: the post's From: is known to be the poster's
 * (poster_vouched; a copy from a list of ours is). 0, or -1 after
 * replying. */
static int fan_out_at(struct session *s, struct fan_out_work *w, const struct list_info *l,
		      int src, off_t size, const struct header_block *hb, int depth, const char *chain,
		      int vouched)
{
	struct nested *nested = w->nested[depth];
	struct list_info *sub = &w->sub[depth];
	struct list_part *p;
	size_t nnested = 0, self;
	char id[ADDRESS_PATH_MAX + 8], nchain[(ADDRESS_PATH_MAX + 2) * (LIST_NESTING_MAX + 1)];
	long pos = -1;
	const struct header_field *f;
	int munge;

	if (list_id(l, id, sizeof(id)) < 0)
		return 0;
	/* Loops: the list's own List-Id on it means it went round. */
	while ((f = header_next(hb, "list-id", &pos)) != NULL) {
		if (list_id_matches(f->value, f->value_len, id)) {
			log_event(LOG_NOTICE, "event=list result=dropped list=%s reason=loop id=%s", l->address,
				  cur_qid);
			return 0;
		}
	}
	if (nparts >= LIST_PARTS_MAX) {
		log_event(LOG_WARNING, "event=list result=refused list=%s reason=too_many_lists", l->address);
		reply(s, "550 5.5.3 Error: this message reaches more lists than are followed (%d)",
		      LIST_PARTS_MAX);
		return -1;
	}
	self = nparts++;
	p = &parts[self];
	memset(p, 0, sizeof(*p));
	p->fd = -1;
	snprintf(p->list, sizeof(p->list), "%s", l->address);
	queue_new_id(p->qid, sizeof(p->qid));
	snprintf(p->sender, sizeof(p->sender), "%s-bounces@%s", l->local, l->domain);
	/* a post that needed SMTPUTF8 still does; so does a member's UTF-8 address */
	p->smtputf8 = s->tx.smtputf8;
	/* The copy is signed by the list's domain: a From: in that domain
	 * that nothing vouches for (an outsider writing as a colleague) must
	 * not come out DMARC-aligned, so it is munged too. */
	munge = munge_wanted(s, hb) || (!vouched && from_aligned_with(l, hb));
	if (make_copy(s, l, src, size, hb, munge, p) < 0) {
		int e = errno;
		log_event(LOG_ERR, "event=list result=error list=%s error=\"cannot make the copy: %s\"",
			  l->address, strerror(e));
		reply(s, e == ENOSPC || e == EDQUOT ? "452 4.3.1 Error: insufficient system storage" :
			 "451 4.3.0 Error: cannot make the list's copy, try again later");
		return -1;
	}
	{
		char bounces[ADDRESS_PATH_MAX + 1];
		int plen;

		snprintf(bounces, sizeof(bounces), "%s", p->sender);
		plen = snprintf(p->prefix, sizeof(p->prefix), "Return-Path: <%s>\nDelivered-To: %s\n",
				bounces, l->address);
		if (plen < 0 || (size_t)plen >= sizeof(p->prefix)) {
			reply(s, "451 4.3.0 Error: cannot make the list's copy, try again later");
			return -1;
		}
		p->prefix_len = (size_t)plen;
	}
	if (collect_members(s, l, p, nested, &nnested) < 0)
		return -1;
	copies += p->nmailboxes + p->nremote;
	if (copies > LIST_COPIES_MAX) {
		log_event(LOG_WARNING, "event=list result=refused list=%s reason=too_many_copies max=%d",
			  l->address, LIST_COPIES_MAX);
		reply(s, "550 5.5.3 Error: this message would make more than %d copies through lists",
		      LIST_COPIES_MAX);
		return -1;
	}
	if (munge)
		log_event(LOG_INFO, "event=list munge=yes list=%s id=%s", l->address, cur_qid);
	/* A list among the members gets this copy as its post: it made the
	 * list a member, so its own posting policy is not asked again. */
	snprintf(nchain, sizeof(nchain), "%s<%s>", chain, l->address);
	for (size_t i = 0; i < nnested; i++) {
		struct header_block shb;
		char needle[ADDRESS_PATH_MAX + 3];
		int r;

		snprintf(needle, sizeof(needle), "<%s>", nested[i].address);
		if (strcasestr(nchain, needle)) {
			log_event(LOG_NOTICE, "event=list result=nested_skipped list=%s member=%s reason=loop",
				  l->address, nested[i].address);
			continue;
		}
		if (depth + 1 >= LIST_NESTING_MAX) {
			log_event(LOG_NOTICE, "event=list result=nested_skipped list=%s member=%s reason=depth",
				  l->address, nested[i].address);
			continue;
		}
		r = list_load(nested[i].address, sub);
		if (r < 0) {
			reply(s, "451 4.3.0 Error: cannot read the list, try again later");
			return -1;
		}
		if (r == 0)
			continue;
		/* parts[] does not move: p stays valid */
		if (header_block_read(parts[self].fd, 0, parts[self].size, &shb) < 0) {
			reply(s, "451 4.3.0 Error: cannot read the list's copy, try again later");
			return -1;
		}
		r = fan_out_at(s, w, sub, parts[self].fd, parts[self].size, &shb, depth + 1, nchain, 1);
		header_block_free(&shb);
		if (r < 0)
			return -1;
	}
	return 0;
}

/* fan_out_at from the top, with the state it hands down. */
static int fan_out(struct session *s, const struct list_info *l, int src, off_t size,
		   const struct header_block *hb, int vouched)
{
	struct fan_out_work *w = calloc(1, sizeof(*w));
	int r;

	if (!w) {
		log_event(LOG_ERR, "event=list result=error list=%s error=\"out of memory\"", l->address);
		reply(s, "451 4.3.0 Error: cannot make the list's copy, try again later");
		return -1;
	}
	r = fan_out_at(s, w, l, src, size, hb, 0, "", vouched);
	free(w);
	return r;
}

/* ---- held posts ------------------------------------------------------------------ */

struct pending_ctx {
	const char *list, *address, *action, *token, *held;
	long long ttl;
	int added;
};

static int pending_hook(void *ctx)
{
	struct pending_ctx *c = ctx;
	int r = list_pending_add(c->list, c->address, c->action, c->token, c->held, time(NULL), c->ttl);

	c->added = r > 0;
	return r;
}

/* Keeps the post for the owner: spool_dir/held/<name>, and a notice with
 * a confirmation address. 0, or -1 after replying. */
static int hold_post(struct session *s, const struct list_info *l, int src, off_t size,
		     const struct header_block *hb, const char *why)
{
	char name[QUEUE_ID_LEN + 16], path[PATH_MAX_POSTAGE], token[LIST_TOKEN_CHARS + 1];
	char subject[160], text[NOTICE_TEXT_MAX], confirm[ADDRESS_PATH_MAX + 1];
	char from[512], subj[512], env[ADDRESS_PATH_MAX + 1], safe[ADDRESS_PATH_MAX * 4 + 8];
	struct pending_ctx ctx;
	struct list_notice n;
	int fd, r;

	snprintf(name, sizeof(name), "%s.%zu", cur_qid, nholds++);
	if (list_held_path(name, path, sizeof(path), 1) < 0)
		goto tempfail;
	fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		goto tempfail;
	if (fd_copy_range(fd, src, 0, size) < 0 || fsync(fd) < 0) {
		close(fd);
		unlink(path);
		goto tempfail;
	}
	{
		char dir[PATH_MAX_POSTAGE];
		snprintf(dir, sizeof(dir), "%s/held", setting(SET_SPOOL_DIR));
		fsync_dir(dir);
	}
	if (list_token_new(token) < 0) {
		close(fd);
		unlink(path);
		goto tempfail;
	}
	snprintf(confirm, sizeof(confirm), "%s-confirm+%s@%s", l->local, token, l->domain);
	field_flat(hb, "from", from, sizeof(from));
	field_flat(hb, "subject", subj, sizeof(subj));
	address_format(&s->tx.sender, env, sizeof(env));
	log_printable(from, sizeof(from), from, strlen(from));
	log_printable(subj, sizeof(subj), subj, strlen(subj));
	snprintf(subject, sizeof(subject), "confirm %s", token);
	snprintf(text, sizeof(text),
		 "A post to the list %s is held for your approval:\n\n"
		 "  From:     %s\n"
		 "  Sender:   <%s>\n"
		 "  Subject:  %s\n"
		 "  Why held: %s\n\n"
		 "To send it to the list, reply to this message, or send any mail to\n\n"
		 "  %s\n\n"
		 "from %s within %d days. To discard it, do nothing: it is deleted\n"
		 "then. The post is attached.\n",
		 l->address, from, safe_of(env, safe, sizeof(safe)), subj, why, confirm, l->owner,
		 LIST_HOLD_SECONDS / 86400);
	list_notice_init(&n, l, "owner", l->owner, subject, text);
	n.reply_to = confirm;
	n.attach_fd = fd;
	n.attach_size = size;
	ctx = (struct pending_ctx){ l->address, l->owner, "post", token, name, LIST_HOLD_SECONDS, 0 };
	r = list_notice_send(&n, pending_hook, &ctx);
	close(fd);
	explicit_bzero(token, sizeof(token));
	explicit_bzero(confirm, sizeof(confirm));
	if (r < 0) {
		unlink(path);
		goto tempfail;
	}
	if (r == 0 || !ctx.added) {
		unlink(path);
		log_event(LOG_NOTICE, "event=list result=dropped list=%s id=%s reason=\"held, no notice "
			  "could be sent\"", l->address, cur_qid);
		return 0;
	}
	log_event(LOG_INFO, "event=list result=held list=%s id=%s held=%s reason=\"%s\" sender=\"%s\"",
		  l->address, cur_qid, name, why, safe);
	return 0;
tempfail:
	log_event(LOG_ERR, "event=list result=error list=%s error=\"cannot hold the post: %s\"", l->address,
		  strerror(errno));
	reply(s, errno == ENOSPC || errno == EDQUOT ? "452 4.3.1 Error: insufficient system storage" :
		 "451 4.3.0 Error: cannot hold the post, try again later");
	return -1;
}

/* ---- the roles ------------------------------------------------------------------ */

static int post(struct session *s, const struct list_info *l, int fd, off_t size,
		const struct header_block *hb)
{
	char v[64], id[ADDRESS_PATH_MAX + 8];
	const char *why = NULL;
	long pos = -1;
	const struct header_field *f;
	int m;

	/* A loop is dropped before anything else (fan_out says so too). */
	if (list_id(l, id, sizeof(id)) == 0) {
		while ((f = header_next(hb, "list-id", &pos)) != NULL) {
			if (list_id_matches(f->value, f->value_len, id)) {
				log_event(LOG_NOTICE, "event=list result=dropped list=%s reason=loop id=%s",
					  l->address, cur_qid);
				return 0;
			}
		}
	}
	/* A bounce or an auto-reply sent to the posting address is no post. */
	field_flat(hb, "auto-submitted", v, sizeof(v));
	if (s->tx.sender.is_null || strncasecmp(v, "auto-replied", 12) == 0) {
		log_event(LOG_NOTICE, "event=list result=dropped list=%s id=%s reason=%s", l->address,
			  cur_qid, s->tx.sender.is_null ? "null_sender" : "auto_reply");
		return 0;
	}
	switch (l->posting) {
	case LIST_POSTING_ANYONE:
		break;
	case LIST_POSTING_MODERATED:
		why = "the list is moderated: every post needs your approval";
		break;
	case LIST_POSTING_MEMBERS:
		m = poster_is_member(s, hb, l);
		if (m < 0) {
			reply(s, "451 4.3.0 Error: cannot read the list's members, try again later");
			return -1;
		}
		if (!m)
			why = "the sender is not a member (the list takes posts from members)";
		break;
	case LIST_POSTING_ANNOUNCE:
		/* RCPT let only the owner's address through */
		if (!owner_credible(s, l))
			why = "it claims to come from you, but without a login of yours or an SPF pass for "
			      "your domain";
		break;
	}
	if (why)
		return hold_post(s, l, fd, size, hb, why);
	return fan_out(s, l, fd, size, hb, poster_vouched(s, hb));
}

/* A confirmation to the address concerned (join, leave) or help. */
static int request(struct session *s, const struct list_info *l, const struct header_block *hb,
		   enum list_command cmd)
{
	char who[ADDRESS_PATH_MAX + 1], token[LIST_TOKEN_CHARS + 1], confirm[ADDRESS_PATH_MAX + 1];
	char subject[160], text[NOTICE_TEXT_MAX], idbuf[256], safe[ADDRESS_PATH_MAX * 4 + 8];
	const char *action = cmd == LIST_CMD_SUBSCRIBE ? "subscribe" :
			     cmd == LIST_CMD_UNSUBSCRIBE ? "unsubscribe" : "help";
	const char *skip = automatic(s, hb);
	struct pending_ctx ctx;
	struct list_notice n;
	int member = 0, r;

	if (!skip && !requester(s, hb, who, sizeof(who)))
		skip = "no_address";
	if (!skip && is_list_address(who))
		skip = "list_address";
	if (skip) {
		log_event(LOG_NOTICE, "event=list result=ignored list=%s action=%s id=%s reason=%s",
			  l->address, action, cur_qid, skip);
		return 0;
	}
	safe_of(who, safe, sizeof(safe));
	if (cmd != LIST_CMD_HELP) {
		member = list_member_state(l->address, who); /* 2: enabled */
		if (member < 0)
			goto tempfail;
		/* Nothing to do: no mail either (the address is the one told, so
		 * the asker learns nothing whichever it is). */
		if ((cmd == LIST_CMD_SUBSCRIBE && member == 2) || (cmd == LIST_CMD_UNSUBSCRIBE && !member)) {
			log_event(LOG_INFO, "event=list result=nothing_to_do list=%s action=%s address=\"%s\"",
				  l->address, action, safe);
			return 0;
		}
	}
	list_notice_init(&n, l, "request", who, subject, text);
	n.in_reply_to = request_id(hb, idbuf, sizeof(idbuf));
	if (cmd == LIST_CMD_HELP) {
		snprintf(subject, sizeof(subject), "Help for the list %s", l->address);
		snprintf(text, sizeof(text),
			 "This is the list %s.\n\n"
			 "  To post:             mail to %s%s\n"
			 "  To join:             mail to %s-subscribe@%s\n"
			 "  To leave:            mail to %s-unsubscribe@%s\n"
			 "  Commands:            mail to %s-request@%s with the Subject\n"
			 "                       subscribe, unsubscribe or help\n"
			 "  To reach its owner:  mail to %s-owner@%s\n\n"
			 "Joining and leaving are confirmed by a reply from the address\n"
			 "concerned, so nobody can join or leave in someone else's name.\n",
			 l->address, l->address,
			 l->posting == LIST_POSTING_ANNOUNCE ? " (its owner only)" :
			 l->posting == LIST_POSTING_MEMBERS ? " (members; others wait for the owner)" :
			 l->posting == LIST_POSTING_MODERATED ? " (every post waits for the owner)" : "",
			 l->local, l->domain, l->local, l->domain, l->local, l->domain, l->local, l->domain);
		ctx = (struct pending_ctx){ l->address, who, "help", NULL, NULL, LIST_HELP_SECONDS, 0 };
	} else {
		if (list_token_new(token) < 0)
			goto tempfail;
		snprintf(confirm, sizeof(confirm), "%s-confirm+%s@%s", l->local, token, l->domain);
		snprintf(subject, sizeof(subject), "confirm %s", token);
		snprintf(text, sizeof(text),
			 "Someone, probably you, asked to %s %s %s the list %s.\n\n"
			 "To confirm, reply to this message, or send any mail to\n\n"
			 "  %s\n\n"
			 "from %s within %d days.\n\n"
			 "If you did not ask for this, do nothing: without your reply\n"
			 "nothing happens.\n",
			 cmd == LIST_CMD_SUBSCRIBE ? "add" : "remove", who,
			 cmd == LIST_CMD_SUBSCRIBE ? "to" : "from", l->address, confirm, who,
			 LIST_CONFIRM_SECONDS / 86400);
		n.reply_to = confirm;
		ctx = (struct pending_ctx){ l->address, who, action, token, NULL, LIST_CONFIRM_SECONDS, 0 };
	}
	r = list_notice_send(&n, pending_hook, &ctx);
	explicit_bzero(token, sizeof(token));
	explicit_bzero(confirm, sizeof(confirm));
	explicit_bzero(text, sizeof(text));
	if (r < 0)
		goto tempfail;
	log_event(LOG_INFO, "event=list result=%s list=%s action=%s address=\"%s\" id=%s", r > 0 ?
		  "confirmation_sent" : "not_sent", l->address, action, safe, cur_qid);
	return 0;
tempfail:
	reply(s, "451 4.3.0 Error: cannot answer the request, try again later");
	return -1;
}

static void membership_notice(const struct list_info *l, const char *who, int join)
{
	char subject[ADDRESS_PATH_MAX + 64], text[NOTICE_TEXT_MAX];
	struct list_notice n;

	snprintf(subject, sizeof(subject), join ? "Welcome to %s" : "You have left %s", l->address);
	if (join)
		snprintf(text, sizeof(text),
			 "%s is now a member of the list %s.\n\n"
			 "To post, mail to %s. To leave, mail to %s-unsubscribe@%s.\n",
			 who, l->address, l->address, l->local, l->domain);
	else
		snprintf(text, sizeof(text),
			 "%s is no longer a member of the list %s.\n\n"
			 "To join again, mail to %s-subscribe@%s.\n",
			 who, l->address, l->local, l->domain);
	list_notice_init(&n, l, "request", who, subject, text);
	/* best effort: the membership is made already */
	list_notice_send(&n, NULL, NULL);
}

static int confirm(struct session *s, const struct list_info *l, const char *token,
		   const struct header_block *hb)
{
	char safe[ADDRESS_PATH_MAX * 4 + 8];
	const char *skip = automatic(s, hb);
	struct list_pending p;
	long long now = time(NULL);
	int r;

	/* An auto-reply (a vacation message answering a confirmation's
	 * Reply-To) must never confirm anything. */
	if (skip) {
		log_event(LOG_NOTICE, "event=list result=ignored list=%s action=confirm id=%s reason=%s",
			  l->address, cur_qid, skip);
		return 0;
	}
	r = list_pending_find(l->address, token, now, &p);
	if (r < 0) {
		reply(s, "451 4.3.0 Error: cannot check the confirmation, try again later");
		return -1;
	}
	if (r == 0) {
		log_event(LOG_NOTICE, "event=list result=confirm_unknown list=%s id=%s", l->address, cur_qid);
		reply(s, "550 5.1.1 Error: confirmation code unknown, used or expired");
		return -1;
	}
	safe_of(p.address, safe, sizeof(safe));
	/* Only the address concerned confirms (the owner for a post). */
	if (!from_address(s, hb, p.address)) {
		log_event(LOG_NOTICE, "event=list result=confirm_refused list=%s action=%s address=\"%s\" "
			  "id=%s reason=other_sender", l->address, p.action, safe, cur_qid);
		reply(s, "550 5.7.1 Error: this confirmation must come from the address it was sent to");
		return -1;
	}
	if (strcmp(p.action, "post") == 0) {
		char path[PATH_MAX_POSTAGE];
		struct header_block held_hb;
		struct stat sb;
		int fd;

		/* the same post approved twice in one message goes out once */
		for (size_t i = 0; i < napprovals; i++)
			if (strcmp(approvals[i].held, p.held) == 0)
				return 0;
		if (napprovals >= LIST_PARTS_MAX || list_held_path(p.held, path, sizeof(path), 0) < 0) {
			reply(s, "550 5.5.3 Error: too many approvals in one message");
			return -1;
		}
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &sb) < 0 || header_block_read(fd, 0, sb.st_size, &held_hb) < 0) {
			log_event(LOG_ERR, "event=list result=error list=%s held=%s error=\"%s\"", l->address,
				  p.held, strerror(errno));
			if (fd >= 0)
				close(fd);
			reply(s, "451 4.3.0 Error: cannot read the held post, try again later");
			return -1;
		}
		snprintf(approvals[napprovals].list, sizeof(approvals[0].list), "%s", l->address);
		snprintf(approvals[napprovals].token, sizeof(approvals[0].token), "%s", token);
		snprintf(approvals[napprovals].held, sizeof(approvals[0].held), "%s", p.held);
		napprovals++;
		/* who wrote a held post is not known: only its header says */
		r = fan_out(s, l, fd, sb.st_size, &held_hb, 0);
		header_block_free(&held_hb);
		close(fd);
		return r;
	}
	/* Joining or leaving: the token is used up with the change. */
	if (db_begin() < 0)
		goto tempfail;
	r = list_pending_take(l->address, token, now, &p);
	if (r <= 0 || list_member_set(l->address, p.address, strcmp(p.action, "subscribe") == 0) < 0 ||
	    db_commit() < 0) {
		db_rollback();
		if (r == 0) {
			reply(s, "550 5.1.1 Error: confirmation code unknown, used or expired");
			return -1;
		}
		goto tempfail;
	}
	log_event(LOG_INFO, "event=list result=%s list=%s address=\"%s\" id=%s",
		  strcmp(p.action, "subscribe") == 0 ? "subscribed" : "unsubscribed", l->address, safe,
		  cur_qid);
	membership_notice(l, p.address, strcmp(p.action, "subscribe") == 0);
	return 0;
tempfail:
	reply(s, "451 4.3.0 Error: cannot record the confirmation, try again later");
	return -1;
}

/* Is the message a delivery status report (RFC 3464: multipart/report;
 * report-type=delivery-status)? */
static int is_report(const struct header_block *hb)
{
	char ct[512];

	field_flat(hb, "content-type", ct, sizeof(ct));
	return strncasecmp(ct, "multipart/report", 16) == 0 && strcasestr(ct, "delivery-status");
}

static int bounce(struct session *s, const struct list_info *l, const char *arg, int fd, off_t size,
		  const struct header_block *hb)
{
	static struct list_dsn dsn;
	static char body[LIST_BODY_SCAN_MAX];
	char member[ADDRESS_PATH_MAX + 1] = "", v[64];
	const char *candidates[LIST_DSN_RECIPIENTS_MAX + 1];
	size_t ncand = 0;
	long long limit = setting_int(SET_LIST_BOUNCE_LIMIT);

	if (arg[0] && list_verp_member(arg, member, sizeof(member)) < 0)
		member[0] = '\0';
	if (is_report(hb)) {
		off_t want = size - hb->body < (off_t)sizeof(body) ? size - hb->body : (off_t)sizeof(body);
		ssize_t n = want > 0 ? pread(fd, body, (size_t)want, hb->body) : 0;

		list_dsn_scan(body, n > 0 ? (size_t)n : 0, &dsn);
		if (dsn.failed == 0) {
			/* "delayed", "delivered", "relayed": nothing bounced */
			log_event(LOG_INFO, "event=list_bounce result=ignored list=%s reason=not_failed id=%s",
				  l->address, cur_qid);
			return 0;
		}
		if (member[0])
			candidates[ncand++] = member;
		else
			for (size_t i = 0; i < dsn.nrcpts; i++)
				candidates[ncand++] = dsn.rcpts[i];
	} else {
		/* Any other mail to a member's VERP address counts, but an
		 * auto-reply, which says the copy was delivered. */
		field_flat(hb, "auto-submitted", v, sizeof(v));
		if (strncasecmp(v, "auto-replied", 12) == 0 || !member[0]) {
			log_event(LOG_INFO, "event=list_bounce result=ignored list=%s reason=%s id=%s",
				  l->address, member[0] ? "auto_reply" : "no_member", cur_qid);
			return 0;
		}
		candidates[ncand++] = member;
	}
	for (size_t i = 0; i < ncand; i++) {
		int disabled = 0, r = list_bounce(l->address, candidates[i], time(NULL), limit, &disabled);

		if (r < 0) {
			reply(s, "451 4.3.0 Error: cannot count the bounce, try again later");
			return -1;
		}
		if (disabled)
			list_notify_disabled(l, candidates[i], limit);
	}
	return 0;
}

/* ---- the entry points -------------------------------------------------------------- */

int lists_rcpt(struct session *s, const struct destination *d, const char *safe)
{
	static struct list_info l;
	struct list_pending p;
	char sender[ADDRESS_PATH_MAX + 1], ssafe[ADDRESS_PATH_MAX * 4 + 8];
	int r = list_load(d->address, &l);

	if (r < 0) {
		reply(s, "451 4.3.0 <%s>: Temporary lookup failure, try again later", safe);
		return -1;
	}
	if (r == 0) {
		reply(s, "550 5.1.1 <%s>: user unknown", safe);
		return -1;
	}
	switch ((enum list_role)d->list_role) {
	case LIST_ROLE_POST:
		address_format(&s->tx.sender, sender, sizeof(sender));
		if (l.posting == LIST_POSTING_ANNOUNCE && (s->tx.sender.is_null || !same_address(sender, l.owner))) {
			log_event(LOG_NOTICE, "event=rcpt result=list_announce_only list=%s sender=\"%s\"",
				  l.address, safe_of(sender, ssafe, sizeof(ssafe)));
			reply(s, "550 5.7.1 <%s>: Recipient address rejected: only the list's owner may post "
			      "to this list", safe);
			return -1;
		}
		{
			long n = list_member_count(l.address);
			if (n < 0) {
				reply(s, "451 4.3.0 <%s>: Temporary lookup failure, try again later", safe);
				return -1;
			}
			if (n > LIST_MEMBERS_MAX) {
				log_event(LOG_WARNING, "event=rcpt result=list_too_big list=%s members=%ld max=%d",
					  l.address, n, LIST_MEMBERS_MAX);
				reply(s, "550 5.5.3 <%s>: the list has more than %d members, more than this "
				      "server sends one post to", safe, LIST_MEMBERS_MAX);
				return -1;
			}
		}
		return 0;
	case LIST_ROLE_CONFIRM:
		r = list_pending_find(l.address, d->list_arg, time(NULL), &p);
		if (r < 0) {
			reply(s, "451 4.3.0 <%s>: Temporary lookup failure, try again later", safe);
			return -1;
		}
		if (r == 0) {
			log_event(LOG_NOTICE, "event=rcpt result=list_confirm_unknown list=%s", l.address);
			/* guessing tokens is harvesting */
			harvest_count_refusal(s);
			reply(s, "550 5.1.1 <%s>: confirmation code unknown, used or expired", safe);
			return -1;
		}
		return 0;
	default:
		/* -subscribe, -unsubscribe, -request, -bounces+...: taken from
		 * anyone, the same way for every member or none (a forged VERP
		 * address learns nothing). */
		return 0;
	}
}

int lists_message(struct session *s, const char *qid, int fd, off_t size)
{
	static struct list_info l;
	struct header_block hb;
	int have_hb = 0, ret = 0;

	lists_finish(0);
	cur_qid = qid;
	for (size_t i = 0; i < s->tx.ndests && ret == 0; i++) {
		const struct destination *d = &s->tx.dests[i].dest;
		int r;

		if (d->kind != DEST_LIST)
			continue;
		if (!have_hb) {
			if (header_block_read(fd, 0, size, &hb) < 0) {
				if (errno == EFBIG) {
					reply(s, "552 5.3.4 Error: header section too large for a mailing list");
				} else {
					reply(s, "451 4.3.0 Error: cannot read the message, try again later");
				}
				return -1;
			}
			have_hb = 1;
		}
		r = list_load(d->address, &l);
		if (r < 0) {
			reply(s, "451 4.3.0 Error: cannot read the list, try again later");
			ret = -1;
			break;
		}
		if (r == 0) {
			log_event(LOG_NOTICE, "event=list result=gone list=%s id=%s", d->address, qid);
			continue;
		}
		switch ((enum list_role)d->list_role) {
		case LIST_ROLE_POST:
			ret = post(s, &l, fd, size, &hb);
			break;
		case LIST_ROLE_SUBSCRIBE:
			ret = request(s, &l, &hb, LIST_CMD_SUBSCRIBE);
			break;
		case LIST_ROLE_UNSUBSCRIBE:
			ret = request(s, &l, &hb, LIST_CMD_UNSUBSCRIBE);
			break;
		case LIST_ROLE_REQUEST: {
			char subject[1024], token[LIST_TOKEN_CHARS + 1];
			enum list_command c;

			field_flat(&hb, "subject", subject, sizeof(subject));
			c = list_subject_command(subject, strlen(subject), token, sizeof(token));
			if (c == LIST_CMD_CONFIRM)
				ret = confirm(s, &l, token, &hb);
			else if (c != LIST_CMD_NONE)
				ret = request(s, &l, &hb, c);
			else
				log_event(LOG_NOTICE, "event=list result=ignored list=%s action=request id=%s "
					  "reason=no_command", l.address, qid);
			break;
		}
		case LIST_ROLE_CONFIRM:
			ret = confirm(s, &l, d->list_arg, &hb);
			break;
		case LIST_ROLE_BOUNCES:
			ret = bounce(s, &l, d->list_arg, fd, size, &hb);
			break;
		case LIST_ROLE_OWNER:
			break; /* resolved to the owner at RCPT */
		}
	}
	if (have_hb)
		header_block_free(&hb);
	if (ret < 0)
		lists_finish(0);
	else
		cur_qid = qid;
	return ret;
}
