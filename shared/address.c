#include "address.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "db.h"
#include "list.h"
#include "log.h"

/* RFC 5322 atext. */
static int is_atext(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

/* A well-formed UTF-8 sequence starting at s (within n bytes): its length,
 * or 0. Overlongs and surrogates are refused. */
size_t utf8_seq(const unsigned char *s, size_t n)
{
	size_t len;
	unsigned int cp;

	if (s[0] < 0xc2 || s[0] > 0xf4)
		return 0;
	len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : 2;
	if (len > n)
		return 0;
	cp = s[0] & (0x7f >> len);
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3f);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return len;
}

static int literal_valid(const char *d, size_t len)
{
	char tmp[ADDRESS_DOMAIN_MAX + 1];
	unsigned char bin[16];

	if (len < 3 || d[0] != '[' || d[len - 1] != ']' || len - 2 >= sizeof(tmp))
		return 0;
	memcpy(tmp, d + 1, len - 2);
	tmp[len - 2] = '\0';
	if (strncasecmp(tmp, "IPv6:", 5) == 0)
		return inet_pton(AF_INET6, tmp + 5, bin) == 1;
	return inet_pton(AF_INET, tmp, bin) == 1;
}

enum address_parse address_long_path_check(const char *p, const char *at, const char *close)
{
	size_t llen, dlen;

	if (!at)
		return ADDRESS_SYNTAX;
	llen = (size_t)(at - p);
	dlen = (size_t)(close - at - 1);
	if (llen == 0 || llen + 1 + dlen > ADDRESS_PATH_MAX || dlen > ADDRESS_DOMAIN_MAX ||
	    p[0] == '.' || at[-1] == '.')
		return ADDRESS_TOOLONG;
	return ADDRESS_OK;
}

void address_long_path_take(struct address *out, const char *p, const char *at, const char *close)
{
	memset(out, 0, sizeof(*out));
	memcpy(out->local, p, (size_t)(at - p));
	for (const char *d = at + 1; d < close; d++)
		out->domain[d - at - 1] = (char)tolower((unsigned char)*d);
}

int address_domain_valid(const char *d, size_t len, int allow_utf8)
{
	size_t label = 0;

	if (len == 0 || len > ADDRESS_DOMAIN_MAX)
		return 0;
	if (d[0] == '[')
		return literal_valid(d, len);
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)d[i];

		if (c == '.') {
			if (label == 0 || d[i - 1] == '-')
				return 0;
			label = 0;
			i++;
			continue;
		}
		if (c >= 0x80) {
			size_t k = allow_utf8 ? utf8_seq((const unsigned char *)d + i, len - i) : 0;
			if (k == 0)
				return 0;
			i += k;
			label += k;
		} else if (isalnum(c) || (c == '-' && label > 0)) {
			i++;
			label++;
		} else {
			return 0;
		}
		if (label > 63)
			return 0;
	}
	return label > 0 && d[len - 1] != '-';
}

/* Dot-string: atoms separated by single dots (UTF-8 when allowed). */
static int dot_string_valid(const char *s, size_t len, int allow_utf8)
{
	size_t atom = 0;

	if (len == 0)
		return 0;
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (atom == 0)
				return 0;
			atom = 0;
			i++;
		} else if (c >= 0x80) {
			size_t k = allow_utf8 ? utf8_seq((const unsigned char *)s + i, len - i) : 0;
			if (k == 0)
				return 0;
			i += k;
			atom += k;
		} else if (is_atext(c)) {
			i++;
			atom++;
		} else {
			return 0;
		}
	}
	return atom > 0;
}

static int has_non_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return 1;
	return 0;
}

/* Parses local@domain from s (up to end), filling out. */
static enum address_parse parse_mailbox(const char *s, const char *end, int allow_utf8,
					struct address *out)
{
	char local[ADDRESS_PATH_MAX + 1];
	size_t llen = 0, content = 0;
	const char *p = s, *at;
	int utf8_seen = 0;

