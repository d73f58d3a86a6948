#include "dns.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "log.h"

static struct __res_state resolver;
static int resolver_ready;

static int resolver_init(void)
{
	if (resolver_ready)
		return 0;
	if (res_ninit(&resolver) < 0) {
		log_event(LOG_ERR, "event=dns result=error error=\"cannot read the resolver configuration\"");
		return -1;
	}
	resolver.options |= RES_USE_EDNS0;
	resolver.options &= ~(unsigned long)(RES_DNSRCH | RES_DEFNAMES);
	resolver_ready = 1;
	return 0;
}

int dns_resolver_is_local(void)
{
	if (resolver_init() < 0 || resolver.nscount <= 0)
		return 0;
	for (int i = 0; i < resolver.nscount && i < MAXNS; i++) {
		const struct sockaddr_in *sin = &resolver.nsaddr_list[i];
		/* IPv6 servers live in _u._ext; an unset IPv4 slot means one. */
		if (sin->sin_family != AF_INET ||
		    (ntohl(sin->sin_addr.s_addr) >> 24) != 127)
			return 0;
	}
	return 1;
}

long long dns_deadline(long long ms_from_now)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (ms_from_now <= 0)
		ms_from_now = AUTH_CHECK_TIME_MS;
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + ms_from_now;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

const char *dns_result_name(enum dns_result r)
{
	switch (r) {
	case DNS_OK:
		return "ok";
	case DNS_NXDOMAIN:
		return "nxdomain";
	case DNS_NODATA:
		return "nodata";
	case DNS_TEMPFAIL:
		return "tempfail";
	case DNS_BADNAME:
		return "badname";
	}
	return "unknown";
}

/* A name we may put in a query: 1..253 octets, labels 1..63. */
static int name_ok(const char *name)
{
	size_t len = strlen(name), label = 0;

	if (len == 0 || len > 253)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (name[i] == '.') {
			if (label == 0 && !(i == len - 1 && i > 0))
				return 0;
			label = 0;
		} else if (++label > 63 || (unsigned char)name[i] <= ' ' || name[i] == 0x7f) {
			return 0;
		}
	}
	return 1;
}

/* One query; the answer in ans, its length in *len. */
static enum dns_result query(const char *name, int type, unsigned char *ans, int *len,
			     long long deadline)
{
	long long left;
	int n;

	if (!name_ok(name))
		return DNS_BADNAME;
	if (!deadline)
		deadline = dns_deadline(0);
	left = deadline - now_ms();
	if (left <= 0)
		return DNS_TEMPFAIL;
	if (resolver_init() < 0)
		return DNS_TEMPFAIL;
	/* RFC 7208 4.6.4: bounded time. The resolver waits retrans seconds
	 * per server and attempt; keep that within what is left. */
	resolver.retry = DNS_QUERY_ATTEMPTS;
	resolver.retrans = DNS_QUERY_TIMEOUT_S;
	if (left < (long long)DNS_QUERY_TIMEOUT_S * DNS_QUERY_ATTEMPTS * 1000) {
		resolver.retry = 1;
		resolver.retrans = left >= 2000 ? (int)(left / 1000) : 1;
	}
	n = res_nquery(&resolver, name, ns_c_in, type, ans, DNS_ANSWER_MAX);
	if (n < 0) {
		switch (resolver.res_h_errno) {
		case HOST_NOT_FOUND:
			return DNS_NXDOMAIN;
		case NO_DATA:
			return DNS_NODATA;
		default:
			return DNS_TEMPFAIL;
		}
	}
	*len = n > DNS_ANSWER_MAX ? DNS_ANSWER_MAX : n;
	return DNS_OK;
}

struct rr {
	int type;
	const unsigned char *rdata;
	unsigned rdlen;
};

/* Walks the answer section: calls each() per record of class IN. -1 when
 * the answer is malformed. */
static int walk_answers(const unsigned char *ans, int len, int (*each)(void *, const unsigned char *, int, const struct rr *), void *ctx)
{
	const unsigned char *p = ans + 12, *end = ans + len;
	unsigned qd, an;
	char scratch[NS_MAXDNAME];

	if (len < 12)
		return -1;
	qd = (unsigned)(ans[4] << 8 | ans[5]);
	an = (unsigned)(ans[6] << 8 | ans[7]);
	for (unsigned i = 0; i < qd; i++) {
		int k = dn_expand(ans, end, p, scratch, sizeof(scratch));
		if (k < 0 || end - p < k + 4)
			return -1;
		p += k + 4;
	}
	for (unsigned i = 0; i < an; i++) {
		struct rr r;
		int k = dn_expand(ans, end, p, scratch, sizeof(scratch)), cls;

		if (k < 0 || end - p < k + 10)
			return -1;
		p += k;
		r.type = p[0] << 8 | p[1];
		cls = p[2] << 8 | p[3];
		r.rdlen = (unsigned)(p[8] << 8 | p[9]);
		p += 10;
		if ((unsigned)(end - p) < r.rdlen)
			return -1;
		r.rdata = p;
		if (cls == ns_c_in && each(ctx, ans, len, &r) < 0)
			return -1;
		p += r.rdlen;
	}
	return 0;
}

