/* Inbound checks on --mode=mx for mail from outside (not AUTH, not a
 * relay network or POP-before-SMTP client, not loopback): SPF of MAIL
 * FROM and HELO at MAIL, DKIM and DMARC at the end of data, the outcome
 * in an Authentication-Results field (RFC 8601), and the policy of the
 * settings dmarc_reject and spf_reject_fail. DNS work is done once per
 * message within AUTH_CHECK_TIME_MS; a DNS temporary error never makes
 * a 5xx. */
#ifndef POSTAGE_SMTP_CHECKS_H
#define POSTAGE_SMTP_CHECKS_H

#include <sys/types.h>

#include "limits.h"
#include "spf.h"

/* SPF of the HELO name: looked up once per name, kept for the session
 * (across transactions, and across STARTTLS when the name is the same). */
struct helo_spf {
	char name[SMTP_HELO_MAX + 1];         /* the HELO this result belongs to */
	int valid;                            /* a domain name SPF can check */
	enum spf_result result;
	char reason[160];
};

/* The checks of one message (part of struct smtp_tx). */
struct inbound_checks {
	int active;                           /* this transaction is checked */
	enum spf_result spf_mailfrom;         /* MAIL FROM identity (postmaster@helo for <>) */
	char spf_mailfrom_reason[160];
	char spf_domain[ADDRESS_DOMAIN_MAX + 1]; /* the domain SPF checked for MAIL FROM */
	/* For a mailing list's "munge from": the strictest DMARC policy
	 * (enum dmarc_policy) the message's From domains publish; known
	 * only when every one was looked up without error. */
	int from_policy;
	int from_policy_known;
	int from_dmarc_pass;  /* every From domain passed DMARC */
};

#endif
