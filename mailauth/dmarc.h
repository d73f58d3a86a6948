/* DMARC (RFC 7489): does the From: domain's policy accept this message,
 * given the SPF and DKIM results? Alignment uses the organizational
 * domain from the Public Suffix List: libpsl (libpsl5) with the
 * publicsuffix package's list, loaded with dlopen only when a name of
 * three labels or more is first looked up; without libpsl, our own
 * reading of the list (which knows no internationalised rules). Domains
 * are compared and looked up as A-labels (punycode). No reports are
 * sent. */
#ifndef POSTAGE_DMARC_H
#define POSTAGE_DMARC_H

#include <stddef.h>

#include "dkim.h"
#include "limits.h"
#include "spf.h"

/* The list as text, and compiled for libpsl (which takes the newest of
 * this file, its own built-in copy and its distribution's file). */
#define PUBLIC_SUFFIX_LIST "/usr/share/publicsuffix/public_suffix_list.dat"
#define PUBLIC_SUFFIX_DAFSA "/usr/share/publicsuffix/public_suffix_list.dafsa"

enum dmarc_result {
	DMARC_NONE = 0,   /* no policy published */
	DMARC_PASS,
	DMARC_FAIL,
	DMARC_TEMPERROR,  /* DNS trouble: never a reason to refuse */
	DMARC_PERMERROR,  /* no usable From: domain, or several From fields */
};

enum dmarc_policy { DMARC_P_NONE = 0, DMARC_P_QUARANTINE, DMARC_P_REJECT };

struct dmarc_verdict {
	enum dmarc_result result;
	enum dmarc_policy policy;      /* p= (or sp= for a subdomain) */
	enum dmarc_policy disposition; /* what the policy asks for this message (pct applied) */
	char from_domain[ADDRESS_DOMAIN_MAX + 1];
	const char *reason;
};

/* from_domain: one author's domain from the From: field (lower-case;
 * U-labels are turned into A-labels, and out->from_domain is that form).
 * spf/spf_domain: the SPF result and the domain it was for (MAIL FROM's,
 * or HELO's for <>). dkim: the verdicts of the message's signatures. */
void dmarc_check(const char *from_domain, enum spf_result spf, const char *spf_domain,
		 const struct dkim_verdict *dkim, size_t ndkim, long long deadline,
		 struct dmarc_verdict *out);

/* The organizational domain of domain (RFC 7489 3.2) into out, lower-case
 * and in A-labels; a name that is not a valid internationalised domain
 * name is given back lower-cased as it is. */
void dmarc_org_domain(const char *domain, char *out, size_t cap);

/* For tests: 0 makes dmarc_org_domain read the list itself, as it does
 * when libpsl cannot be loaded; 1 (the default) uses libpsl. */
void dmarc_use_libpsl(int yes);

const char *dmarc_result_name(enum dmarc_result r);
const char *dmarc_policy_name(enum dmarc_policy p);

#endif