	for (const char *q = s; q < end; q++)
		if ((unsigned char)*q >= 0x80)
			utf8_seen = 1;
	if (utf8_seen && !allow_utf8) {
		/* Still refuse garbage as garbage: only well-formed UTF-8 asks
		 * for SMTPUTF8. */
		for (const char *q = s; q < end;) {
			size_t k = (unsigned char)*q >= 0x80 ?
					   utf8_seq((const unsigned char *)q, (size_t)(end - q)) : 1;
			if (k == 0)
				return ADDRESS_SYNTAX;
			q += k;
		}
		return ADDRESS_NEED_UTF8;
	}

	if (*p == '"') {
		int plain = 1;
		char unq[ADDRESS_PATH_MAX + 1];
		size_t ulen = 0;

		p++;
		while (p < end && *p != '"') {
			unsigned char c = (unsigned char)*p;

			if (c == '\\') {
				if (p + 1 >= end || (unsigned char)p[1] < 32 || (unsigned char)p[1] > 126)
					return ADDRESS_SYNTAX;
				c = (unsigned char)p[1];
				p += 2;
			} else if (c >= 0x80) {
				size_t k = utf8_seq((const unsigned char *)p, (size_t)(end - p));
				if (k == 0)
					return ADDRESS_SYNTAX;
				if (ulen + k >= sizeof(unq))
					return ADDRESS_TOOLONG;
				memcpy(unq + ulen, p, k);
				ulen += k;
				p += k;
				continue;
			} else if (c < 32 || c > 126) {
				return ADDRESS_SYNTAX;
			} else {
				p++;
			}
			if (ulen + 1 >= sizeof(unq))
				return ADDRESS_TOOLONG;
			unq[ulen++] = (char)c;
		}
		if (p >= end)
			return ADDRESS_SYNTAX;
		p++; /* closing quote */
		content = ulen;
		if (!dot_string_valid(unq, ulen, allow_utf8))
			plain = 0;
		if (plain) {
			memcpy(local, unq, ulen);
			llen = ulen;
		} else {
			/* Keep it quoted, with '"' and '\' escaped. */
			local[llen++] = '"';
			for (size_t i = 0; i < ulen; i++) {
				if (llen + 3 >= sizeof(local))
					return ADDRESS_TOOLONG;
				if (unq[i] == '"' || unq[i] == '\\')
					local[llen++] = '\\';
				local[llen++] = unq[i];
			}
			local[llen++] = '"';
		}
		if (p >= end || *p != '@')
			return ADDRESS_SYNTAX;
		at = p;
	} else {
		at = memchr(p, '@', (size_t)(end - p));
		if (!at) {
			if ((size_t)(end - p) == 10 && strncasecmp(p, "postmaster", 10) == 0) {
				memset(out, 0, sizeof(*out));
				out->is_postmaster = 1;
				strcpy(out->local, "postmaster");
				return ADDRESS_OK;
			}
			return ADDRESS_SYNTAX;
		}
		content = (size_t)(at - p);
		if (content > sizeof(local) - 1)
			return ADDRESS_TOOLONG;
		if (!dot_string_valid(p, content, allow_utf8))
			return ADDRESS_SYNTAX;
		memcpy(local, p, content);
		llen = content;
	}
	if (content > ADDRESS_LOCAL_MAX)
		return ADDRESS_TOOLONG;
	local[llen] = '\0';

	{
		const char *d = at + 1;
		size_t dlen = (size_t)(end - d);

		if (dlen > ADDRESS_DOMAIN_MAX)
			return ADDRESS_TOOLONG;
		if (llen + 1 + dlen > ADDRESS_PATH_MAX)
			return ADDRESS_TOOLONG;
		if (!address_domain_valid(d, dlen, allow_utf8))
			return ADDRESS_SYNTAX;
		memset(out, 0, sizeof(*out));
		memcpy(out->local, local, llen + 1);
		for (size_t i = 0; i < dlen; i++)
			out->domain[i] = (char)tolower((unsigned char)d[i]);
		out->domain[dlen] = '\0';
		out->is_literal = d[0] == '[';
		out->non_ascii = has_non_ascii(out->local) || has_non_ascii(out->domain);
	}
	return ADDRESS_OK;
}

