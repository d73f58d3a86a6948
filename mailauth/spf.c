#include "spf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "dns.h"
#include "limits.h"

enum mech { M_ALL, M_INCLUDE, M_A, M_MX, M_PTR, M_IP4, M_IP6, M_EXISTS };

struct term {
	char qualifier;       /* + - ~ ? */
	enum mech mech;
	const char *arg;      /* after ':' (domain-spec or address), or NULL */
	size_t arg_len;
	int cidr4, cidr6;     /* -1: none given */
};

/* What one depth of check_host() holds while a deeper one (include,
 * redirect) runs: its record, and the terms that point into it. */
struct spf_frame {
	struct dns_txt txt;
	char record[DNS_ANSWER_MAX + 1];
	struct term terms[SPF_TERMS_MAX];
};

/* The large state of one spf_check, allocated once for it: a frame per
 * depth, and the DNS answers a mechanism reads (mx and names are walked
 * with addr_match, which reads addrs; none is live across check_host). */
struct spf_work {
	struct spf_frame frame[SPF_DEPTH_MAX + 1];
	struct dns_addrs addrs;
	struct dns_mx mx;
	struct dns_names names;
};

struct spf_ctx {
	int family;
	unsigned char ip[16];
	char ipstr[64];
	const char *sender, *helo;
	char local[ADDRESS_PATH_MAX + 1];
	char sender_domain[SPF_DOMAIN_MAX + 2];
	int dns_terms, void_lookups;
	long long deadline;
	char *reason;
	size_t reason_cap;
	int reason_is_error;
	/* The exp= of the record whose mechanism gave the latest "fail"
	 * (RFC 7208 6.2), and that record's domain; exp_set 0: none. */
	char exp_spec[SPF_EXP_SPEC_MAX + 1];
	char exp_domain[SPF_DOMAIN_MAX + 2];
	int exp_set;
	const char *receiver; /* %{r}, explanations only */
	struct spf_work *work; /* during spf_check only */
};

const char *spf_result_name(enum spf_result r)
{
	switch (r) {
	case SPF_NONE:
		return "none";
	case SPF_NEUTRAL:
		return "neutral";
	case SPF_PASS:
		return "pass";
	case SPF_FAIL:
		return "fail";
	case SPF_SOFTFAIL:
		return "softfail";
	case SPF_TEMPERROR:
		return "temperror";
	case SPF_PERMERROR:
		return "permerror";
	}
	return "none";
}

/* Records why, for the Authentication-Results comment: the latest
 * verdict, but the first error (errors end the check). */
