#include "dmarc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dns.h"
#include "log.h"

/* The list is about 230 KiB; refuse anything absurdly larger. */
#define PSL_FILE_MAX (8 * 1024 * 1024)
#define LABELS_MAX 128

const char *dmarc_result_name(enum dmarc_result r)
{
	switch (r) {
	case DMARC_NONE:
		return "none";
	case DMARC_PASS:
		return "pass";
	case DMARC_FAIL:
		return "fail";
	case DMARC_TEMPERROR:
		return "temperror";
	case DMARC_PERMERROR:
		return "permerror";
	}
	return "none";
}

const char *dmarc_policy_name(enum dmarc_policy p)
{
	switch (p) {
	case DMARC_P_NONE:
		return "none";
	case DMARC_P_QUARANTINE:
		return "quarantine";
	case DMARC_P_REJECT:
		return "reject";
	}
	return "none";
}

/* -- the organizational domain (RFC 7489 3.2) ------------------------------ */

static char *psl;
static size_t psl_len;
static int psl_tried;

static void psl_load(void)
{
	FILE *f;
	struct stat st;

	psl_tried = 1;
	f = fopen(PUBLIC_SUFFIX_LIST, "re");
	if (!f || fstat(fileno(f), &st) < 0 || st.st_size <= 0 || st.st_size > PSL_FILE_MAX ||
	    !(psl = malloc((size_t)st.st_size + 1))) {
		log_event(LOG_WARNING, "event=dmarc result=no_public_suffix_list path=%s error=\"%s\"",
			  PUBLIC_SUFFIX_LIST, f ? "unusable" : strerror(errno));
		if (f)
			fclose(f);
		return;
	}
	psl_len = fread(psl, 1, (size_t)st.st_size, f);
	psl[psl_len] = '\0';
	fclose(f);
}

/* Splits a lower-cased domain into labels (pointers into buf). */
static size_t split_labels(char *buf, const char **labels)
{
	size_t n = 0;

	for (char *p = buf; *p && n < LABELS_MAX;) {
		char *dot = strchr(p, '.');
		labels[n++] = p;
		if (!dot)
			break;
		*dot = '\0';
		p = dot + 1;
	}
	return n;
}

/* Does rule (one line of the list) match the rightmost labels of the
 * domain? Returns how many labels it covers, or 0. */
static size_t rule_match(const char *rule, size_t rlen, const char **labels, size_t n)
{
	char copy[256];
	const char *rl[LABELS_MAX];
	size_t nr;

	if (rlen == 0 || rlen >= sizeof(copy))
		return 0;
	memcpy(copy, rule, rlen);
	copy[rlen] = '\0';
	nr = split_labels(copy, rl);
	if (nr == 0 || nr > n)
		return 0;
	for (size_t i = 0; i < nr; i++) {
		const char *r = rl[nr - 1 - i], *d = labels[n - 1 - i];
		if (strcmp(r, "*") != 0 && strcasecmp(r, d) != 0)
			return 0;
	}
	return nr;
}