enum address_parse address_parse_path(const char *arg, int allow_null, int allow_utf8,
				      struct address *out, const char **rest)
{
	const char *p = arg, *close;

	while (*p == ' ')
		p++;
	if (*p != '<')
		return ADDRESS_SYNTAX;
	p++;
	/* The closing '>' is the first one outside a quoted string. */
	{
		int quoted = 0;
		for (close = p; *close; close++) {
			if (quoted && *close == '\\' && close[1]) {
				close++;
				continue;
			}
			if (*close == '"')
				quoted = !quoted;
			else if (*close == '>' && !quoted)
				break;
		}
		if (*close != '>')
			return ADDRESS_SYNTAX;
	}
	if ((size_t)(close - p) > ADDRESS_PATH_MAX + 255)
		return ADDRESS_TOOLONG;
	if (rest)
		*rest = close + 1;
	if (close == p) {
		if (!allow_null)
			return ADDRESS_SYNTAX;
		memset(out, 0, sizeof(*out));
		out->is_null = 1;
		return ADDRESS_OK;
	}
	if (*p == '@') {
		/* A-d-l: "@one,@two:" -- accepted and ignored (RFC 5321 4.1.2
		 * and appendix C); only the final mailbox counts. */
		const char *colon = memchr(p, ':', (size_t)(close - p));
		const char *q = p;

		if (!colon)
			return ADDRESS_SYNTAX;
		while (q < colon) {
			const char *comma;
			if (*q != '@')
				return ADDRESS_SYNTAX;
			q++;
			comma = memchr(q, ',', (size_t)(colon - q));
			if (!comma)
				comma = colon;
			if (!address_domain_valid(q, (size_t)(comma - q), allow_utf8))
				return ADDRESS_SYNTAX;
			/* "@a,:" -- a comma must be followed by another At-domain */
			if (comma + 1 == colon)
				return ADDRESS_SYNTAX;
			q = comma < colon ? comma + 1 : colon;
		}
		p = colon + 1;
	}
	return parse_mailbox(p, close, allow_utf8, out);
}

enum address_parse address_parse_plain(const char *s, int allow_utf8, struct address *out)
{
	enum address_parse r = parse_mailbox(s, s + strlen(s), allow_utf8, out);

	if (r == ADDRESS_OK && out->is_postmaster)
		return ADDRESS_SYNTAX;
	return r;
}

void address_format(const struct address *a, char *buf, size_t cap)
{
	if (a->is_null)
		snprintf(buf, cap, "%s", "");
	else if (a->is_postmaster && !a->domain[0])
		snprintf(buf, cap, "%s", a->local);
	else
		snprintf(buf, cap, "%s@%s", a->local, a->domain);
}

int domain_is_local(const char *domain)
{
	/* The last answer, kept for the process (a connection: the README's
	 * "a change takes effect at the next connection"): a RCPT asks for
	 * its domain more than once, and on PostgreSQL each asking is a
	 * round trip. Not re-entered: no lookup happens in between. */
	static char last[ADDRESS_DOMAIN_MAX + 1];
	static int last_answer = -1;
	struct db_q *st;
	int rc;

	if (last_answer >= 0 && strcmp(last, domain) == 0)
		return last_answer;
	st = db_stmt(SQL_DOMAIN_IS_LOCAL);
	if (!st)
		return -1;
	db_bind_text(st, 1, domain);
	rc = db_step(st);
	db_reset(st);
	if (rc != DB_ROW && rc != DB_DONE)
		return -1;
	if (strlen(domain) < sizeof(last)) {
		memcpy(last, domain, strlen(domain) + 1);
		last_answer = rc == DB_ROW;
	}
	return rc == DB_ROW;
}

/* Looks up the mailbox row of an address (exact match). 1 found, 0 not,
 * -1 trouble. */