static enum spf_result why(struct spf_ctx *c, enum spf_result r, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static enum spf_result why(struct spf_ctx *c, enum spf_result r, const char *fmt, ...)
{
	va_list ap;

	if (c->reason_is_error)
		return r;
	va_start(ap, fmt);
	vsnprintf(c->reason, c->reason_cap, fmt, ap);
	va_end(ap);
	c->reason_is_error = r == SPF_TEMPERROR || r == SPF_PERMERROR;
	return r;
}

/* A multi-label domain with sane labels (RFC 7208 4.3). */
static int domain_ok(const char *d)
{
	size_t len = strlen(d), label = 0;
	int dots = 0;

	if (len == 0 || len > SPF_DOMAIN_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (d[i] == '.') {
			if (label == 0)
				return 0;
			if (i + 1 < len)
				dots++;
			label = 0;
		} else if (++label > 63 || (unsigned char)d[i] <= ' ' || (unsigned char)d[i] >= 0x7f) {
			return 0;
		}
	}
	return dots > 0;
}

/* -- macros (RFC 7208 7) ---------------------------------------------- */

struct out {
	char *p;
	size_t len, cap;
	int overflow;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->len + n >= o->cap) {
		o->overflow = 1;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void macro_value(struct spf_ctx *c, char letter, const char *domain, char *v, size_t cap)
{
	switch (letter) {
	case 's':
		snprintf(v, cap, "%s", c->sender);
		break;
	case 'l':
		snprintf(v, cap, "%s", c->local);
		break;
	case 'o':
		snprintf(v, cap, "%s", c->sender_domain);
		break;
	case 'd':
		snprintf(v, cap, "%s", domain);
		break;
	case 'i':
		if (c->family == AF_INET) {
			snprintf(v, cap, "%u.%u.%u.%u", c->ip[0], c->ip[1], c->ip[2], c->ip[3]);
		} else {
			static const char hex[] = "0123456789abcdef";
			size_t o = 0;
			for (int i = 0; i < 16 && o + 4 < cap; i++) {
				v[o++] = hex[c->ip[i] >> 4];
				v[o++] = '.';
				v[o++] = hex[c->ip[i] & 15];
				v[o++] = '.';
			}
			v[o ? o - 1 : 0] = '\0';
		}
		break;
	case 'p':
		/* 5.7 and 7.3: "p" should not be used; the validated name of
		 * the client is not looked up, "unknown" is what the RFC
		 * allows. */
		snprintf(v, cap, "unknown");
		break;
	case 'v':
		snprintf(v, cap, "%s", c->family == AF_INET ? "in-addr" : "ip6");
		break;
	case 'h':
		snprintf(v, cap, "%s", c->helo && *c->helo ? c->helo : "unknown");
		break;
	case 'c': /* explanations only: the client's address, readable */
		snprintf(v, cap, "%s", c->ipstr);
		break;
	case 'r':
		snprintf(v, cap, "%s", c->receiver && *c->receiver ? c->receiver : "unknown");
		break;
	case 't':
		snprintf(v, cap, "%lld", (long long)time(NULL));
		break;
	default:
		v[0] = '\0';
	}
}

/* RFC 7208 7.3: an upper-case macro letter URL-escapes the value (RFC
 * 3986: all but the unreserved characters). */
static void put_escaped(struct out *o, const char *s, size_t n, int escape)
{
	static const char hex[] = "0123456789ABCDEF";

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		char e[3] = { '%', hex[ch >> 4], hex[ch & 15] };

		if (!escape || isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~')
			put(o, s + i, 1);
		else
			put(o, e, 3);
	}
}

/* One %{...} macro: letter, digits, 'r', delimiters. explain: the
 * letters c, r and t are allowed (explanation strings only, 7.2). */
static int expand_macro(struct spf_ctx *c, const char *m, size_t len, const char *domain,
			struct out *o, int explain)
{
	char value[1024], *parts[128], delims[8] = "";
	size_t i = 1, nparts = 0, keep = 0, nd = 0;
	char letter;
	int reverse = 0, escape;

	if (len < 1)
		return -1;
	letter = (char)tolower((unsigned char)m[0]);
	escape = isupper((unsigned char)m[0]) != 0;
	if (!strchr(explain ? "slodiphvcrt" : "slodiphv", letter))
		return -1;
	if (i < len && isdigit((unsigned char)m[i])) {
		if (m[i] == '0')
			return -1;
		while (i < len && isdigit((unsigned char)m[i])) {
			keep = keep * 10 + (size_t)(m[i] - '0');
			if (keep > 128)
				keep = 128;
			i++;
		}
	}
	if (i < len && (m[i] == 'r' || m[i] == 'R')) {
		reverse = 1;
		i++;
	}
	for (; i < len; i++) {
		if (!strchr(".-+,/_=", m[i]))
			return -1;
		if (nd + 1 < sizeof(delims))
			delims[nd++] = m[i];
	}
	if (!nd)
		delims[nd++] = '.';
	delims[nd] = '\0';
	macro_value(c, letter, domain, value, sizeof(value));
	/* Split, reverse, keep the rightmost parts, join with '.'. */
	for (char *p = value;;) {
		size_t n = strcspn(p, delims);
		if (nparts < sizeof(parts) / sizeof(parts[0]))
			parts[nparts++] = p;
		if (!p[n])
			break;
		p[n] = '\0';
		p += n + 1;
	}
	if (reverse)
		for (size_t a = 0, b = nparts - 1; a < b; a++, b--) {
			char *t = parts[a];
			parts[a] = parts[b];
			parts[b] = t;
		}
	{
		size_t first = keep && keep < nparts ? nparts - keep : 0;
		for (size_t k = first; k < nparts; k++) {
			if (k > first)
				put(o, ".", 1);
			put_escaped(o, parts[k], strlen(parts[k]), escape);
		}
	}
	return 0;
}

/* Expands a domain-spec (explain 0) or an explanation string (explain
 * 1: spaces and the macros c, r, t allowed, RFC 7208 6.2 and 7.1); 0, or
 * -1 on a syntax error or when the result does not fit. A domain-spec's
 * result is cut from the left to 253 octets (7.3). */
static int expand_string(struct spf_ctx *c, const char *spec, size_t len, const char *domain,
			 char *dst, size_t cap, int explain)
{
	struct out o = { dst, 0, cap, 0 };

	dst[0] = '\0';
	for (size_t i = 0; i < len; i++) {
		if (spec[i] != '%') {
			if ((unsigned char)spec[i] < ' ' || (unsigned char)spec[i] >= 0x7f ||
			    (spec[i] == ' ' && !explain))
				return -1;
			put(&o, spec + i, 1);
			continue;
		}
		if (i + 1 >= len)
			return -1;
		i++;
		if (spec[i] == '%') {
			put(&o, "%", 1);
		} else if (spec[i] == '_') {
			put(&o, " ", 1);
		} else if (spec[i] == '-') {
			put(&o, "%20", 3);
		} else if (spec[i] == '{') {
			const char *close = memchr(spec + i, '}', len - i);
			if (!close || expand_macro(c, spec + i + 1, (size_t)(close - spec - i - 1), domain,
						   &o, explain) < 0)
				return -1;
			i = (size_t)(close - spec);
		} else {
			return -1;
		}
	}
	if (o.overflow)
		return -1;
	if (explain)
		return 0;
	while (o.len > 0 && dst[o.len - 1] == '.')
		dst[--o.len] = '\0';
	while (o.len > SPF_DOMAIN_MAX) {
		char *dot = strchr(dst, '.');
		if (!dot)
			return -1;
		memmove(dst, dot + 1, strlen(dot + 1) + 1);
		o.len = strlen(dst);
	}
	return 0;
}

static int expand(struct spf_ctx *c, const char *spec, size_t len, const char *domain, char *dst,
		  size_t cap)
{
	return expand_string(c, spec, len, domain, dst, cap, 0);
}

/* -- record parsing (RFC 7208 4.6, 12) --------------------------------- */

static int parse_cidr(const char *s, size_t len, int max, int *out)
{
	int v = 0;

	if (len == 0 || len > 3 || (s[0] == '0' && len > 1))
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!isdigit((unsigned char)s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

/* Splits "domain-spec/24//64" into the spec and the two lengths. */
static int split_cidr(struct term *t, const char *s, size_t len, int allow6)
{
	const char *end = s + len, *p;

	t->cidr4 = t->cidr6 = -1;
	p = end;
	while (p > s && isdigit((unsigned char)p[-1]))
		p--;
	if (allow6 && p - s >= 2 && p < end && p[-1] == '/' && p[-2] == '/') {
		if (parse_cidr(p, (size_t)(end - p), 128, &t->cidr6) < 0)
			return -1;
		end = p - 2;
		p = end;
		while (p > s && isdigit((unsigned char)p[-1]))
			p--;
	}
	if (p > s && p < end && p[-1] == '/') {
		if (parse_cidr(p, (size_t)(end - p), 32, &t->cidr4) < 0)
			return -1;
		end = p - 1;
	}
	if (memchr(s, '/', (size_t)(end - s)))
		return -1;
	if (end > s && *s == ':') {
		t->arg = s + 1;
		t->arg_len = (size_t)(end - s - 1);
		if (t->arg_len == 0)
			return -1;
	} else if (end != s) {
		return -1;
	}
	return 0;
}

static int is_name_char(char c)
{
	return isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.';
}

/* Parses a record's terms; the modifiers redirect= and exp= (into
 * *redirect, *exp) are returned separately. 0, or -1 on a syntax error. */
static int parse_record(const char *rec, struct term *terms, size_t *n, const char **redirect,
			size_t *redirect_len, const char **exp, size_t *exp_len)
{
	const char *p = rec + 6; /* after "v=spf1" */

	*n = 0;
	*redirect = NULL;
	*exp = NULL;
	*exp_len = 0;
	while (*p) {
		const char *start, *end, *q;

		while (*p == ' ')
			p++;
		if (!*p)
			break;
		start = p;
		while (*p && *p != ' ')
			p++;
		end = p;
		/* A modifier is name "=" macro-string. */
		for (q = start; q < end && is_name_char(*q); q++)
			;
		if (q < end && *q == '=' && q > start && isalpha((unsigned char)*start)) {
			size_t nl = (size_t)(q - start);
			if (nl == 8 && strncasecmp(start, "redirect", 8) == 0) {
				if (*redirect)
					return -1;
				*redirect = q + 1;
				*redirect_len = (size_t)(end - q - 1);
				if (*redirect_len == 0)
					return -1;
			} else if (nl == 3 && strncasecmp(start, "exp", 3) == 0) {
				if (*exp || end == q + 1)
					return -1;
				*exp = q + 1;
				*exp_len = (size_t)(end - q - 1);
			}
			continue;
		}
		{
			struct term t = { '+', M_ALL, NULL, 0, -1, -1 };
			const char *m = start;
			size_t ml;

			if (strchr("+-~?", *m)) {
				t.qualifier = *m;
				m++;
			}
			for (q = m; q < end && isalnum((unsigned char)*q); q++)
				;
			ml = (size_t)(q - m);
			if (ml == 3 && strncasecmp(m, "all", 3) == 0) {
				t.mech = M_ALL;
				if (q != end)
					return -1;
			} else if (ml == 7 && strncasecmp(m, "include", 7) == 0) {
				t.mech = M_INCLUDE;
				if (q >= end || *q != ':' || end - q < 2)
					return -1;
				t.arg = q + 1;
				t.arg_len = (size_t)(end - q - 1);
			} else if (ml == 6 && strncasecmp(m, "exists", 6) == 0) {
				t.mech = M_EXISTS;
				if (q >= end || *q != ':' || end - q < 2)
					return -1;
				t.arg = q + 1;
				t.arg_len = (size_t)(end - q - 1);
			} else if (ml == 1 && (*m == 'a' || *m == 'A')) {
				t.mech = M_A;
				if (split_cidr(&t, q, (size_t)(end - q), 1) < 0)
					return -1;
			} else if (ml == 2 && strncasecmp(m, "mx", 2) == 0) {
				t.mech = M_MX;
				if (split_cidr(&t, q, (size_t)(end - q), 1) < 0)
					return -1;
			} else if (ml == 3 && strncasecmp(m, "ptr", 3) == 0) {
				t.mech = M_PTR;
				if (q < end && (*q != ':' || end - q < 2))
					return -1;
				if (q < end) {
					t.arg = q + 1;
					t.arg_len = (size_t)(end - q - 1);
				}
			} else if (ml == 3 && (strncasecmp(m, "ip4", 3) == 0 || strncasecmp(m, "ip6", 3) == 0)) {
				char addr[64];
				unsigned char bin[16];
				const char *slash;
				size_t al;
				int six = m[2] == '6';

				t.mech = six ? M_IP6 : M_IP4;
				if (q >= end || *q != ':')
					return -1;
				q++;
				slash = memchr(q, '/', (size_t)(end - q));
				al = (size_t)((slash ? slash : end) - q);
				if (al == 0 || al >= sizeof(addr))
					return -1;
				memcpy(addr, q, al);
				addr[al] = '\0';
				if (inet_pton(six ? AF_INET6 : AF_INET, addr, bin) != 1)
					return -1;
				t.arg = q;
				t.arg_len = al;
				if (slash && parse_cidr(slash + 1, (size_t)(end - slash - 1), six ? 128 : 32,
							six ? &t.cidr6 : &t.cidr4) < 0)
					return -1;
			} else {
				return -1; /* unknown mechanism: 5 */
			}
			if (*n >= SPF_TERMS_MAX)
				return -1;
			terms[(*n)++] = t;
		}
	}
	return 0;
}

/* -- evaluation ---------------------------------------------------------- */

static int prefix_match(const unsigned char *a, const unsigned char *b, int bits)
{
	int full = bits / 8, rest = bits % 8;

	if (memcmp(a, b, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return (a[full] >> (8 - rest)) == (b[full] >> (8 - rest));
}

/* What a lookup's result d for name means to a mechanism: 1 records came;
 * 0 none (a void lookup, counted when count_void); -1 with *res set (a
 * DNS failure: temperror; past the void lookups' limit: permerror). */
static int dns_outcome(struct spf_ctx *c, enum dns_result d, const char *name, int count_void,
		       enum spf_result *res)
{
	if (d == DNS_TEMPFAIL) {
		*res = why(c, SPF_TEMPERROR, "DNS timeout or failure for %s", name);
		return -1;
	}
	if (d != DNS_OK) {
		if (count_void && ++c->void_lookups > SPF_VOID_LOOKUPS_MAX) {
			*res = why(c, SPF_PERMERROR, "too many void DNS lookups (at %s)", name);
			return -1;
		}
		return 0;
	}
	return 1;
}

/* Does any A/AAAA of name hold the client (within cidr)? 1, 0, or -1
 * with *res set (temperror/permerror). count_void: a lookup that finds
 * nothing counts toward the void limit. */
static int addr_match(struct spf_ctx *c, const char *name, int cidr4, int cidr6, int count_void,
		      enum spf_result *res)
{
	struct dns_addrs *addrs = &c->work->addrs;
	enum dns_result d = dns_addrs(name, c->family, addrs, c->deadline);
	int bits = c->family == AF_INET ? (cidr4 < 0 ? 32 : cidr4) : (cidr6 < 0 ? 128 : cidr6);

	int found = dns_outcome(c, d, name, count_void, res);

	if (found <= 0)
		return found;
	for (size_t i = 0; i < addrs->n; i++)
		if (prefix_match(addrs->addr[i], c->ip, bits))
			return 1;
	return 0;
}

static int count_term(struct spf_ctx *c, enum spf_result *res)
{
	if (++c->dns_terms > SPF_DNS_TERMS_MAX) {
		*res = why(c, SPF_PERMERROR, "more than %d DNS lookups", SPF_DNS_TERMS_MAX);
		return -1;
	}
	return 0;
}

static enum spf_result check_host(struct spf_ctx *c, const char *domain, int depth);

/* Evaluates one mechanism: 1 match, 0 no match, -1 with *res. */
static int mechanism(struct spf_ctx *c, const struct term *t, const char *domain, int depth,
		     enum spf_result *res)
{
	char target[SPF_DOMAIN_MAX + 64];

	if (t->arg && t->mech != M_IP4 && t->mech != M_IP6) {
		if (expand(c, t->arg, t->arg_len, domain, target, sizeof(target)) < 0) {
			*res = why(c, SPF_PERMERROR, "bad macro in %s", domain);
			return -1;
		}
	} else {
		snprintf(target, sizeof(target), "%s", domain);
	}
	switch (t->mech) {
	case M_ALL:
		return 1;
	case M_IP4:
	case M_IP6: {
		char addr[64];
		unsigned char bin[16];
		int six = t->mech == M_IP6;

		if ((six ? AF_INET6 : AF_INET) != c->family)
			return 0;
		memcpy(addr, t->arg, t->arg_len);
		addr[t->arg_len] = '\0';
		inet_pton(six ? AF_INET6 : AF_INET, addr, bin);
		return prefix_match(bin, c->ip,
				    six ? (t->cidr6 < 0 ? 128 : t->cidr6) : (t->cidr4 < 0 ? 32 : t->cidr4));
	}
	case M_A:
		if (count_term(c, res) < 0)
			return -1;
		return addr_match(c, target, t->cidr4, t->cidr6, 1, res);
	case M_EXISTS: {
		enum dns_result d;

		if (count_term(c, res) < 0)
			return -1;
		d = dns_addrs(target, AF_INET, &c->work->addrs, c->deadline);
		return dns_outcome(c, d, target, 1, res);
	}
	case M_MX: {
		const struct dns_mx *mx = &c->work->mx;
		enum dns_result d;
		int found;

		if (count_term(c, res) < 0)
			return -1;
		d = dns_mx(target, &c->work->mx, c->deadline);
		found = dns_outcome(c, d, target, 1, res);
		if (found <= 0)
			return found;
		if (mx->n > SPF_NAMES_PER_TERM_MAX) {
			*res = why(c, SPF_PERMERROR, "more than 10 MX names for %s", target);
			return -1;
		}
		for (size_t i = 0; i < mx->n; i++) {
			int m = addr_match(c, mx->mx[i].host, t->cidr4, t->cidr6, 0, res);
			if (m != 0)
				return m;
		}
		return 0;
	}
	case M_PTR: {
		const struct dns_names *names = &c->work->names;
		size_t tl = strlen(target);

		if (count_term(c, res) < 0)
			return -1;
		if (dns_ptr(c->ip, c->family, &c->work->names, c->deadline) != DNS_OK)
			return 0; /* 5.5: a DNS error here is no match */
		for (size_t i = 0; i < names->n && i < SPF_NAMES_PER_TERM_MAX; i++) {
			const char *n = names->name[i];
			size_t nl = strlen(n);
			enum spf_result ignored;
			int m;

			if (!(strcasecmp(n, target) == 0 ||
			      (nl > tl && n[nl - tl - 1] == '.' && strcasecmp(n + nl - tl, target) == 0)))
				continue;
			m = addr_match(c, n, -1, -1, 0, &ignored);
			if (m > 0)
				return 1;
		}
		return 0;
	}
	case M_INCLUDE: {
		enum spf_result r;

		if (count_term(c, res) < 0)
			return -1;
		r = check_host(c, target, depth + 1);
		switch (r) {
		case SPF_PASS:
			return 1;
		case SPF_FAIL:
		case SPF_SOFTFAIL:
		case SPF_NEUTRAL:
			return 0;
		case SPF_TEMPERROR:
			*res = SPF_TEMPERROR;
			return -1;
		case SPF_NONE:
			*res = why(c, SPF_PERMERROR, "include of %s, which has no SPF record", target);
			return -1;
		case SPF_PERMERROR:
			*res = SPF_PERMERROR;
			return -1;
		}
		return 0;
	}
	}
	return 0;
}

static enum spf_result qualifier_result(char q)
{
	switch (q) {
	case '-':
		return SPF_FAIL;
	case '~':
		return SPF_SOFTFAIL;
	case '?':
		return SPF_NEUTRAL;
	default:
		return SPF_PASS;
	}
}

static enum spf_result check_host(struct spf_ctx *c, const char *domain, int depth)
{
	struct spf_frame *f;
	struct term *terms;
	struct dns_txt *txt;
	char *record, dom[SPF_DOMAIN_MAX + 2];
	const char *redirect, *exp;
	size_t nterms = 0, redirect_len = 0, exp_len = 0, found = 0;
	enum dns_result d;

	snprintf(dom, sizeof(dom), "%s", domain);
	while (dom[0] && dom[strlen(dom) - 1] == '.')
		dom[strlen(dom) - 1] = '\0';
	if (!domain_ok(dom) || depth > SPF_DEPTH_MAX)
		return why(c, SPF_NONE, "no valid domain %s", dom);
	f = &c->work->frame[depth];
	terms = f->terms;
	txt = &f->txt;
	record = f->record;
	d = dns_txt(dom, txt, c->deadline);
	if (d == DNS_TEMPFAIL)
		return why(c, SPF_TEMPERROR, "DNS timeout or failure for %s", dom);
	if (d != DNS_OK)
		return why(c, SPF_NONE, "no SPF record for %s", dom);
	for (size_t i = 0; i < txt->n; i++) {
		const char *t = txt->text[i];
		if (strncasecmp(t, "v=spf1", 6) == 0 && (t[6] == ' ' || t[6] == '\0') &&
		    strlen(t) == txt->len[i]) {
			if (found++ == 0)
				snprintf(record, sizeof(f->record), "%s", t);
		}
	}
	if (found == 0)
		return why(c, SPF_NONE, "no SPF record for %s", dom);
	if (found > 1)
		return why(c, SPF_PERMERROR, "more than one SPF record for %s", dom);
	if (parse_record(record, terms, &nterms, &redirect, &redirect_len, &exp, &exp_len) < 0)
		return why(c, SPF_PERMERROR, "syntax error in the SPF record of %s", dom);

	for (size_t i = 0; i < nterms; i++) {
		enum spf_result res = SPF_PERMERROR;
		int m = mechanism(c, &terms[i], dom, depth, &res);

		if (m < 0)
			return res;
		if (m > 0) {
			enum spf_result r = qualifier_result(terms[i].qualifier);

			/* 6.2: the explanation of a fail is this record's
			 * exp= (an include's own is never used: its fail is
			 * only "no match" here, and whatever decides later
			 * sets this again). Fetched only if asked for. */
			c->exp_set = r == SPF_FAIL && exp && exp_len <= SPF_EXP_SPEC_MAX;
			if (c->exp_set) {
				memcpy(c->exp_spec, exp, exp_len);
				c->exp_spec[exp_len] = '\0';
				snprintf(c->exp_domain, sizeof(c->exp_domain), "%s", dom);
			}
			return why(c, r, "%s %s %s as permitted sender", dom,
				   r == SPF_PASS ? "designates" : "does not designate", c->ipstr);
		}
	}
	if (redirect) {
		char target[SPF_DOMAIN_MAX + 64];
		enum spf_result res = SPF_PERMERROR, r;

		if (count_term(c, &res) < 0)
			return res;
		if (expand(c, redirect, redirect_len, dom, target, sizeof(target)) < 0)
			return why(c, SPF_PERMERROR, "bad macro in redirect of %s", dom);
		r = check_host(c, target, depth + 1);
		if (r == SPF_NONE)
			return why(c, SPF_PERMERROR, "redirect to %s, which has no SPF record", target);
		return r;
	}
	return why(c, SPF_NEUTRAL, "%s says neither yes nor no", dom);
}

static int ctx_init(struct spf_ctx *c, const char *ip, const char *domain, const char *sender,
		    const char *helo)
{
	const char *at = strrchr(sender, '@');

	memset(c, 0, sizeof(*c));
	c->sender = sender;
	c->helo = helo;
	if (inet_pton(AF_INET, ip, c->ip) == 1)
		c->family = AF_INET;
	else if (inet_pton(AF_INET6, ip, c->ip) == 1)
		c->family = AF_INET6;
	else
		return -1;
	snprintf(c->ipstr, sizeof(c->ipstr), "%s", ip);
	if (at) {
		size_t ll = (size_t)(at - sender);
		if (ll > ADDRESS_PATH_MAX)
			ll = ADDRESS_PATH_MAX;
		memcpy(c->local, sender, ll);
		c->local[ll] = '\0';
		snprintf(c->sender_domain, sizeof(c->sender_domain), "%s", at + 1);
	} else {
		snprintf(c->sender_domain, sizeof(c->sender_domain), "%s", domain);
	}
	if (!c->local[0])
		snprintf(c->local, sizeof(c->local), "postmaster");
	return 0;
}

int spf_macro_expand(const char *spec, const char *ip, const char *sender, const char *domain,
		     const char *helo, char *out, size_t cap)
{
	struct spf_ctx c;
	char reason[8];

	if (ctx_init(&c, ip, domain, sender, helo) < 0)
		return -1;
	c.reason = reason;
	c.reason_cap = sizeof(reason);
	return expand(&c, spec, strlen(spec), domain, out, cap);
}

int spf_record_valid(const char *record)
{
	struct term terms[SPF_TERMS_MAX];
	const char *redirect, *exp;
	size_t n, rl, el;

	if (strncasecmp(record, "v=spf1", 6) != 0 || (record[6] != ' ' && record[6] != '\0'))
		return 0;
	return parse_record(record, terms, &n, &redirect, &rl, &exp, &el) == 0;
}

/* The latest spf_check's state, for spf_explanation: the small part of
 * the context (spf_check is not re-entered: check_host recurses on its
 * own, not through spf_check, and no signal handler calls it). */
static struct spf_ctx last;
static int last_fail;

enum spf_result spf_check(const char *ip, const char *domain, const char *sender,
			  const char *helo, long long deadline, char *reason, size_t cap)
{
	enum spf_result r;

	reason[0] = '\0';
	last_fail = 0;
	if (ctx_init(&last, ip, domain, sender, helo) < 0) {
		snprintf(reason, cap, "no client address");
		return SPF_NONE;
	}
	last.reason = reason;
	last.reason_cap = cap;
	last.deadline = deadline;
	last.work = calloc(1, sizeof(*last.work));
	if (!last.work) {
		snprintf(reason, cap, "out of memory");
		return SPF_TEMPERROR;
	}
	r = check_host(&last, domain, 0);
	free(last.work);
	last.work = NULL;
	last_fail = r == SPF_FAIL;
	/* reason belongs to the caller and may be gone by the next call. */
	last.reason = NULL;
	last.reason_cap = 0;
	return r;
}

static int spf_explain(struct spf_ctx *c, const char *text, size_t len, char *out, size_t cap)
{
	if (expand_string(c, text, len, c->exp_domain, out, cap, 1) < 0)
		return -1;
	/* A macro's value (the sender's local part under SMTPUTF8, say)
	 * may hold other bytes: the text goes into a reply line. */
	for (char *p = out; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	return 0;
}

int spf_explanation(const char *receiver, char *out, size_t cap)
{
	static struct dns_txt txt; /* not re-entered: calls nothing that comes back here */
	char target[SPF_DOMAIN_MAX + 64];

	if (cap == 0)
		return -1;
	out[0] = '\0';
	if (!last_fail || !last.exp_set)
		return -1;
	last.receiver = receiver;
	/* 6.2: any trouble (a bad macro, a DNS error, no record or more
	 * than one, a syntax error in the text) means no explanation. */
	if (expand(&last, last.exp_spec, strlen(last.exp_spec), last.exp_domain, target,
		   sizeof(target)) < 0 || !domain_ok(target))
		return -1;
	if (dns_txt(target, &txt, last.deadline) != DNS_OK || txt.n != 1 ||
	    strlen(txt.text[0]) != txt.len[0])
		return -1;
	if (spf_explain(&last, txt.text[0], txt.len[0], out, cap) < 0) {
		out[0] = '\0';
		return -1;
	}
	return 0;
}

int spf_explain_expand(const char *text, const char *ip, const char *sender, const char *domain,
		       const char *helo, const char *receiver, char *out, size_t cap)
{
	struct spf_ctx c;

	if (ctx_init(&c, ip, domain, sender, helo) < 0)
		return -1;
	c.receiver = receiver;
	snprintf(c.exp_domain, sizeof(c.exp_domain), "%s", domain);
	return spf_explain(&c, text, strlen(text), out, cap);
}
