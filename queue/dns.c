/* Where a domain's mail goes: MX records through the system resolver
 * (libresolv), the implicit MX of RFC 5321 5.1, null MX (RFC 7505), and
 * the addresses of a host through getaddrinfo. */
#define _GNU_SOURCE /* EAI_NODATA */
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <netdb.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "queue.h"

/* RFC 1035 4.2.1 limits UDP answers to 512 octets, but EDNS and TCP
 * answers are larger; 64 KiB is the most a DNS message can hold. */
#define MX_ANSWER_MAX 65536

struct mx_sort {
	struct mx_host host;
	long key; /* random, to shuffle hosts of equal preference */
};

static int mx_compare(const void *a, const void *b)
{
	const struct mx_sort *x = a, *y = b;

	if (x->host.preference != y->host.preference)
		return x->host.preference < y->host.preference ? -1 : 1;
	return x->key < y->key ? -1 : x->key > y->key;
}

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

enum mx_result dns_mx_lookup(const char *domain, struct mx_host *out, size_t max, size_t *n,
			      int *implicit, struct status_text *why)
{
	static unsigned char answer[MX_ANSWER_MAX];
	static struct mx_sort found[QUEUE_MX_MAX];
	size_t nfound = 0;
	int len, count, null_mx = 0;
	ns_msg msg;

	*n = 0;
	*implicit = 0;
	len = res_query(domain, ns_c_in, ns_t_mx, answer, sizeof(answer));
	if (len < 0) {
		switch (h_errno) {
		case HOST_NOT_FOUND:
			status_set_local(why, OUTCOME_PERM, "5.1.2",
					 "Host or domain name not found: the domain %s does not exist "
					 "(DNS lookup of its MX said NXDOMAIN)", domain);
			return MX_NOTFOUND;
		case NO_DATA:
			/* RFC 5321 5.1: no MX, so the domain itself is the host. */
			snprintf(out[0].name, sizeof(out[0].name), "%s", domain);
			out[0].preference = 0;
			*n = 1;
			*implicit = 1;
			return MX_OK;
		default:
			status_set_local(why, OUTCOME_TEMP, "4.4.3",
					 "temporary DNS failure looking up the MX of %s (%s)", domain,
					 hstrerror(h_errno));
			return MX_TEMPFAIL;
		}
	}
	if (ns_initparse(answer, len, &msg) < 0) {
		status_set_local(why, OUTCOME_TEMP, "4.4.3", "malformed DNS answer for the MX of %s",
				 domain);
		return MX_TEMPFAIL;
	}
	count = ns_msg_count(msg, ns_s_an);
	for (int i = 0; i < count; i++) {
		char name[NS_MAXDNAME];
		const unsigned char *rdata;
		ns_rr rr;

		if (ns_parserr(&msg, ns_s_an, i, &rr) < 0)
			break;
		if (ns_rr_type(rr) != ns_t_mx || ns_rr_class(rr) != ns_c_in)
			continue; /* the CNAME chain that led here */
		if (ns_rr_rdlen(rr) < 3)
			continue;
		rdata = ns_rr_rdata(rr);
		if (dn_expand(ns_msg_base(msg), ns_msg_end(msg), rdata + 2, name, sizeof(name)) < 0)
			continue;
		/* RFC 7505: a single MX with the root as exchange. Any null MX
		 * among others is a broken setup; it still says "no mail". */
		if (name[0] == '\0' || strcmp(name, ".") == 0) {
			null_mx = 1;
			continue;
		}
		if (nfound == QUEUE_MX_MAX || strlen(name) > ADDRESS_DOMAIN_MAX)
			continue;
		snprintf(found[nfound].host.name, sizeof(found[nfound].host.name), "%s", name);
		lower(found[nfound].host.name);
		found[nfound].host.preference = ns_get16(rdata);
		found[nfound].key = random();
		nfound++;
	}
	if (null_mx) {
		status_set_local(why, OUTCOME_PERM, "5.1.10",
				 "the domain %s does not accept mail (it publishes a null MX, RFC 7505)",
				 domain);
		return MX_NULLMX;
	}
	if (nfound == 0) {
		/* Only CNAMEs or unusable records: treat as no MX. */
		snprintf(out[0].name, sizeof(out[0].name), "%s", domain);
		out[0].preference = 0;
		*n = 1;
		*implicit = 1;
		return MX_OK;
	}
	qsort(found, nfound, sizeof(found[0]), mx_compare);
	for (size_t i = 0; i < nfound && i < max; i++)
		out[i] = found[i].host;
	*n = nfound < max ? nfound : max;
	return MX_OK;
}

static int is_ip_literal(const char *host)
{
	unsigned char bin[16];

	return inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
}

enum mx_result dns_host_addresses(const char *host, struct host_address *out, size_t max,
				   size_t *n, struct status_text *why)
{
	/* AF_UNSPEC and no AI_ADDRCONFIG: with AI_ADDRCONFIG a host whose only
	 * configured addresses are loopback finds nothing (DESIGN.md). */
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_protocol = IPPROTO_TCP };
	struct addrinfo *res = NULL;
	int r;

	*n = 0;
	if (is_ip_literal(host))
		hints.ai_flags = AI_NUMERICHOST;
	r = getaddrinfo(host, NULL, &hints, &res);
	if (r != 0) {
		if (r == EAI_NONAME || r == EAI_NODATA) {
			status_set_local(why, OUTCOME_PERM, "5.1.2",
					 "Host or domain name not found: %s has no address", host);
			return MX_NOTFOUND;
		}
		status_set_local(why, OUTCOME_TEMP, "4.4.3", "cannot find the address of %s: %s", host,
				 gai_strerror(r));
		return MX_TEMPFAIL;
	}
	for (struct addrinfo *a = res; a && *n < max; a = a->ai_next) {
		struct host_address *h = &out[*n];
		int dup = 0;

		if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
		    a->ai_addrlen > sizeof(h->sa))
			continue;
		memset(h, 0, sizeof(*h));
		memcpy(&h->sa, a->ai_addr, a->ai_addrlen);
		h->len = a->ai_addrlen;
		if (getnameinfo(a->ai_addr, a->ai_addrlen, h->ip, sizeof(h->ip), NULL, 0,
				NI_NUMERICHOST) != 0)
			continue;
		for (size_t i = 0; i < *n; i++)
			dup |= strcmp(out[i].ip, h->ip) == 0;
		if (!dup)
			(*n)++;
	}
	freeaddrinfo(res);
	if (*n == 0) {
		status_set_local(why, OUTCOME_PERM, "5.1.2",
				 "Host or domain name not found: %s has no usable address", host);
		return MX_NOTFOUND;
	}
	return MX_OK;
}
