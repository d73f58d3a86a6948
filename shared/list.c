#include "list.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "maildir.h"
#include "tls-crypto.h"

static const char token_alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";

/* The suffixes of a list's role addresses, without and with an argument. */
static const struct {
	const char *suffix;
	enum list_role role;
} bare_roles[] = {
	{ "-subscribe", LIST_ROLE_SUBSCRIBE },
	{ "-unsubscribe", LIST_ROLE_UNSUBSCRIBE },
	{ "-request", LIST_ROLE_REQUEST },
	{ "-owner", LIST_ROLE_OWNER },
	{ "-bounces", LIST_ROLE_BOUNCES },
}, arg_roles[] = {
	{ "-bounces", LIST_ROLE_BOUNCES },
	{ "-confirm", LIST_ROLE_CONFIRM },
};

const char *list_role_name(enum list_role r)
{
	switch (r) {
	case LIST_ROLE_POST:
		return "post";
	case LIST_ROLE_SUBSCRIBE:
		return "subscribe";
	case LIST_ROLE_UNSUBSCRIBE:
		return "unsubscribe";
	case LIST_ROLE_REQUEST:
		return "request";
	case LIST_ROLE_OWNER:
		return "owner";
	case LIST_ROLE_BOUNCES:
		return "bounces";
	case LIST_ROLE_CONFIRM:
		return "confirm";
	}
	return "post";
}

const char *list_posting_name(enum list_posting p)
{
	switch (p) {
	case LIST_POSTING_MEMBERS:
		return "members";
	case LIST_POSTING_ANYONE:
		return "anyone";
	case LIST_POSTING_MODERATED:
		return "moderated";
	case LIST_POSTING_ANNOUNCE:
		return "announce";
	}
	return "members";
}

/* Does s (n bytes) end with suffix, case-insensitively, with something
 * before it? */
static int ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);

	return n > k && strncasecmp(s + n - k, suffix, k) == 0;
}

int list_split_local(const char *local, char *base, size_t cap, enum list_role *role, char *arg,
		     size_t argcap)
{
	const char *plus = strchr(local, '+');
	size_t n = plus ? (size_t)(plus - local) : strlen(local);

	*role = LIST_ROLE_POST;
	if (argcap > 0)
		arg[0] = '\0';
	if (plus) {
		for (size_t i = 0; i < sizeof(arg_roles) / sizeof(arg_roles[0]); i++) {
			size_t k = strlen(arg_roles[i].suffix);

			if (!ends_with(local, n, arg_roles[i].suffix) || !plus[1])
				continue;
			if (n - k >= cap || strlen(plus + 1) >= argcap)
				return -1;
			if (arg_roles[i].role == LIST_ROLE_CONFIRM && !list_token_syntax(plus + 1))
				break;
			memcpy(base, local, n - k);
			base[n - k] = '\0';
			snprintf(arg, argcap, "%s", plus + 1);
			*role = arg_roles[i].role;
			return 1;
		}
	} else {
		for (size_t i = 0; i < sizeof(bare_roles) / sizeof(bare_roles[0]); i++) {
			size_t k = strlen(bare_roles[i].suffix);

			if (!ends_with(local, n, bare_roles[i].suffix))
				continue;
			if (n - k >= cap)
				return -1;
			memcpy(base, local, n - k);
			base[n - k] = '\0';
			*role = bare_roles[i].role;
			return 1;
		}
	}
	if (strlen(local) >= cap)
		return -1;
	snprintf(base, cap, "%s", local);
	return 0;
}

int list_verp_address(const char *bounces, const char *member, char *out, size_t cap)
{
	const char *at = strrchr(bounces, '@'), *mat = strrchr(member, '@');
	int n;

	if (!at || !mat || mat == member || !mat[1] || strchr(member, '"') || strchr(member, '\\') ||
	    strchr(bounces, '+'))
		return -1;
	n = snprintf(out, cap, "%.*s+%.*s=%s@%s", (int)(at - bounces), bounces, (int)(mat - member),
		     member, mat + 1, at + 1);
	if (n < 0 || (size_t)n >= cap || (size_t)n > ADDRESS_PATH_MAX)
		return -1;
	return 0;
}

