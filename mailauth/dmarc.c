#include "dmarc.h"

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dns.h"
#include "limits.h"
#include "log.h"

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

/* -- names: lower case, A-labels ---------------------------------------------- */

/* libidn2 (which libpsl5 and GnuTLS need too) is loaded with dlopen only
 * for a name with bytes beyond ASCII: its U-labels become the A-labels
 * that DNS and the public suffix list know. */
#define IDN2_SONAME "libidn2.so.0"
#define IDN2_OK_VALUE 0
#define IDN2_NFC_INPUT_FLAG 1
#define IDN2_NONTRANSITIONAL_FLAG 8

static int (*dl_idn2_lookup_u8)(const uint8_t *src, uint8_t **lookupname, int flags);
static void (*dl_idn2_free)(void *ptr);
static int idn2_state; /* 0: not tried; 1: loaded; -1: not to be had */

#if __has_include(<idn2.h>)
#include <idn2.h>
_Static_assert(__builtin_types_compatible_p(__typeof__(&idn2_lookup_u8), __typeof__(dl_idn2_lookup_u8)) &&
		       __builtin_types_compatible_p(__typeof__(&idn2_free), __typeof__(dl_idn2_free)) &&
		       IDN2_OK == IDN2_OK_VALUE && IDN2_NFC_INPUT == IDN2_NFC_INPUT_FLAG &&
		       IDN2_NONTRANSITIONAL == IDN2_NONTRANSITIONAL_FLAG,
	       "libidn2's declarations differ from ours");
#endif

