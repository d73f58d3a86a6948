/* DNS lookups for SPF, DKIM, DMARC (and the queue runner's MX): the
 * system resolver (/etc/resolv.conf) through glibc's res_nquery, which
 * lives in libc itself since glibc 2.34, so nothing more is linked. Each
 * query is bounded (DNS_QUERY_TIMEOUT_S x DNS_QUERY_ATTEMPTS) and refused
 * once a caller's deadline has passed. */
#ifndef POSTAGE_DNS_H
#define POSTAGE_DNS_H

#include <stddef.h>

#include "limits.h"

enum dns_result {
	DNS_OK = 0,
	DNS_NXDOMAIN,  /* no such name */
	DNS_NODATA,    /* the name exists, with no record of that type */
	DNS_TEMPFAIL,  /* timeout, SERVFAIL, deadline passed: try again later */
	DNS_BADNAME,   /* not a name we can ask about */
};

/* A monotonic deadline in milliseconds from now (0: use the default of
 * AUTH_CHECK_TIME_MS). */
long long dns_deadline(long long ms_from_now);

/* TXT: each record's character-strings joined (RFC 7208 3.3, RFC 6376
 * 3.6.2.2); text[i] is NUL-terminated, len[i] its length (a record holding
 * a NUL byte has len[i] > strlen). */
struct dns_txt {
	size_t n;
	const char *text[DNS_RECORDS_MAX];
	size_t len[DNS_RECORDS_MAX];
	char buf[DNS_ANSWER_MAX + DNS_RECORDS_MAX];
};
/* Every configured name server is on this host (127.0.0.0/8): lookups
 * stay on the machine. */
int dns_resolver_is_local(void);

enum dns_result dns_txt(const char *name, struct dns_txt *out, long long deadline);

/* A (family AF_INET, 4 bytes) or AAAA (AF_INET6, 16 bytes) addresses. */
struct dns_addrs {
	size_t n;
	unsigned char addr[DNS_RECORDS_MAX][16];
};
enum dns_result dns_addrs(const char *name, int family, struct dns_addrs *out, long long deadline);

/* MX records, in answer order (sort by pref to use them). */
struct dns_mx {
	size_t n;
	struct {
		unsigned pref;
		char host[256];
	} mx[DNS_RECORDS_MAX];
};
enum dns_result dns_mx(const char *name, struct dns_mx *out, long long deadline);

/* PTR names of an address (4 or 16 bytes by family). */
struct dns_names {
	size_t n;
	char name[DNS_RECORDS_MAX][256];
};
enum dns_result dns_ptr(const unsigned char *addr, int family, struct dns_names *out,
			long long deadline);

const char *dns_result_name(enum dns_result r);

#endif