int list_verp_member(const char *arg, char *out, size_t cap)
{
	const char *eq = strrchr(arg, '=');
	struct address a;
	int n;

	/* list_verp_address never quotes: neither does a real VERP address */
	if (!eq || eq == arg || !eq[1] || strchr(arg, '@') || strchr(arg, '"') || strchr(arg, '\\'))
		return -1;
	n = snprintf(out, cap, "%.*s@%s", (int)(eq - arg), arg, eq + 1);
	if (n < 0 || (size_t)n >= cap)
		return -1;
	if (address_parse_plain(out, 1, &a) != ADDRESS_OK || a.is_literal) {
		out[0] = '\0';
		return -1;
	}
	/* The normal form: the domain lower-cased. */
	address_format(&a, out, cap);
	return 0;
}

int list_of_bounces(const char *bounces, char *out, size_t cap)
{
	const char *at = strrchr(bounces, '@'), *plus = strchr(bounces, '+');
	size_t n;
	int k;

	if (!at)
		return -1;
	n = plus && plus < at ? (size_t)(plus - bounces) : (size_t)(at - bounces);
	if (!ends_with(bounces, n, "-bounces"))
		return -1;
	n -= strlen("-bounces");
	k = snprintf(out, cap, "%.*s%s", (int)n, bounces, at);
	return k < 0 || (size_t)k >= cap ? -1 : 0;
}

int list_token_new(char out[LIST_TOKEN_CHARS + 1])
{
	unsigned char rnd[17];
	size_t got = 0;

	/* 130 bits: unguessable, and 26 characters fit any local part. */
	while (got < sizeof(rnd)) {
		ssize_t n = getrandom(rnd + got, sizeof(rnd) - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		got += (size_t)n;
	}
	for (size_t i = 0; i < LIST_TOKEN_CHARS; i++) {
		size_t bit = i * 5;
		unsigned v = ((unsigned)rnd[bit / 8] << 8 | (unsigned)rnd[bit / 8 + 1]) >> (11 - bit % 8);
		out[i] = token_alphabet[v & 31];
	}
	out[LIST_TOKEN_CHARS] = '\0';
	explicit_bzero(rnd, sizeof(rnd));
	return 0;
}

int list_token_syntax(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++) {
		if (n >= LIST_TOKEN_CHARS || !strchr(token_alphabet, tolower((unsigned char)s[n])))
			return 0;
	}
	return n == LIST_TOKEN_CHARS;
}

