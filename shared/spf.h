/* SPF (RFC 7208): may this client IP send mail for this domain? Our own
 * check_host(), with the RFC's limits: at most SPF_DNS_TERMS_MAX
 * DNS-querying terms (include, a, mx, ptr, exists, redirect), at most
 * SPF_VOID_LOOKUPS_MAX lookups that find nothing, at most
 * SPF_NAMES_PER_TERM_MAX names per mx or ptr, and the caller's deadline
 * for the whole check. The exp= explanation is not fetched. */
#ifndef POSTAGE_SPF_H
#define POSTAGE_SPF_H

#include <stddef.h>

enum spf_result {
	SPF_NONE = 0,
	SPF_NEUTRAL,
	SPF_PASS,
	SPF_FAIL,
	SPF_SOFTFAIL,
	SPF_TEMPERROR,
	SPF_PERMERROR,
};

/* check_host(ip, domain, sender) with helo for the %{h} macro. ip is
 * printable IPv4 or IPv6; sender is local@domain (for the HELO identity:
 * postmaster@helo). A short reason for the Authentication-Results comment
 * goes to reason (cap bytes). deadline: dns.h. */
enum spf_result spf_check(const char *ip, const char *domain, const char *sender,
			  const char *helo, long long deadline, char *reason, size_t cap);

const char *spf_result_name(enum spf_result r);

/* For tests and fuzzing: the macro expansion of a domain-spec (RFC 7208
 * 7) for this client, sender, current domain and HELO, into out. 0, or
 * -1 on a syntax error. */
int spf_macro_expand(const char *spec, const char *ip, const char *sender, const char *domain,
		     const char *helo, char *out, size_t cap);
/* Is record (starting "v=spf1") free of syntax errors (RFC 7208 4.6, 12)? */
int spf_record_valid(const char *record);

#endif
