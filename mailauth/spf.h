/* SPF (RFC 7208): may this client IP send mail for this domain? Our own
 * check_host(), with the RFC's limits: at most SPF_DNS_TERMS_MAX
 * DNS-querying terms (include, a, mx, ptr, exists, redirect), at most
 * SPF_VOID_LOOKUPS_MAX lookups that find nothing, at most
 * SPF_NAMES_PER_TERM_MAX names per mx or ptr, and the caller's deadline
 * for the whole check. The exp= explanation (6.2) is fetched only when
 * asked for, after a "fail": spf_explanation. */
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

/* After spf_check returned SPF_FAIL: the explanation the failing record's
 * exp= names (RFC 7208 6.2), its TXT record macro-expanded, receiver for
 * %{r}. 0 and out set; -1 when there is none: no exp=, or any trouble
 * with it (a bad macro, a DNS error or timeout within the check's
 * deadline, no TXT record or more than one, a syntax error), which the
 * RFC says to treat as no exp=. out holds printable ASCII and spaces only;
 * it comes from the sender's domain, a third party: say so when showing
 * it. */
int spf_explanation(const char *receiver, char *out, size_t cap);

/* For tests and fuzzing: the macro expansion of a domain-spec (RFC 7208
 * 7) for this client, sender, current domain and HELO, into out. 0, or
 * -1 on a syntax error. */
int spf_macro_expand(const char *spec, const char *ip, const char *sender, const char *domain,
		     const char *helo, char *out, size_t cap);
/* For tests and fuzzing: the expansion of an explanation string (RFC
 * 7208 6.2, 7: spaces and the macros c, r, t allowed) with domain as the
 * record's domain. 0, or -1 on a syntax error or when out is too small. */
int spf_explain_expand(const char *text, const char *ip, const char *sender, const char *domain,
		       const char *helo, const char *receiver, char *out, size_t cap);
/* Is record (starting "v=spf1") free of syntax errors (RFC 7208 4.6, 12)? */
int spf_record_valid(const char *record);

#endif
