/* DMARC (RFC 7489): does the From: domain's policy accept this message,
 * given the SPF and DKIM results? Alignment uses the organizational
 * domain from the Public Suffix List (Debian's publicsuffix package),
 * read only when a policy is looked up. No reports are sent. */
#ifndef POSTAGE_DMARC_H
#define POSTAGE_DMARC_H

#include <stddef.h>

#include "dkim.h"
#include "limits.h"
#include "spf.h"

#define PUBLIC_SUFFIX_LIST "/usr/share/publicsuffix/public_suffix_list.dat"

enum dmarc_result {
	DMARC_NONE = 0,   /* no policy published */
	DMARC_PASS,
	DMARC_FAIL,
	DMARC_TEMPERROR,  /* DNS trouble: never a reason to refuse */
	DMARC_PERMERROR,  /* no usable From: domain */
};

enum dmarc_policy { DMARC_P_NONE = 0, DMARC_P_QUARANTINE, DMARC_P_REJECT };

struct dmarc_verdict {
	enum dmarc_result result;
	enum dmarc_policy policy;      /* p= (or sp= for a subdomain) */
	enum dmarc_policy disposition; /* what the policy asks for this message (pct applied) */
	char from_domain[ADDRESS_DOMAIN_MAX + 1];
	const char *reason;
};

/* from_domain: the single From: domain (lower-case). spf/spf_domain: the
 * SPF result and the domain it was for (MAIL FROM's, or HELO's for <>).
 * dkim: the verdicts of the message's signatures. */
void dmarc_check(const char *from_domain, enum spf_result spf, const char *spf_domain,
		 const struct dkim_verdict *dkim, size_t ndkim, long long deadline,
		 struct dmarc_verdict *out);

/* The organizational domain of domain (RFC 7489 3.2) into out. */
void dmarc_org_domain(const char *domain, char *out, size_t cap);

const char *dmarc_result_name(enum dmarc_result r);
const char *dmarc_policy_name(enum dmarc_policy p);

#endif