static int idn2_open(void)
{
	void *h;

	if (idn2_state)
		return idn2_state > 0;
	idn2_state = -1;
	h = dlopen(IDN2_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (h) {
		*(void **)(&dl_idn2_lookup_u8) = dlsym(h, "idn2_lookup_u8");
		*(void **)(&dl_idn2_free) = dlsym(h, "idn2_free");
	}
	if (!h || !dl_idn2_lookup_u8 || !dl_idn2_free) {
		log_event(LOG_WARNING, "event=dmarc result=no_idn2 error=\"cannot load %s: %s\"", IDN2_SONAME,
			  h ? "symbols missing" : dlerror());
		return 0;
	}
	idn2_state = 1;
	return 1;
}

/* in as the name to look up and compare: lower-case, without a final dot,
 * U-labels as A-labels (IDNA2008 with the UTS #46 mapping, as browsers and
 * mail clients read names). 0, or -1 when it is no such name. */
static int domain_ascii(const char *in, char *out, size_t cap)
{
	char copy[ADDRESS_DOMAIN_MAX + 1];
	size_t len = strlen(in);
	uint8_t *a = NULL;
	int ascii = 1, r;

	while (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0 || len > ADDRESS_DOMAIN_MAX || len >= cap)
		return -1;
	for (size_t i = 0; i < len; i++) {
		ascii &= (unsigned char)in[i] < 0x80;
		out[i] = (char)tolower((unsigned char)in[i]);
	}
	out[len] = '\0';
	if (ascii)
		return 0;
	if (!idn2_open())
		return -1;
	memcpy(copy, in, len);
	copy[len] = '\0';
	if (dl_idn2_lookup_u8((const uint8_t *)copy, &a, IDN2_NFC_INPUT_FLAG | IDN2_NONTRANSITIONAL_FLAG) !=
		    IDN2_OK_VALUE ||
	    !a)
		return -1;
	r = snprintf(out, cap, "%s", (const char *)a);
	dl_idn2_free(a);
	if (r <= 0 || (size_t)r >= cap || (size_t)r > ADDRESS_DOMAIN_MAX)
		return -1;
	for (char *c = out; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	return 0;
}

/* -- the organizational domain (RFC 7489 3.2) ------------------------------ */

/* libpsl is loaded with dlopen when an organizational domain is first
 * needed: linked in, it and the libidn2 and libunistring it needs would
 * be mapped and relocated by every handler at start-up, checking or not.
 * It reads the compiled list (about 50 KiB) in well under a millisecond,
 * and knows the list's internationalised rules in both forms. */
#define PSL_SONAME "libpsl.so.5"

typedef struct psl_ctx_st psl_ctx_t;
static psl_ctx_t *(*dl_psl_latest)(const char *fname);
static psl_ctx_t *(*dl_psl_load_file)(const char *fname);
static const char *(*dl_psl_registrable_domain)(const psl_ctx_t *psl, const char *domain);
static const psl_ctx_t *psl_ctx;
static int psl_state; /* 0: not tried; 1: loaded; -1: not to be had */
static int psl_wanted = 1;

#if __has_include(<libpsl.h>)
#include <libpsl.h>
_Static_assert(__builtin_types_compatible_p(__typeof__(&psl_latest), __typeof__(dl_psl_latest)) &&
		       __builtin_types_compatible_p(__typeof__(&psl_load_file), __typeof__(dl_psl_load_file)) &&
		       __builtin_types_compatible_p(__typeof__(&psl_registrable_domain),
						    __typeof__(dl_psl_registrable_domain)),
	       "libpsl's declarations differ from ours");
#endif

void dmarc_use_libpsl(int yes)
{
	psl_wanted = yes;
}

static int psl_open(void)
{
	void *h;

	if (psl_state)
		return psl_state > 0;
	psl_state = -1;
	h = dlopen(PSL_SONAME, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		log_event(LOG_WARNING,
			  "event=dmarc result=no_libpsl error=\"cannot load %s: %s\" fallback=%s", PSL_SONAME,
			  dlerror(), PUBLIC_SUFFIX_LIST);
		return 0;
	}
	*(void **)(&dl_psl_latest) = dlsym(h, "psl_latest");
	*(void **)(&dl_psl_load_file) = dlsym(h, "psl_load_file");
	*(void **)(&dl_psl_registrable_domain) = dlsym(h, "psl_registrable_domain");
	if (!dl_psl_latest || !dl_psl_load_file || !dl_psl_registrable_domain) {
		log_event(LOG_WARNING, "event=dmarc result=no_libpsl error=\"%s lacks a function\" fallback=%s",
			  PSL_SONAME, PUBLIC_SUFFIX_LIST);
		return 0;
	}
	/* The newest of the compiled list, libpsl's built-in copy and its
	 * distribution's file; the text list only when none of them is. */
	psl_ctx = dl_psl_latest(PUBLIC_SUFFIX_DAFSA);
	if (!psl_ctx)
		psl_ctx = dl_psl_load_file(PUBLIC_SUFFIX_LIST);
	if (!psl_ctx) {
		log_event(LOG_WARNING, "event=dmarc result=no_public_suffix_list path=%s library=%s",
			  PUBLIC_SUFFIX_DAFSA, PSL_SONAME);
		return 0;
	}
	psl_state = 1;
	return 1;
}

/* Without libpsl: the text list, read and walked here. Its rules for
 * internationalised names are in Unicode, so they never match the
 * A-labels we ask about; libpsl knows both forms. */
static char *list_text;
static size_t list_len;
static int list_tried;

static void list_load(void)
{
	FILE *f;
	struct stat st;

	list_tried = 1;
	f = fopen(PUBLIC_SUFFIX_LIST, "re");
	if (!f || fstat(fileno(f), &st) < 0 || st.st_size <= 0 || st.st_size > PSL_FILE_MAX ||
	    !(list_text = malloc((size_t)st.st_size + 1))) {
		log_event(LOG_WARNING, "event=dmarc result=no_public_suffix_list path=%s error=\"%s\"",
			  PUBLIC_SUFFIX_LIST, f ? "unusable" : strerror(errno));
		if (f)
			fclose(f);
		return;
	}
	list_len = fread(list_text, 1, (size_t)st.st_size, f);
	list_text[list_len] = '\0';
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

/* name: lower-case, A-labels, no final dot, three labels or more. */
static void list_org_domain(const char *name, char *out, size_t cap)
{
	char buf[ADDRESS_DOMAIN_MAX + 1];
	const char *labels[LABELS_MAX];
	size_t n, suffix = 1, exception = 0;

	snprintf(buf, sizeof(buf), "%s", name);
	n = split_labels(buf, labels);
	if (!list_tried)
		list_load();
	for (const char *p = list_text; p && p < list_text + list_len;) {
		const char *eol = memchr(p, '\n', (size_t)(list_text + list_len - p));
		const char *end = eol ? eol : list_text + list_len, *tok_end = p;
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
		snprintf(out, cap, "%s", name);
		return;
	}
	out[0] = '\0';
	for (size_t i = n - suffix - 1; i < n; i++) {
		size_t used = strlen(out);
		snprintf(out + used, cap - used, "%s%s", used ? "." : "", labels[i]);
	}
}

void dmarc_org_domain(const char *domain, char *out, size_t cap)
{
	char name[ADDRESS_DOMAIN_MAX + 1];
	const char *reg;

	if (domain_ascii(domain, name, sizeof(name)) < 0) {
		snprintf(out, cap, "%s", domain);
		for (char *c = out; *c; c++)
			*c = (char)tolower((unsigned char)*c);
		return;
	}
	/* A name of one or two labels is its own organizational domain
	 * whatever the list says (a suffix plus one label, or a suffix), so
	 * the list is needed, and libpsl loaded, only for longer names. */
	if (!strchr(name, '.') || !strchr(strchr(name, '.') + 1, '.')) {
		snprintf(out, cap, "%s", name);
		return;
	}
	if (psl_wanted && psl_open()) {
		/* NULL: the name is a public suffix itself, and stays. */
		reg = dl_psl_registrable_domain(psl_ctx, name);
		snprintf(out, cap, "%s", reg ? reg : name);
		return;
	}
	list_org_domain(name, out, cap);
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
	/* not re-entered: parsed into the policy before return */
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

/* The From domain (a lower-case A-label) and its organizational domain,
 * worked out only when a comparison needs it: mail whose identifiers
 * all equal its From domain, and whose From domain publishes its own
 * policy, never loads libpsl for it. */
struct from_domain {
	const char *name;
	char org[ADDRESS_DOMAIN_MAX + 1];
	int known;
};

static const char *from_org(struct from_domain *f)
{
	if (!f->known) {
		dmarc_org_domain(f->name, f->org, sizeof(f->org));
		f->known = 1;
	}
	return f->org;
}

static int aligned(const char *a, struct from_domain *from, int strict)
{
	char name[ADDRESS_DOMAIN_MAX + 1], org[ADDRESS_DOMAIN_MAX + 1];

	if (!a || !a[0] || domain_ascii(a, name, sizeof(name)) < 0)
		return 0;
	if (strcmp(name, from->name) == 0)
		return 1;
	if (strict)
		return 0;
	dmarc_org_domain(name, org, sizeof(org));
	return strcmp(org, from_org(from)) == 0;
}

void dmarc_check(const char *from_domain, enum spf_result spf, const char *spf_domain,
		 const struct dkim_verdict *dkim, size_t ndkim, long long deadline,
		 struct dmarc_verdict *out)
{
	struct from_domain from;
	struct policy pol;
	int r, subdomain = 0, dkim_ok = 0, spf_ok, temp;

	memset(out, 0, sizeof(*out));
	if (!from_domain || !from_domain[0]) {
		out->result = DMARC_PERMERROR;
		out->reason = "no From domain";
		return;
	}
	/* The policy of an internationalised domain is published under its
	 * A-labels, and its U-labels are what a mail client shows. */
	if (domain_ascii(from_domain, out->from_domain, sizeof(out->from_domain)) < 0) {
		out->from_domain[0] = '\0';
		out->result = DMARC_PERMERROR;
		out->reason = "the From domain is not a valid domain name";
		return;
	}
	from_domain = out->from_domain;
	memset(&from, 0, sizeof(from));
	from.name = from_domain;
	r = fetch_policy(from_domain, &pol, deadline);
	if (r == 0 && strcmp(from_org(&from), from_domain) != 0) {
		r = fetch_policy(from_org(&from), &pol, deadline);
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

	/* Only an aligned identifier can pass DMARC (RFC 7489 4.2), so only
	 * its temporary error leaves the outcome open: a domain unrelated to
	 * From whose DNS fails must not turn a fail into a temperror, or any
	 * sender could dodge a policy with one. */
	spf_ok = aligned(spf_domain, &from, pol.strict_spf);
	temp = spf == SPF_TEMPERROR && spf_ok;
	spf_ok = spf == SPF_PASS && spf_ok;
	for (size_t i = 0; i < ndkim; i++) {
		if (!aligned(dkim[i].domain, &from, pol.strict_dkim))
			continue;
		if (dkim[i].result == DKIM_TEMPERROR)
			temp = 1;
		if (dkim[i].result == DKIM_PASS)
			dkim_ok = 1;
	}
	if (dkim_ok || spf_ok) {
		out->result = DMARC_PASS;
		out->disposition = DMARC_P_NONE;
		return;
	}
	if (temp) {
		/* An aligned SPF or DKIM answer we could not get might
		 * have passed. */
		out->result = DMARC_TEMPERROR;
		out->reason = "aligned SPF or DKIM temporary error";
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
