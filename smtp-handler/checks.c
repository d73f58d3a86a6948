/* SPF, DKIM and DMARC for mail from outside, and the
 * Authentication-Results field that reports them (checks.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "dkim.h"
#include "dmarc.h"
#include "dns.h"
#include "headers.h"
#include "limits.h"
#include "log.h"
#include "session.h"
#include "spf.h"
#include "spool.h"

/* How strict an outcome is: a failure by its disposition, then a
 * temporary error, then a permanent one, then the rest. */
static int dmarc_strictness(const struct dmarc_verdict *v)
{
	switch (v->result) {
	case DMARC_FAIL:
		return 3 + (int)v->disposition;
	case DMARC_TEMPERROR:
		return 2;
	case DMARC_PERMERROR:
		return 1;
	case DMARC_NONE:
	case DMARC_PASS:
		break;
	}
	return 0;
}

static long long elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (long long)(t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* Mail from outside, on the MX: not AUTH, not relay_networks. A loopback
 * client is this machine itself; its mail is checked only when the
 * resolver is on this machine too (a local unbound, or a test's own
 * network namespace), so that local submissions cause no lookups at a
 * remote resolver and no delay when it is unreachable. */
static int checks_apply(struct session *s)
{
	if (s->mode != MODE_MX || s->auth_login[0] || !s->peer.ip[0])
		return 0;
	if ((cidr_match(s->peer.ip, "127.0.0.0/8") == 1 || cidr_match(s->peer.ip, "::1") == 1) &&
	    !dns_resolver_is_local())
		return 0;
	return session_may_relay(s) == 0;
}

int checks_mail_from(struct session *s, const struct address *sender)
{
	struct inbound_checks *c = &s->tx.checks;
	struct helo_spf *h = &s->helo_spf;
	char identity[ADDRESS_PATH_MAX + 16], safe[ADDRESS_PATH_MAX * 4 + 8];
	struct timespec t0;
	long long deadline;
	int fresh = 0; /* spf_mailfrom is the latest spf_check's verdict */

	c->active = checks_apply(s);
	if (!c->active)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	deadline = dns_deadline(0);
	/* HELO, once per HELO name. */
	if (strcmp(h->name, s->helo) != 0 || !h->name[0]) {
		snprintf(h->name, sizeof(h->name), "%s", s->helo);
		h->valid = s->helo[0] && s->helo[0] != '[' &&
				address_domain_valid(s->helo, strlen(s->helo), 0) && strchr(s->helo, '.');
		h->result = SPF_NONE;
		h->reason[0] = '\0';
		if (h->valid) {
			snprintf(identity, sizeof(identity), "postmaster@%s", s->helo);
			h->result = spf_check(s->peer.ip, s->helo, identity, s->helo, deadline, h->reason,
					      sizeof(h->reason));
			fresh = 1;
		}
	}
	/* MAIL FROM; RFC 7208 2.4: for <> it is postmaster@HELO, checked above. */
	if (sender->is_null || !sender->domain[0]) {
		c->spf_mailfrom = h->result;
		snprintf(c->spf_mailfrom_reason, sizeof(c->spf_mailfrom_reason), "%s", h->reason);
		snprintf(c->spf_domain, sizeof(c->spf_domain), "%s", h->valid ? s->helo : "");
	} else {
		address_format(sender, identity, sizeof(identity));
		snprintf(c->spf_domain, sizeof(c->spf_domain), "%s", sender->domain);
		c->spf_mailfrom = sender->is_literal ?
					  SPF_NONE :
					  spf_check(s->peer.ip, sender->domain, identity, s->helo, deadline,
						    c->spf_mailfrom_reason, sizeof(c->spf_mailfrom_reason));
		fresh = !sender->is_literal;
	}
	address_format(sender, identity, sizeof(identity));
	log_printable(safe, sizeof(safe), identity, strlen(identity));
	log_event(LOG_INFO, "event=spf ip=%s from=\"%s\" helo=%s spf=%s spf_helo=%s ms=%lld", s->peer.ip,
		  safe, s->helo[0] ? s->helo : "-", spf_result_name(c->spf_mailfrom),
		  spf_result_name(h->result), elapsed_ms(&t0));
	if (c->spf_mailfrom == SPF_FAIL && setting_int(SET_SPF_REJECT_FAIL)) {
		/* RFC 7208 6.2: the domain's own explanation (exp=), if it
		 * gives one, marked as its words (8.4). Cut to keep the
		 * reply within its line (RFC 5321 4.5.3.1.5). */
		char exp[1024], shown[SPF_EXPLANATION_SHOWN];

		/* spf_explanation gives printable ASCII and spaces only. */
		if (fresh && spf_explanation(setting(SET_HOSTNAME), exp, sizeof(exp)) == 0)
			snprintf(shown, sizeof(shown), "%s", exp);
		else
			shown[0] = '\0';
		log_event(LOG_NOTICE, "event=spf result=refused ip=%s from=\"%s\" explanation=%s",
			  s->peer.ip, safe, shown[0] ? "yes" : "no");
		reply(s, "550 5.7.23 <%s>: Sender address rejected: SPF check failed: %s%s%s%s%s", safe,
		      c->spf_mailfrom_reason[0] ? c->spf_mailfrom_reason : "not permitted",
		      shown[0] ? "; " : "", shown[0] ? c->spf_domain : "", shown[0] ? " explains: " : "",
		      shown);
		return -1;
	}
	return 0;
}

/* A comment's text: printable, no parentheses or backslashes. */
static void comment_text(char *out, size_t cap, const char *in)
{
	size_t o = 0;

	for (; in && *in && o + 1 < cap; in++)
		out[o++] = (*in < 0x20 || *in > 0x7e || *in == '(' || *in == ')' || *in == '\\') ? '?' : *in;
	out[o] = '\0';
}

/* Appends "; resinfo" on a folded line. */
static void ar_add(char *buf, size_t cap, size_t *len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void ar_add(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*len >= cap)
		return;
	n = snprintf(buf + *len, cap - *len, ";\n\t");
	if (n < 0 || (size_t)n >= cap - *len)
		return;
	*len += (size_t)n;
	va_start(ap, fmt);
	n = vsnprintf(buf + *len, cap - *len, fmt, ap);
	va_end(ap);
	if (n > 0 && (size_t)n < cap - *len)
		*len += (size_t)n;
	else
		buf[*len] = '\0';
}

/* Is this Authentication-Results field one that claims to be ours
 * (RFC 8601 5)? Its authserv-id is the first token of the value. */
static int claims_our_id(const struct header_field *f, const char *id)
{
	char v[512];
	size_t n = 0;
	const char *p = f->value, *end = f->value + f->value_len;

	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	while (p < end && *p != ';' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '(' &&
	       n + 1 < sizeof(v))
		v[n++] = *p++;
	v[n] = '\0';
	return strcasecmp(v, id) == 0;
}

int checks_message(struct session *s, const char *qid, int *fd, char *staging, size_t cap,
		   off_t header_start, off_t *size, unsigned long long *lf_count)
{
	/* not re-entered: once per message; spf, dkim and dmarc do not call back */
	static struct dkim_verdict dk[DKIM_VERIFY_MAX];
	static const struct header_field *drop[MESSAGE_HEADER_FIELDS_MAX];
	static char ar[AUTH_RESULTS_MAX];
	struct inbound_checks *c = &s->tx.checks;
	const struct helo_spf *h = &s->helo_spf;
	const char *host = setting(SET_HOSTNAME);
	struct header_block hb;
	struct dmarc_verdict dm;
	char from[ADDRESS_DOMAIN_MAX + 1] = "", cm[200];
	static char from_domains[DMARC_FROM_DOMAINS_MAX][ADDRESS_DOMAIN_MAX + 1];
	const char *unusable = NULL; /* why the From field cannot be checked */
	size_t ndk = 0, ndrop = 0, len = 0, nfrom = 0, from_fields = 0, unchecked = 0;
	struct timespec t0;
	long long deadline;
	int have_hb, rc;

	c->from_policy_known = 0;
	c->from_dmarc_pass = 0;
	if (!c->active)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	deadline = dns_deadline(0);
	have_hb = header_block_read(*fd, header_start, *size, &hb) == 0;
	/* Past MESSAGE_HEADER_MAX or MESSAGE_HEADER_FIELDS_MAX no From field
	 * is seen: padding must not hide one. */
	if (!have_hb && errno == EFBIG)
		unusable = "header section too large to check";
	if (have_hb) {
		long pos = -1;
		const struct header_field *f, *first = NULL;

		/* RFC 7489 6.6.1: one From field. Several authors: each
		 * domain is checked and the strictest outcome counts, so a
		 * second author cannot dodge a policy. */
		while ((f = header_next(&hb, "from", &pos)))
			if (from_fields++ == 0)
				first = f;
		if (from_fields == 1)
			nfrom = header_address_domains(first, from_domains, DMARC_FROM_DOMAINS_MAX,
						       &unchecked);
		if (from_fields > 1)
			unusable = "more than one From field";
		else if (unchecked)
			unusable = "From names more authors than are checked";
		ndk = dkim_verify(*fd, &hb, dk, DKIM_VERIFY_MAX, deadline);
		pos = -1;
		while ((f = header_next(&hb, "authentication-results", &pos)))
			if (claims_our_id(f, host) && ndrop < MESSAGE_HEADER_FIELDS_MAX)
				drop[ndrop++] = f;
	}
	if (unusable) {
		memset(&dm, 0, sizeof(dm));
		dm.result = DMARC_PERMERROR;
		dm.reason = unusable;
	} else {
		dmarc_check(nfrom ? from_domains[0] : "", c->spf_mailfrom, c->spf_domain, dk, ndk,
			    deadline, &dm);
	}
	c->from_policy = (int)dm.policy;
	c->from_dmarc_pass = !unusable && nfrom > 0 && dm.result == DMARC_PASS;
	c->from_policy_known = !unusable && nfrom > 0 && dm.result != DMARC_TEMPERROR &&
			       dm.result != DMARC_PERMERROR;
	for (size_t i = 1; !unusable && i < nfrom; i++) {
		struct dmarc_verdict other;

		dmarc_check(from_domains[i], c->spf_mailfrom, c->spf_domain, dk, ndk, deadline, &other);
		if ((int)other.policy > c->from_policy)
			c->from_policy = (int)other.policy;
		if (other.result == DMARC_TEMPERROR || other.result == DMARC_PERMERROR)
			c->from_policy_known = 0;
		if (other.result != DMARC_PASS)
			c->from_dmarc_pass = 0;
		if (dmarc_strictness(&other) > dmarc_strictness(&dm))
			dm = other;
	}
	snprintf(from, sizeof(from), "%s", dm.from_domain);

	/* RFC 8601 2.2: authserv-id; then one resinfo a method. */
	len = (size_t)snprintf(ar, sizeof(ar), "Authentication-Results: %s", host);
	comment_text(cm, sizeof(cm), c->spf_mailfrom_reason);
	if (c->spf_domain[0] && !s->tx.sender.is_null)
		ar_add(ar, sizeof(ar), &len, "spf=%s (%s) smtp.mailfrom=%s", spf_result_name(c->spf_mailfrom),
		       cm[0] ? cm : "no reason", c->spf_domain);
	else if (!s->tx.sender.is_null)
		ar_add(ar, sizeof(ar), &len, "spf=none smtp.mailfrom=%s", "unknown");
	if (h->valid) {
		comment_text(cm, sizeof(cm), h->reason);
		ar_add(ar, sizeof(ar), &len, "spf=%s (%s) smtp.helo=%s", spf_result_name(h->result),
		       cm[0] ? cm : "no reason", s->helo);
	} else if (s->tx.sender.is_null) {
		ar_add(ar, sizeof(ar), &len, "spf=none (no usable HELO) smtp.mailfrom=<>");
	}
	if (ndk == 0)
		ar_add(ar, sizeof(ar), &len, "dkim=none%s", have_hb ? "" : " (header too large)");
	for (size_t i = 0; i < ndk; i++) {
		comment_text(cm, sizeof(cm), dk[i].reason);
		ar_add(ar, sizeof(ar), &len, "dkim=%s%s%s%s header.d=%s header.s=%s header.a=%s header.b=%s",
		       dkim_result_name(dk[i].result), cm[0] ? " (" : "", cm, cm[0] ? ")" : "",
		       dk[i].domain[0] ? dk[i].domain : "unknown",
		       dk[i].selector[0] ? dk[i].selector : "unknown",
		       dk[i].algorithm[0] ? dk[i].algorithm : "unknown", dk[i].b[0] ? dk[i].b : "none");
	}
	if (dm.result == DMARC_NONE || dm.result == DMARC_PERMERROR || dm.result == DMARC_TEMPERROR) {
		comment_text(cm, sizeof(cm), dm.reason);
		ar_add(ar, sizeof(ar), &len, "dmarc=%s%s%s%s header.from=%s", dmarc_result_name(dm.result),
		       cm[0] ? " (" : "", cm, cm[0] ? ")" : "", from[0] ? from : "unknown");
	} else {
		ar_add(ar, sizeof(ar), &len, "dmarc=%s (p=%s dis=%s) header.from=%s",
		       dmarc_result_name(dm.result), dmarc_policy_name(dm.policy),
		       dmarc_policy_name(dm.disposition), from);
	}
	if (len + 2 >= sizeof(ar)) {
		len = (size_t)snprintf(ar, sizeof(ar), "Authentication-Results: %s; none", host);
	}
	ar[len++] = '\n';
	ar[len] = '\0';
	if (dm.result == DMARC_FAIL && dm.disposition == DMARC_P_QUARANTINE)
		len += (size_t)snprintf(ar + len, sizeof(ar) - len,
					"X-Postage-Quarantine: DMARC policy of %s is quarantine\n", from);

	log_event(LOG_INFO,
		  "event=auth_results id=%s ip=%s spf=%s spf_helo=%s dkim=%s dkim_signatures=%zu dmarc=%s "
		  "policy=%s disposition=%s from_domain=%s ms=%lld",
		  qid, s->peer.ip, spf_result_name(c->spf_mailfrom), spf_result_name(h->result),
		  ndk ? dkim_result_name(dk[0].result) : "none", ndk, dmarc_result_name(dm.result),
		  dmarc_policy_name(dm.policy), dmarc_policy_name(dm.disposition), from[0] ? from : "-",
		  elapsed_ms(&t0));

	/* RFC 7489 6.6.1: a From field that cannot be checked whole may be
	 * refused; else one field naming a harmless author next to one of
	 * a p=reject domain would dodge that domain's policy. */
	if (unusable && setting_int(SET_DMARC_REJECT)) {
		log_event(LOG_NOTICE,
			  "event=data result=refused reason=dmarc_from id=%s from_fields=%zu "
			  "unchecked_authors=%zu header_too_large=%s",
			  qid, from_fields, unchecked, have_hb ? "no" : "yes");
		if (!have_hb)
			reply(s, "550 5.7.1 Message rejected: its header section has more than %d fields or "
				 "%d KiB, too large to check its From field for DMARC",
			      MESSAGE_HEADER_FIELDS_MAX, MESSAGE_HEADER_MAX / 1024);
		else if (from_fields > 1)
			reply(s, "550 5.7.1 Message rejected: it has more than one From field "
				 "(RFC 5322 3.6, RFC 7489 6.6.1)");
		else
			reply(s, "550 5.7.1 Message rejected: its From field names authors of more than %d "
				 "domains, or an address too long to read; DMARC checks every author "
				 "(RFC 7489 6.6.1)",
			      DMARC_FROM_DOMAINS_MAX);
		if (have_hb)
			header_block_free(&hb);
		return -1;
	}
	if (dm.result == DMARC_FAIL && dm.disposition == DMARC_P_REJECT &&
	    setting_int(SET_DMARC_REJECT)) {
		log_event(LOG_NOTICE, "event=data result=refused reason=dmarc id=%s from_domain=%s", qid, from);
		reply(s, "550 5.7.1 Message rejected: the DMARC policy of %s is reject, and the message has %s "
		      "(SPF %s for %s, DKIM %s)", from, "neither an aligned SPF pass nor an aligned DKIM signature",
		      spf_result_name(c->spf_mailfrom), c->spf_domain[0] ? c->spf_domain : "-",
		      ndk ? dkim_result_name(dk[0].result) : "none");
		if (have_hb)
			header_block_free(&hb);
		return -1;
	}

	/* The copy that is delivered: our fields on top, those claiming our
	 * authserv-id gone. */
	rc = staged_edit(s, qid, "ar", ar, len, drop, ndrop, fd, staging, cap, size, lf_count);
	if (have_hb)
		header_block_free(&hb);
	return rc;
}