static int lookup_mailbox(const char *addr, struct destination *d)
{
	struct db_q *st = db_stmt(SQL_ADDRESS_MAILBOX);
	int rc;

	if (!st)
		return -1;
	db_bind_text(st, 1, addr);
	rc = db_step(st);
	if (rc == DB_ROW) {
		const char *login = db_col_text(st, 0);
		memset(d, 0, sizeof(*d));
		d->kind = DEST_MAILBOX;
		snprintf(d->mailbox, sizeof(d->mailbox), "%s", login ? login : "");
		d->quota_bytes = db_col_is_null(st, 1) ? -1 : db_col_int64(st, 1);
		d->enabled = db_col_int(st, 2);
	}
	db_reset(st);
	if (rc == DB_ROW)
		return 1;
	return rc == DB_DONE ? 0 : -1;
}

/* The state of one resolve_recipient call, allocated once for it and
 * handed down the recursion (forwards, list owners, the postmaster
 * fallbacks). What a depth of expand() still reads while a deeper call
 * runs (its forward targets, its list) has a slot per depth, so no call
 * overwrites its caller's (STYLE.md: no static state across recursion). */
struct resolver {
	struct destination *out;
	size_t max, n;
	char visited[FORWARD_TARGETS_MAX][ADDRESS_PATH_MAX + 1];
	size_t nvisited;
	int loop, tempfail;
	/* expand() runs at depths 0 .. FORWARD_DEPTH_MAX. */
	char targets[FORWARD_DEPTH_MAX + 1][FORWARD_TARGETS_MAX][ADDRESS_PATH_MAX + 1];
	struct list_info list[FORWARD_DEPTH_MAX + 1];
};

static void add_destination(struct resolver *r, const struct destination *d)
{
	for (size_t i = 0; i < r->n; i++) {
		if (r->out[i].kind != d->kind)
			continue;
		if (d->kind == DEST_MAILBOX && strcmp(r->out[i].mailbox, d->mailbox) == 0)
			return;
		if (d->kind == DEST_REMOTE && strcasecmp(r->out[i].address, d->address) == 0)
			return;
		if (d->kind == DEST_LIST && strcasecmp(r->out[i].address, d->address) == 0 &&
		    r->out[i].list_role == d->list_role && strcmp(r->out[i].list_arg, d->list_arg) == 0)
			return;
	}
	if (r->n < r->max)
		r->out[r->n++] = *d;
}

static int expand(struct resolver *r, const struct address *a, int depth);

/* Expands the forwards of key (an address or "@domain"); 1 when any row
 * exists. */
static int expand_forwards(struct resolver *r, const char *key, int depth)
{
	char (*targets)[ADDRESS_PATH_MAX + 1] = r->targets[depth];
	size_t nt = 0;
	struct db_q *st = db_stmt(SQL_FORWARD_TARGETS);
	int rc;

	if (!st) {
		r->tempfail = 1;
		return 0;
	}
	db_bind_text(st, 1, key);
	db_bind_int64(st, 2, FORWARD_TARGETS_MAX);
	while ((rc = db_step(st)) == DB_ROW && nt < FORWARD_TARGETS_MAX) {
		const char *t = db_col_text(st, 0);
		snprintf(targets[nt++], ADDRESS_PATH_MAX + 1, "%s", t ? t : "");
	}
	db_reset(st);
	if (rc != DB_DONE && rc != DB_ROW) {
		r->tempfail = 1;
		return 0;
	}
	if (nt == 0)
		return 0;
	if (depth >= FORWARD_DEPTH_MAX) {
		r->loop = 1;
		log_event(LOG_WARNING, "event=forward result=too_deep address=\"%s\"", key);
		return 1;
	}
	for (size_t i = 0; i < nt; i++) {
		struct address t;

		if (address_parse_plain(targets[i], 1, &t) != ADDRESS_OK) {
			log_event(LOG_WARNING, "event=forward result=bad_target address=\"%s\"", key);
			continue;
		}
		expand(r, &t, depth + 1);
	}
	return 1;
}

/* A mailing list's address (list.h): 1 found, 0 not, -1 trouble (noted
 * in r). The owner address goes where the owner's address goes. */