int list_token_hash(const char *token, char hex[65])
{
	char lower[LIST_TOKEN_CHARS + 1];
	unsigned char digest[32];

	if (!list_token_syntax(token))
		return -1;
	for (size_t i = 0; i <= LIST_TOKEN_CHARS; i++)
		lower[i] = (char)tolower((unsigned char)token[i]);
	if (tls_library_load() < 0 ||
	    dl_gnutls_hash_fast(GNUTLS_DIG_SHA256, lower, LIST_TOKEN_CHARS, digest) < 0)
		return -1;
	for (size_t i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	return 0;
}

/* ---- the Subject commands ---------------------------------------------- */

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The next word of s[*i..len): letters, digits and what a token holds. */
static size_t next_word(const char *s, size_t len, size_t *i, const char **word)
{
	size_t start;

	while (*i < len && is_space(s[*i]))
		(*i)++;
	start = *i;
	while (*i < len && !is_space(s[*i]))
		(*i)++;
	*word = s + start;
	return *i - start;
}

static int word_is(const char *w, size_t n, const char *what)
{
	return n == strlen(what) && strncasecmp(w, what, n) == 0;
}

enum list_command list_subject_command(const char *subject, size_t len, char *token, size_t cap)
{
	static const char *const replies[] = { "re:", "aw:", "sv:", "fw:", "fwd:", "wg:", "tr:" };
	size_t i = 0, n;
	const char *w;

	if (cap > 0)
		token[0] = '\0';
	/* "confirm <token>" anywhere: a reply to a confirmation ("Re: confirm
	 * ...", "[team] confirm ..."). */
	while ((n = next_word(subject, len, &i, &w)) > 0) {
		const char *t;
		size_t j = i, tn;

		if (!word_is(w, n, "confirm") && !word_is(w, n, "confirm:"))
			continue;
		tn = next_word(subject, len, &j, &t);
		if (tn == LIST_TOKEN_CHARS && cap > LIST_TOKEN_CHARS) {
			memcpy(token, t, tn);
			token[tn] = '\0';
			if (list_token_syntax(token))
				return LIST_CMD_CONFIRM;
			token[0] = '\0';
		}
	}
	/* Else the first word, after the prefixes of replies and forwards. */
	i = 0;
	for (;;) {
		size_t k, save = i;
		int prefix = 0;

		n = next_word(subject, len, &i, &w);
		if (n == 0)
			return LIST_CMD_NONE;
		for (k = 0; k < sizeof(replies) / sizeof(replies[0]); k++) {
			size_t rl = strlen(replies[k]);
			if (n >= rl && strncasecmp(w, replies[k], rl) == 0) {
				/* "Re:subscribe" is a prefix and a word */
				i = (size_t)(w - subject) + rl;
				prefix = 1;
				break;
			}
		}
		if (prefix)
			continue;
		(void)save;
		/* a trailing colon or period is the writer's, not the word's */
		while (n > 0 && (w[n - 1] == ':' || w[n - 1] == '.' || w[n - 1] == '!'))
			n--;
		if (word_is(w, n, "subscribe") || word_is(w, n, "join"))
			return LIST_CMD_SUBSCRIBE;
		if (word_is(w, n, "unsubscribe") || word_is(w, n, "leave"))
			return LIST_CMD_UNSUBSCRIBE;
		if (word_is(w, n, "help"))
			return LIST_CMD_HELP;
		return LIST_CMD_NONE;
	}
}

/* ---- delivery status reports ------------------------------------------- */

/* The value of field name if line (n bytes) is that field, trimmed. */
static int field_value(const char *line, size_t n, const char *name, const char **value,
		       size_t *vlen)
{
	size_t k = strlen(name);

	if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
		return 0;
	line += k + 1;
	n -= k + 1;
	while (n > 0 && (line[0] == ' ' || line[0] == '\t')) {
		line++;
		n--;
	}
	while (n > 0 && is_space(line[n - 1]))
		n--;
	*value = line;
	*vlen = n;
	return 1;
}

void list_dsn_scan(const char *body, size_t len, struct list_dsn *out)
{
	char recipient[ADDRESS_PATH_MAX + 1] = "";
	size_t i = 0;

	memset(out, 0, sizeof(*out));
	while (i < len) {
		const char *line = body + i, *nl = memchr(line, '\n', len - i), *v;
		size_t n = nl ? (size_t)(nl - line) : len - i, vl;

		i += n + (nl != NULL);
		if (n > 0 && line[n - 1] == '\r')
			n--;
		if (n == 0) {
			/* RFC 3464 2.1: a blank line ends a per-recipient block */
			recipient[0] = '\0';
			continue;
		}
		if (field_value(line, n, "Final-Recipient", &v, &vl)) {
			/* address-type ";" generic-address; only rfc822 is an address */
			const char *semi = memchr(v, ';', vl);
			recipient[0] = '\0';
			if (semi && (size_t)(semi - v) >= 6 && strncasecmp(v, "rfc822", 6) == 0) {
				const char *a = semi + 1;
				size_t al = vl - (size_t)(a - v);
				struct address parsed;
				char tmp[ADDRESS_PATH_MAX + 1];

				while (al > 0 && (*a == ' ' || *a == '\t')) {
					a++;
					al--;
				}
				if (al > 2 && a[0] == '<' && a[al - 1] == '>') {
					a++;
					al -= 2;
				}
				if (al > 0 && al <= ADDRESS_PATH_MAX) {
					memcpy(tmp, a, al);
					tmp[al] = '\0';
					if (address_parse_plain(tmp, 1, &parsed) == ADDRESS_OK)
						address_format(&parsed, recipient, sizeof(recipient));
				}
			}
		} else if (field_value(line, n, "Action", &v, &vl)) {
			out->actions++;
			/* RFC 3464 2.3.3: action-value, maybe with a comment after */
			if (vl >= 6 && strncasecmp(v, "failed", 6) == 0 &&
			    (vl == 6 || is_space(v[6]) || v[6] == '(')) {
				out->failed++;
				if (recipient[0] && out->nrcpts < LIST_DSN_RECIPIENTS_MAX) {
					int dup = 0;
					for (size_t k = 0; k < out->nrcpts && !dup; k++)
						dup = strcasecmp(out->rcpts[k], recipient) == 0;
					if (!dup)
						memcpy(out->rcpts[out->nrcpts++], recipient, sizeof(recipient));
				}
			}
		}
	}
}

/* ---- List-Id ------------------------------------------------------------- */

int list_id(const struct list_info *l, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s.%s", l->local, l->domain);

	if (n < 0 || (size_t)n >= cap)
		return -1;
	for (char *c = out; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	return 0;
}

int list_id_matches(const char *value, size_t len, const char *id)
{
	size_t idlen = strlen(id);

	/* list-id-field: [phrase] "<" list-id ">" (RFC 2919 3); a phrase may
	 * hold '<' only quoted, so the last angle-addr is the id. */
	for (size_t i = len; i-- > 0;) {
		const char *close;

		if (value[i] != '<')
			continue;
		close = memchr(value + i, '>', len - i);
		if (!close)
			return 0;
		return (size_t)(close - value - i - 1) == idlen &&
		       strncasecmp(value + i + 1, id, idlen) == 0;
	}
	return 0;
}

/* ---- long local parts ---------------------------------------------------- */

static int local_char(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~.", c));
}

enum address_parse list_parse_path(const char *arg, int allow_utf8, struct address *out,
				   const char **rest)
{
	const char *p = arg, *close, *at = NULL;
	enum address_parse r;
	size_t llen;
	int utf8 = 0;

	while (*p == ' ')
		p++;
	if (*p != '<')
		return ADDRESS_TOOLONG;
	p++;
	close = strchr(p, '>');
	if (!close)
		return ADDRESS_SYNTAX;
	for (const char *c = p; c < close;) {
		unsigned char ch = (unsigned char)*c;

		if (ch == '@') {
			if (at)
				return ADDRESS_SYNTAX;
			at = c++;
			continue;
		}
		if (at) {
			c++;
			continue;
		}
		if (ch >= 0x80) {
			size_t k = utf8_seq((const unsigned char *)c, (size_t)(close - c));
			if (k == 0)
				return ADDRESS_SYNTAX;
			utf8 = 1;
			c += k;
			continue;
		}
		if (!local_char(ch) || (c[0] == '.' && c[1] == '.'))
			return ADDRESS_TOOLONG; /* quoted or odd: not ours to widen */
		c++;
	}
	r = address_long_path_check(p, at, close);
	if (r != ADDRESS_OK)
		return r;
	llen = (size_t)(at - p);
	{
		/* Only a list's VERP or confirmation address is let through. */
		char local[ADDRESS_PATH_MAX + 1];
		const char *plus;
		int role = 0;

		memcpy(local, p, llen);
		local[llen] = '\0';
		plus = strchr(local, '+');
		if (plus)
			role = ends_with(local, (size_t)(plus - local), "-bounces") ||
			       ends_with(local, (size_t)(plus - local), "-confirm");
		if (!role)
			return ADDRESS_TOOLONG;
	}
	if (utf8 && !allow_utf8)
		return ADDRESS_NEED_UTF8;
	if (!address_domain_valid(at + 1, (size_t)(close - at - 1), allow_utf8))
		return ADDRESS_SYNTAX;
	address_long_path_take(out, p, at, close);
	for (const char *c = at + 1; c < close; c++)
		utf8 |= (unsigned char)*c >= 0x80;
	out->non_ascii = utf8;
	if (rest)
		*rest = close + 1;
	return ADDRESS_OK;
}

/* ---- the database ---------------------------------------------------------- */

/* Fills out from a row of (address, owner, posting, archive,
 * subject_prefix). 0, or -1 when the address is not usable. */
static int list_from_row(struct db_q *st, struct list_info *out)
{
	const char *posting = db_col_text(st, 2);
	struct address a;

	memset(out, 0, sizeof(*out));
	db_col_copy(st, 0, out->address, sizeof(out->address));
	db_col_copy(st, 1, out->owner, sizeof(out->owner));
	db_col_copy(st, 3, out->archive, sizeof(out->archive));
	db_col_copy(st, 4, out->subject_prefix, sizeof(out->subject_prefix));
	if (address_parse_plain(out->address, 1, &a) != ADDRESS_OK || a.local[0] == '"' ||
	    strchr(a.local, '+')) {
		char safe[ADDRESS_PATH_MAX * 4 + 8];
		log_event(LOG_WARNING, "event=list result=bad_address list=\"%s\"",
			  log_printable(safe, sizeof(safe), out->address, strlen(out->address)));
		return -1;
	}
	snprintf(out->local, sizeof(out->local), "%s", a.local);
	snprintf(out->domain, sizeof(out->domain), "%s", a.domain);
	out->posting = LIST_POSTING_MEMBERS;
	if (posting && strcmp(posting, "anyone") == 0)
		out->posting = LIST_POSTING_ANYONE;
	else if (posting && strcmp(posting, "moderated") == 0)
		out->posting = LIST_POSTING_MODERATED;
	else if (posting && strcmp(posting, "announce") == 0)
		out->posting = LIST_POSTING_ANNOUNCE;
	return 0;
}

int list_lookup(const struct address *a, struct list_info *out, enum list_role *role, char *arg,
		size_t argcap)
{
	char base[ADDRESS_PATH_MAX + 1], full[ADDRESS_PATH_MAX + 1], cand[ADDRESS_PATH_MAX + 1];
	struct db_q *st;
	int split, rc, found = 0;

	if (a->is_null || a->is_literal || !a->domain[0] || a->local[0] == '"')
		return 0;
	split = list_split_local(a->local, base, sizeof(base), role, arg, argcap);
	if (split < 0)
		return 0;
	address_format(a, full, sizeof(full));
	if (snprintf(cand, sizeof(cand), "%s@%s", base, a->domain) >= (int)sizeof(cand))
		return 0;
	st = db_stmt(SQL_LIST_LOOKUP);
	if (!st)
		return -1;
	db_bind_text(st, 1, full);
	db_bind_text(st, 2, cand);
	rc = db_step(st);
	if (rc == DB_ROW && list_from_row(st, out) == 0) {
		found = 1;
		if (db_col_int(st, 5)) {
			*role = LIST_ROLE_POST;
			if (argcap > 0)
				arg[0] = '\0';
		}
	}
	db_reset(st);
	if (rc != DB_ROW && rc != DB_DONE)
		return -1;
	return found;
}

int list_load(const char *address, struct list_info *out)
{
	struct db_q *st = db_stmt(SQL_LIST_LOAD);
	int rc, found = 0;

	if (!st)
		return -1;
	db_bind_text(st, 1, address);
	rc = db_step(st);
	if (rc == DB_ROW && list_from_row(st, out) == 0)
		found = 1;
	db_reset(st);
	if (rc != DB_ROW && rc != DB_DONE)
		return -1;
	return found;
}

int list_is_member(const char *list, const char *address)
{
	struct db_q *st = db_stmt(SQL_LIST_IS_MEMBER);
	int rc;

	if (!st)
		return -1;
	db_bind_text(st, 1, list);
	db_bind_text(st, 2, address);
	rc = db_step(st);
	db_reset(st);
	if (rc == DB_ROW)
		return 1;
	return rc == DB_DONE ? 0 : -1;
}

int list_member_state(const char *list, const char *address)
{
	struct db_q *st = db_stmt(SQL_LIST_MEMBER_ENABLED);
	long long enabled = 0;
	int found;

	if (!st)
		return -1;
	db_bind_text(st, 1, list);
	db_bind_text(st, 2, address);
	found = db_row_int(st, &enabled);
	return found <= 0 ? found : 1 + (int)enabled;
}

long list_member_count(const char *list)
{
	struct db_q *st = db_stmt(SQL_LIST_MEMBER_COUNT);
	long n = -1;

	if (!st)
		return -1;
	db_bind_text(st, 1, list);
	if (db_step(st) == DB_ROW)
		n = (long)db_col_int64(st, 0);
	db_reset(st);
	return n;
}

/* One statement with its text parameters (t1, t2 as ?1, ?2 where not
 * NULL) and then, where it has one more, the integer i; stepped to its
 * end; changes() after it, or -1. */
static int exec_bound(enum sql_id id, const char *t1, const char *t2, long long i)
{
	struct db_q *st = db_stmt(id);
	int rc, n = 0;

	if (!st)
		return -1;
	if (t1)
		db_bind_text(st, ++n, t1);
	if (t2)
		db_bind_text(st, ++n, t2);
	if (db_param_count(st) > n)
		db_bind_int64(st, n + 1, i);
	rc = db_step(st);
	db_reset(st);
	if (rc != DB_DONE) {
		log_event(LOG_WARNING, "event=list result=db_error error=\"%s\"",
			  db_errmsg());
		return -1;
	}
	return db_changes();
}

int list_bounce(const char *list, const char *member, long long now, long long limit,
		int *disabled)
{
	struct db_q *st;
	int state, rc;
	long long bounces = 0;
	char safe[ADDRESS_PATH_MAX * 4 + 8];

	*disabled = 0;
	if (db_begin() < 0)
		return -1;
	state = list_member_state(list, member);
	if (state < 0)
		goto fail;
	/* Not a member, or one that gets no copies any more: nothing to count. */
	if (state != 2) {
		db_rollback();
		return 0;
	}
	st = db_stmt(SQL_LIST_BOUNCES_RECENT);
	if (!st)
		goto fail;
	db_bind_text(st, 1, list);
	db_bind_text(st, 2, member);
	db_bind_int64(st, 3, now - LIST_BOUNCE_WINDOW_DAYS * 86400LL);
	if (db_step(st) == DB_ROW)
		bounces = db_col_int64(st, 0);
	db_reset(st);
	/* With no limit (0) the rows are only a record: kept bounded. */
	if (bounces < LIST_BOUNCES_KEPT) {
		struct db_q *ins = db_stmt(SQL_LIST_BOUNCE_ADD);
		if (!ins)
			goto fail;
		db_bind_text(ins, 1, list);
		db_bind_text(ins, 2, member);
		db_bind_int64(ins, 3, now);
		rc = db_step(ins);
		db_reset(ins);
		if (rc != DB_DONE)
			goto fail;
		bounces++;
	}
	if (limit > 0 && bounces >= limit) {
		if (exec_bound(SQL_LIST_MEMBER_DISABLE, list, member, 0) < 0 ||
		    exec_bound(SQL_LIST_BOUNCES_CLEAR, list, member, 0) < 0)
			goto fail;
		*disabled = 1;
	}
	if (db_commit() < 0)
		return -1;
	log_event(LOG_NOTICE, "event=list_bounce list=%s member=\"%s\" bounces=%lld limit=%lld result=%s",
		  list, log_printable(safe, sizeof(safe), member, strlen(member)), bounces, limit,
		  *disabled ? "disabled" : "counted");
	return 1;
fail:
	db_rollback();
	return -1;
}

static int pending_row(struct db_q *st, struct list_pending *out)
{
	memset(out, 0, sizeof(*out));
	db_col_copy(st, 0, out->list, sizeof(out->list));
	db_col_copy(st, 1, out->address, sizeof(out->address));
	db_col_copy(st, 2, out->action, sizeof(out->action));
	db_col_copy(st, 3, out->held, sizeof(out->held));
	out->expires_at = db_col_int64(st, 4);
	return 1;
}

/* The pending row of token for list, not expired; with take, deleted in
 * the same statement (RETURNING), so one token confirms once. 1 found,
 * 0 not, -1 error or a malformed token. */
static int pending_lookup(const char *list, const char *token, long long now, int take,
			  struct list_pending *out)
{
	char hex[65];
	struct db_q *st;
	int rc, found = 0;

	if (list_token_hash(token, hex) < 0)
		return list_token_syntax(token) ? -1 : 0;
	st = db_stmt(take ? SQL_LIST_PENDING_TAKE : SQL_LIST_PENDING_FIND);
	if (!st)
		return -1;
	db_bind_text(st, 1, hex);
	db_bind_text(st, 2, list);
	db_bind_int64(st, 3, now);
	rc = db_step(st);
	if (rc == DB_ROW) {
		found = pending_row(st, out);
		/* A RETURNING statement finishes its DELETE on the next step. */
		rc = take ? db_step(st) : DB_DONE;
	}
	db_reset(st);
	if (rc != DB_DONE)
		return -1;
	return found;
}

int list_pending_find(const char *list, const char *token, long long now, struct list_pending *out)
{
	return pending_lookup(list, token, now, 0, out);
}

int list_pending_take(const char *list, const char *token, long long now, struct list_pending *out)
{
	return pending_lookup(list, token, now, 1, out);
}

int list_pending_add(const char *list, const char *address, const char *action,
		     const char *token, const char *held, long long now, long long ttl)
{
	char hex[65], filler[LIST_TOKEN_CHARS + 1], safe[ADDRESS_PATH_MAX * 4 + 8];
	struct db_q *st;
	long long same = 0, all = 0;
	int rc;

	st = db_stmt(SQL_LIST_PENDING_COUNT);
	if (!st)
		return -1;
	db_bind_text(st, 1, list);
	db_bind_text(st, 2, address);
	db_bind_text(st, 3, action);
	db_bind_int64(st, 4, now);
	rc = db_step(st);
	if (rc == DB_ROW) {
		all = db_col_int64(st, 0);
		same = db_col_int64(st, 1);
	}
	db_reset(st);
	if (rc != DB_ROW)
		return -1;
	log_printable(safe, sizeof(safe), address, strlen(address));
	if ((strcmp(action, "post") != 0 && same >= LIST_PENDING_PER_ADDRESS_MAX) ||
	    all >= LIST_PENDING_PER_LIST_MAX) {
		log_event(LOG_NOTICE, "event=list result=not_sent list=%s action=%s address=\"%s\" "
			  "reason=\"%s\"", list, action, safe,
			  all >= LIST_PENDING_PER_LIST_MAX ? "too many confirmations wait for this list" :
							     "earlier replies to this address still wait");
		return 0;
	}
	if (!token) {
		/* help: nothing to confirm; the row only counts the reply */
		if (list_token_new(filler) < 0)
			return -1;
		token = filler;
	}
	if (list_token_hash(token, hex) < 0)
		return -1;
	st = db_stmt(SQL_LIST_PENDING_ADD);
	if (!st)
		return -1;
	db_bind_text(st, 1, hex);
	db_bind_text(st, 2, list);
	db_bind_text(st, 3, address);
	db_bind_text(st, 4, action);
	if (held && *held)
		db_bind_text(st, 5, held);
	db_bind_int64(st, 6, now);
	db_bind_int64(st, 7, now + ttl);
	rc = db_step(st);
	db_reset(st);
	return rc == DB_DONE ? 1 : -1;
}

int list_member_set(const char *list, const char *address, int join)
{
	if (!join)
		return exec_bound(SQL_LIST_MEMBER_DELETE, list, address, 0) < 0 ? -1 : 0;
	if (exec_bound(SQL_LIST_MEMBER_JOIN, list, address, 0) < 0 ||
	    exec_bound(SQL_LIST_BOUNCES_CLEAR, list, address, 0) < 0)
		return -1;
	return 0;
}

int list_held_path(const char *name, char *path, size_t cap, int make)
{
	char dir[PATH_MAX_POSTAGE];
	int n;

	snprintf(dir, sizeof(dir), "%s/held", setting(SET_SPOOL_DIR));
	if (make && mkdir(dir, 0700) == 0)
		fsync_dir(setting(SET_SPOOL_DIR));
	else if (make && errno != EEXIST)
		return -1;
	if (!name[0] || strchr(name, '/') || name[0] == '.') {
		errno = EINVAL;
		return -1;
	}
	n = snprintf(path, cap, "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= cap) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

void list_expire(long long now)
{
	static char held[LIST_EXPIRE_HELD_MAX][64];
	size_t nheld = 0;
	struct db_q *st;
	char dir[PATH_MAX_POSTAGE];
	DIR *d;

	/* The held files of posts nobody approved in time: their rows go
	 * first, then the files (a crash between leaves a file the sweep
	 * below removes once it is old). */
	st = db_stmt(SQL_LIST_PENDING_HELD_EXPIRED);
	if (st) {
		db_bind_int64(st, 1, now);
		db_bind_int64(st, 2, LIST_EXPIRE_HELD_MAX);
		while (nheld < LIST_EXPIRE_HELD_MAX && db_step(st) == DB_ROW)
			db_col_copy(st, 0, held[nheld++], sizeof(held[0]));
		db_reset(st);
	}
	if (exec_bound(SQL_LIST_PENDING_EXPIRE, NULL, NULL, now) > 0 ||
	    nheld > 0)
		log_event(LOG_INFO, "event=list_expire result=ok held_posts=%zu", nheld);
	for (size_t i = 0; i < nheld; i++) {
		char path[PATH_MAX_POSTAGE];
		if (list_held_path(held[i], path, sizeof(path), 0) == 0)
			unlink(path);
	}
	exec_bound(SQL_LIST_BOUNCES_EXPIRE, NULL, NULL, now - LIST_BOUNCE_WINDOW_DAYS * 86400LL);
	/* Held files no row names, older than any hold: left by a crash. */
	snprintf(dir, sizeof(dir), "%s/held", setting(SET_SPOOL_DIR));
	d = opendir(dir);
	if (!d)
		return;
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		struct stat sb;
		struct db_q *q;
		int rc;

		if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(sb.st_mode) || sb.st_mtime > time(NULL) - LIST_HOLD_SECONDS - 86400)
			continue;
		q = db_stmt(SQL_LIST_PENDING_HOLDS);
		if (!q)
			break;
		db_bind_text(q, 1, e->d_name);
		rc = db_step(q);
		db_reset(q);
		if (rc == DB_DONE && unlinkat(dirfd(d), e->d_name, 0) == 0)
			log_event(LOG_NOTICE, "event=sweep result=removed file=held/%s reason=orphan",
				  e->d_name);
	}
	closedir(d);
}
