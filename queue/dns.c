/* Where a domain's mail goes: MX records (mailauth/dns.c asks the system
 * resolver, bounded in time) ordered by preference and shuffled among
 * equals, the implicit MX of RFC 5321 5.1, null MX (RFC 7505), and the
 * addresses of a host through getaddrinfo. */
#define _GNU_SOURCE /* EAI_NODATA */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "log.h"
#include "queue.h"

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

static void implicit_mx(const char *domain, struct mx_host *out, size_t *n, int *implicit)
{
	/* RFC 5321 5.1: no MX, so the domain itself is the host. */
	snprintf(out[0].name, sizeof(out[0].name), "%s", domain);
	out[0].preference = 0;
	*n = 1;
	*implicit = 1;
}

enum mx_result dns_mx_lookup(const char *domain, struct mx_host *out, size_t max, size_t *n,
			     int *implicit, struct status_text *why)
{
	static struct dns_mx answer;
	static struct mx_sort found[DNS_RECORDS_MAX];
	size_t nfound = 0;
	int null_mx = 0;

	*n = 0;
	*implicit = 0;
	switch (dns_mx(domain, &answer, dns_deadline(QUEUE_DNS_TIME_MS))) {
	case DNS_OK:
		break;
	case DNS_NODATA:
		implicit_mx(domain, out, n, implicit);
		return MX_OK;
	case DNS_NXDOMAIN:
		status_set_local(why, OUTCOME_PERM, "5.1.2",
				 "Host or domain name not found: the domain %s does not exist "
				 "(DNS lookup of its MX said NXDOMAIN)", domain);
		return MX_NOTFOUND;
	case DNS_BADNAME:
		status_set_local(why, OUTCOME_PERM, "5.1.2",
				 "the domain %s is not a name that can be looked up in DNS", domain);
		return MX_NOTFOUND;
	default:
		status_set_local(why, OUTCOME_TEMP, "4.4.3",
				 "temporary DNS failure looking up the MX of %s", domain);
		return MX_TEMPFAIL;
	}
	for (size_t i = 0; i < answer.n; i++) {
		const char *name = answer.mx[i].host;

		/* RFC 7505: a single MX with the root as exchange. A null MX
		 * among others is a broken setup; it still says "no mail". */
		if (name[0] == '\0' || strcmp(name, ".") == 0) {
			null_mx = 1;
			continue;
		}
		if (strlen(name) > ADDRESS_DOMAIN_MAX)
			continue;
		snprintf(found[nfound].host.name, sizeof(found[nfound].host.name), "%s", name);
		for (char *c = found[nfound].host.name; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		found[nfound].host.preference = (int)answer.mx[i].pref;
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
		implicit_mx(domain, out, n, implicit);
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