static int expand_list(struct resolver *r, const struct address *a, int depth)
{
	struct list_info *l = &r->list[depth];
	char arg[ADDRESS_PATH_MAX + 1];
	enum list_role role;
	struct destination d;
	struct address owner;
	int m = list_lookup(a, l, &role, arg, sizeof(arg));

	if (m < 0) {
		r->tempfail = 1;
		return -1;
	}
	if (m == 0)
		return 0;
	if (role == LIST_ROLE_OWNER) {
		if (address_parse_plain(l->owner, 1, &owner) != ADDRESS_OK) {
			log_event(LOG_WARNING, "event=list result=bad_owner list=\"%s\"", l->address);
			return 0;
		}
		if (depth >= FORWARD_DEPTH_MAX) {
			r->loop = 1;
			return 1;
		}
		/* The owner is reached like a forward's target (SRS when remote). */
		return expand(r, &owner, depth + 1) ? 1 : 0;
	}
	memset(&d, 0, sizeof(d));
	d.kind = DEST_LIST;
	d.enabled = 1;
	snprintf(d.address, sizeof(d.address), "%s", l->address);
	d.list_role = (int)role;
	snprintf(d.list_arg, sizeof(d.list_arg), "%s", arg);
	add_destination(r, &d);
	return 1;
}

/* The mailbox and the forwards of key (an address, or "@domain" for the
 * catch-all) into r: 1 when it has either, 0 when neither, -1 on trouble
 * (r->tempfail set). */
static int expand_key(struct resolver *r, const char *key, int depth)
{
	struct destination d;
	int m = lookup_mailbox(key, &d), found = 0;

	if (m < 0) {
		r->tempfail = 1;
		return -1;
	}
	if (m > 0) {
		add_destination(r, &d);
		found = 1;
	}
	if (expand_forwards(r, key, depth))
		found = 1;
	return found;
}

static int expand(struct resolver *r, const struct address *a, int depth)
{
	char addr[ADDRESS_PATH_MAX + 1], key[ADDRESS_DOMAIN_MAX + 2];
	struct destination d;
	int local, m;

	address_format(a, addr, sizeof(addr));
	for (size_t i = 0; i < r->nvisited; i++) {
		if (strcasecmp(r->visited[i], addr) == 0) {
			r->loop = 1;
			return 0;
		}
	}
	if (r->nvisited >= FORWARD_TARGETS_MAX) {
		r->loop = 1;
		return 0;
	}
	memcpy(r->visited[r->nvisited++], addr, sizeof(addr));

	local = a->is_literal ? 0 : domain_is_local(a->domain);
	if (local < 0) {
		r->tempfail = 1;
		return 0;
	}
	if (!local) {
		if (depth == 0)
			return 0;
		memset(&d, 0, sizeof(d));
		d.kind = DEST_REMOTE;
		d.forwarded = 1;
		memcpy(d.address, addr, sizeof(d.address));
		add_destination(r, &d);
		return 1;
	}

	m = expand_key(r, addr, depth);
	if (m != 0)
		return m > 0;
	/* Only an address that is nothing else may be a list's: a session
	 * that involves no list pays no query for one. */
	m = expand_list(r, a, depth);
	if (m != 0)
		return m > 0;
	snprintf(key, sizeof(key), "@%s", a->domain);
	return expand_key(r, key, depth) > 0;
}

/* Expands one hosted address into out, from a fresh start of r. Nothing
 * of r is read after this returns (its result and *n are copied out), so
 * resolve() may use r again for a fallback. */
static enum resolve_result expand_recipient(struct resolver *r, const struct address *rcpt,
					    struct destination *out, size_t max, size_t *n)
{
	r->out = out;
	r->max = max;
	r->n = 0;
	r->nvisited = 0;
	r->loop = 0;
	r->tempfail = 0;
	expand(r, rcpt, 0);
	*n = r->n;
	if (r->tempfail)
		return RESOLVE_TEMPFAIL;
	if (r->n > 0)
		return RESOLVE_OK;
	if (r->loop)
		return RESOLVE_LOOP;
	return RESOLVE_UNKNOWN;
}

/* postmaster_fallback: a hosted domain's postmaster that the domain does
 * not define goes where <postmaster> goes (RFC 5321 4.5.1: the postmaster
 * of every domain we serve must be accepted). 0 inside that fallback. */