/* Asks for name's records of type and walks the answer with each(ctx):
 * DNS_OK once it is walked, else what went wrong (DNS_TEMPFAIL for an
 * answer that does not parse). */
static enum dns_result ask(const char *name, int type, long long deadline,
			   int (*each)(void *, const unsigned char *, int, const struct rr *), void *ctx)
{
	/* not re-entered (spf.c recurses around the lookups): walked into ctx, dead on return */
	static unsigned char ans[DNS_ANSWER_MAX];
	enum dns_result res;
	int len = 0;

	res = query(name, type, ans, &len, deadline);
	if (res != DNS_OK)
		return res;
	return walk_answers(ans, len, each, ctx) < 0 ? DNS_TEMPFAIL : DNS_OK;
}

/* A lookup's result once ask() said res and n records were kept. */
static enum dns_result found(enum dns_result res, size_t n)
{
	if (res != DNS_OK)
		return res;
	return n ? DNS_OK : DNS_NODATA;
}

struct txt_ctx {
	struct dns_txt *out;
	size_t used;
};

static int txt_each(void *vctx, const unsigned char *ans, int len, const struct rr *r)
{
	struct txt_ctx *c = vctx;
	struct dns_txt *out = c->out;
	size_t start = c->used;

	(void)ans;
	(void)len;
	if (r->type != ns_t_txt || out->n >= DNS_RECORDS_MAX)
		return 0;
	for (unsigned i = 0; i < r->rdlen;) {
		unsigned sl = r->rdata[i];
		if (i + 1 + sl > r->rdlen)
			return -1;
		if (c->used + sl + 1 > sizeof(out->buf))
			return -1;
		memcpy(out->buf + c->used, r->rdata + i + 1, sl);
		c->used += sl;
		i += 1 + sl;
	}
	out->buf[c->used++] = '\0';
	out->text[out->n] = out->buf + start;
	out->len[out->n] = c->used - start - 1;
	out->n++;
	return 0;
}

enum dns_result dns_txt(const char *name, struct dns_txt *out, long long deadline)
{
	struct txt_ctx c = { out, 0 };
	enum dns_result res;

	out->n = 0;
	res = ask(name, ns_t_txt, deadline, txt_each, &c);
	return found(res, out->n);
}

struct addr_ctx {
	struct dns_addrs *out;
	int type;
};

static int addr_each(void *vctx, const unsigned char *ans, int len, const struct rr *r)
{
	struct addr_ctx *c = vctx;
	unsigned want = c->type == ns_t_a ? 4 : 16;

	(void)ans;
	(void)len;
	if (r->type != c->type || r->rdlen != want || c->out->n >= DNS_RECORDS_MAX)
		return 0;
	memcpy(c->out->addr[c->out->n++], r->rdata, want);
	return 0;
}

enum dns_result dns_addrs(const char *name, int family, struct dns_addrs *out, long long deadline)
{
	struct addr_ctx c = { out, family == AF_INET6 ? ns_t_aaaa : ns_t_a };
	enum dns_result res;

	out->n = 0;
	res = ask(name, c.type, deadline, addr_each, &c);
	return found(res, out->n);
}

static int mx_each(void *vctx, const unsigned char *ans, int len, const struct rr *r)
{
	struct dns_mx *out = vctx;

	if (r->type != ns_t_mx || r->rdlen < 3 || out->n >= DNS_RECORDS_MAX)
		return 0;
	if (dn_expand(ans, ans + len, r->rdata + 2, out->mx[out->n].host,
		      sizeof(out->mx[0].host)) < 0)
		return -1;
	out->mx[out->n].pref = (unsigned)(r->rdata[0] << 8 | r->rdata[1]);
	out->n++;
	return 0;
}

enum dns_result dns_mx(const char *name, struct dns_mx *out, long long deadline)
{
	enum dns_result res;

	out->n = 0;
	res = ask(name, ns_t_mx, deadline, mx_each, out);
	return found(res, out->n);
}

static int ptr_each(void *vctx, const unsigned char *ans, int len, const struct rr *r)
{
	struct dns_names *out = vctx;

	if (r->type != ns_t_ptr || out->n >= DNS_RECORDS_MAX)
		return 0;
	if (dn_expand(ans, ans + len, r->rdata, out->name[out->n], sizeof(out->name[0])) < 0)
		return -1;
	out->n++;
	return 0;
}

enum dns_result dns_ptr(const unsigned char *addr, int family, struct dns_names *out,
			long long deadline)
{
	char name[128];
	size_t o = 0;
	enum dns_result res;

	out->n = 0;
	if (family == AF_INET) {
		snprintf(name, sizeof(name), "%u.%u.%u.%u.in-addr.arpa", addr[3], addr[2], addr[1],
			 addr[0]);
	} else {
		static const char hex[] = "0123456789abcdef";
		for (int i = 15; i >= 0; i--) {
			name[o++] = hex[addr[i] & 15];
			name[o++] = '.';
			name[o++] = hex[addr[i] >> 4];
			name[o++] = '.';
		}
		snprintf(name + o, sizeof(name) - o, "ip6.arpa");
	}
	res = ask(name, ns_t_ptr, deadline, ptr_each, out);
	return found(res, out->n);
}