void dmarc_org_domain(const char *domain, char *out, size_t cap)
{
	char buf[ADDRESS_DOMAIN_MAX + 1];
	const char *labels[LABELS_MAX];
	size_t n, suffix = 1, exception = 0;

	snprintf(buf, sizeof(buf), "%s", domain);
	for (char *c = buf; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	while (buf[0] && buf[strlen(buf) - 1] == '.')
		buf[strlen(buf) - 1] = '\0';
	n = split_labels(buf, labels);
	/* A name of one or two labels is its own organizational domain
	 * whatever the list says (suffix plus one label, or a suffix), so
	 * the list is read only for longer names. */
	if (n <= 2) {
		snprintf(out, cap, "%s", domain);
		for (char *c = out; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		while (out[0] && out[strlen(out) - 1] == '.')
			out[strlen(out) - 1] = '\0';
		return;
	}
	if (!psl_tried)
		psl_load();
	for (const char *p = psl; p && p < psl + psl_len;) {
		const char *eol = memchr(p, '\n', (size_t)(psl + psl_len - p));
		const char *end = eol ? eol : psl + psl_len, *tok_end = p;
		size_t m;

		while (tok_end < end && !isspace((unsigned char)*tok_end))
			tok_end++;
		if (tok_end > p && !(p[0] == '/' && tok_end - p > 1 && p[1] == '/')) {
			if (*p == '!') {
				m = rule_match(p + 1, (size_t)(tok_end - p - 1), labels, n);
				if (m > 0)
					exception = m; /* the exception's suffix is one label less */
			} else {
				m = rule_match(p, (size_t)(tok_end - p), labels, n);
				if (m > suffix)
					suffix = m;
			}
		}
		p = eol ? eol + 1 : end;
	}
	if (exception)
		suffix = exception - 1;
	/* The public suffix plus one label; a suffix itself stays as it is. */
	if (n <= suffix) {
		snprintf(out, cap, "%s", domain);
		for (char *c = out; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		return;
	}
	out[0] = '\0';
	for (size_t i = n - suffix - 1; i < n; i++) {
		size_t used = strlen(out);
		snprintf(out + used, cap - used, "%s%s", used ? "." : "", labels[i]);
	}
}

/* -- policy ------------------------------------------------------------------- */

struct policy {
	enum dmarc_policy p, sp;
	int has_sp;
	int strict_dkim, strict_spf;
	int pct;
};

static int parse_policy(const char *t, size_t len, struct policy *out)
{
	struct tag tags[TAGS_MAX];
	const struct tag *p, *v;
	size_t n;

	memset(out, 0, sizeof(*out));
	out->pct = 100;
	if (tags_parse(t, len, tags, &n) < 0 || n == 0)
		return -1;
	v = &tags[0];
	if (strcmp(v->name, "v") != 0 || !tag_is(v, "DMARC1"))
		return -1;
	p = tag_get(tags, n, "p");
	if (tag_is(p, "none"))
		out->p = DMARC_P_NONE;
	else if (tag_is(p, "quarantine"))
		out->p = DMARC_P_QUARANTINE;
	else if (tag_is(p, "reject"))
		out->p = DMARC_P_REJECT;
	else if (tag_get(tags, n, "rua"))
		out->p = DMARC_P_NONE; /* 6.6.3: a bad p= with reports wanted is p=none */
	else
		return -1;
	out->sp = out->p;
	if ((p = tag_get(tags, n, "sp"))) {
		out->has_sp = 1;
		if (tag_is(p, "none"))
			out->sp = DMARC_P_NONE;
		else if (tag_is(p, "quarantine"))
			out->sp = DMARC_P_QUARANTINE;
		else if (tag_is(p, "reject"))
			out->sp = DMARC_P_REJECT;
		else
			out->has_sp = 0;
	}
	out->strict_dkim = tag_is(tag_get(tags, n, "adkim"), "s");
	out->strict_spf = tag_is(tag_get(tags, n, "aspf"), "s");
	if ((p = tag_get(tags, n, "pct"))) {
		char num[8];
		if (tag_copy(p, num, sizeof(num)) == 0 && num[0] >= '0' && num[0] <= '9') {
			int v2 = atoi(num);
			if (v2 >= 0 && v2 <= 100)
				out->pct = v2;
		}
	}
	return 0;
}

/* The record at _dmarc.<domain>: 1 found, 0 none, -1 DNS trouble. */
static int fetch_policy(const char *domain, struct policy *out, long long deadline)
{
	static struct dns_txt txt;
	char name[ADDRESS_DOMAIN_MAX + 16];
	enum dns_result d;
	int found = 0;

	if (snprintf(name, sizeof(name), "_dmarc.%s", domain) >= (int)sizeof(name))
		return 0;
	d = dns_txt(name, &txt, deadline);
	if (d == DNS_TEMPFAIL)
		return -1;
	if (d != DNS_OK)
		return 0;
	for (size_t i = 0; i < txt.n; i++) {
		struct policy p;
		if (strncasecmp(txt.text[i], "v=DMARC1", 8) != 0)
			continue;
		if (parse_policy(txt.text[i], txt.len[i], &p) < 0)
			continue;
		if (found++ == 0)
			*out = p;
	}
	/* 6.6.3: more than one record is no record. */
	return found == 1;
}

static int aligned(const char *a, const char *from, const char *from_org, int strict)
{
	char org[ADDRESS_DOMAIN_MAX + 1];

	if (!a || !a[0])
		return 0;
	if (strcasecmp(a, from) == 0)
		return 1;
	if (strict)
		return 0;
	dmarc_org_domain(a, org, sizeof(org));
	return strcasecmp(org, from_org) == 0;
}

void dmarc_check(const char *from_domain, enum spf_result spf, const char *spf_domain,
		 const struct dkim_verdict *dkim, size_t ndkim, long long deadline,
		 struct dmarc_verdict *out)
{
	char org[ADDRESS_DOMAIN_MAX + 1];
	struct policy pol;
	int r, subdomain = 0, dkim_ok = 0, spf_ok, temp = spf == SPF_TEMPERROR;

	memset(out, 0, sizeof(*out));
	if (!from_domain || !from_domain[0]) {
		out->result = DMARC_PERMERROR;
		out->reason = "no single From domain";
		return;
	}
	snprintf(out->from_domain, sizeof(out->from_domain), "%s", from_domain);
	r = fetch_policy(from_domain, &pol, deadline);
	dmarc_org_domain(from_domain, org, sizeof(org));
	if (r == 0 && strcasecmp(org, from_domain) != 0) {
		r = fetch_policy(org, &pol, deadline);
		subdomain = 1;
	}
	if (r < 0) {
		out->result = DMARC_TEMPERROR;
		out->reason = "policy lookup failed";
		return;
	}
	if (r == 0) {
		out->result = DMARC_NONE;
		return;
	}
	out->policy = subdomain && pol.has_sp ? pol.sp : pol.p;

	for (size_t i = 0; i < ndkim; i++) {
		if (dkim[i].result == DKIM_TEMPERROR)
			temp = 1;
		if (dkim[i].result == DKIM_PASS && aligned(dkim[i].domain, from_domain, org, pol.strict_dkim))
			dkim_ok = 1;
	}
	spf_ok = spf == SPF_PASS && aligned(spf_domain, from_domain, org, pol.strict_spf);
	if (dkim_ok || spf_ok) {
		out->result = DMARC_PASS;
		out->disposition = DMARC_P_NONE;
		return;
	}
	if (temp) {
		/* An SPF or DKIM answer we could not get might have passed. */
		out->result = DMARC_TEMPERROR;
		out->reason = "SPF or DKIM temporary error";
		return;
	}
	out->result = DMARC_FAIL;
	out->reason = "neither an aligned SPF pass nor an aligned DKIM signature";
	out->disposition = out->policy;
	if (pol.pct < 100) {
		unsigned roll = 0;
		if (getrandom(&roll, sizeof(roll), GRND_NONBLOCK) != (ssize_t)sizeof(roll))
			roll = (unsigned)rand();
		if ((int)(roll % 100) >= pol.pct && out->disposition > DMARC_P_NONE)
			out->disposition = (enum dmarc_policy)(out->disposition - 1); /* 6.6.4 */
	}
}