static enum resolve_result resolve(struct resolver *r, const struct address *rcpt,
				   struct destination *out, size_t max, size_t *n,
				   int postmaster_fallback)
{
	struct address pm;
	enum resolve_result got;
	int local;

	*n = 0;

	if (rcpt->is_postmaster && !rcpt->domain[0]) {
		/* RFC 5321 4.5.1: <postmaster> without a domain must be
		 * accepted: postmaster@hostname when we host that domain, else
		 * the postmaster of the first hosted domain that has one. */
		struct db_q *st;
		enum resolve_result res = RESOLVE_UNKNOWN;

		pm = *rcpt;
		snprintf(pm.domain, sizeof(pm.domain), "%s", setting(SET_HOSTNAME));
		for (char *c = pm.domain; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		local = domain_is_local(pm.domain);
		if (local < 0)
			return RESOLVE_TEMPFAIL;
		if (local && (got = resolve(r, &pm, out, max, n, 0)) != RESOLVE_UNKNOWN)
			return got;
		st = db_stmt(SQL_DOMAIN_NAMES);
		if (!st)
			return RESOLVE_TEMPFAIL;
		db_bind_int64(st, 1, POSTMASTER_DOMAINS_MAX);
		{
			/* On the stack: the resolve() below is given a domain,
			 * so it does not come back into this branch. */
			char names[POSTMASTER_DOMAINS_MAX][ADDRESS_DOMAIN_MAX + 1];
			size_t count = 0;
			while (count < POSTMASTER_DOMAINS_MAX && db_step(st) == DB_ROW) {
				const char *d = db_col_text(st, 0);
				snprintf(names[count++], ADDRESS_DOMAIN_MAX + 1, "%s", d ? d : "");
			}
			db_reset(st);
			for (size_t i = 0; i < count && res != RESOLVE_OK; i++) {
				snprintf(pm.domain, sizeof(pm.domain), "%s", names[i]);
				for (char *c = pm.domain; *c; c++)
					*c = (char)tolower((unsigned char)*c);
				res = resolve(r, &pm, out, max, n, 0);
				if (res == RESOLVE_TEMPFAIL)
					return res;
			}
		}
		return res;
	}
	local = rcpt->is_literal ? 0 : domain_is_local(rcpt->domain);
	if (local < 0)
		return RESOLVE_TEMPFAIL;
	if (!local)
		return RESOLVE_NOT_LOCAL;
	got = expand_recipient(r, rcpt, out, max, n);
	if (got != RESOLVE_UNKNOWN)
		return got;
	if (postmaster_fallback && strcasecmp(rcpt->local, "postmaster") == 0) {
		enum resolve_result res;

		memset(&pm, 0, sizeof(pm));
		pm.is_postmaster = 1;
		strcpy(pm.local, "postmaster");
		res = resolve(r, &pm, out, max, n, 0);
		return res == RESOLVE_OK || res == RESOLVE_TEMPFAIL ? res : RESOLVE_UNKNOWN;
	}
	return RESOLVE_UNKNOWN;
}

enum resolve_result resolve_recipient(const struct address *rcpt, struct destination *out,
				      size_t max, size_t *n)
{
	/* Large (a slot per forward depth): on the heap, once per call. */
	struct resolver *r = calloc(1, sizeof(*r));
	enum resolve_result res;

	*n = 0;
	if (!r) {
		log_event(LOG_ERR, "event=resolve result=no_memory");
		return RESOLVE_TEMPFAIL;
	}
	res = resolve(r, rcpt, out, max, n, 1);
	free(r);
	return res;
}

int address_owner(const struct address *a, char *login, size_t cap)
{
	char addr[ADDRESS_PATH_MAX + 1], key[ADDRESS_DOMAIN_MAX + 2];
	struct destination d;
	int m;

	address_format(a, addr, sizeof(addr));
	m = lookup_mailbox(addr, &d);
	if (m == 0) {
		snprintf(key, sizeof(key), "@%s", a->domain);
		m = lookup_mailbox(key, &d);
	}
	if (m > 0)
		snprintf(login, cap, "%s", d.mailbox);
	return m;
}
