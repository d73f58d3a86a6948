/* mailauth/spf.c: macro expansion (the examples of RFC 7208 7.4) and the
 * record syntax (RFC 7208 4.6, 5, 6, 12). check_host() itself, with DNS,
 * is tested against python3-spf in tests/protocol/test_spf_dmarc.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "spf.h"

struct macro_case {
	const char *spec;
	const char *want; /* NULL: a syntax error */
};

/* RFC 7208 7.4: sender strong-bad@email.example.com, IPv4 192.0.2.3. */
static const struct macro_case rfc_v4[] = {
	{ "%{s}", "strong-bad@email.example.com" },
	{ "%{o}", "email.example.com" },
	{ "%{d}", "email.example.com" },
	{ "%{d4}", "email.example.com" },
	{ "%{d3}", "email.example.com" },
	{ "%{d2}", "example.com" },
	{ "%{d1}", "com" },
	{ "%{dr}", "com.example.email" },
	{ "%{d2r}", "example.email" },
	{ "%{l}", "strong-bad" },
	{ "%{l-}", "strong.bad" },
	{ "%{lr}", "strong-bad" },
	{ "%{lr-}", "bad.strong" },
	{ "%{l1r-}", "strong" },
	{ "%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com" },
	{ "%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com" },
	{ "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com" },
	{ "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com" },
	{ "%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net" },
	{ "%{i}", "192.0.2.3" },
	{ "%{h}", "mx.example.org" },
	{ "%{p}", "unknown" },
	{ "%%%_%-", "% %20" },
	{ "plain.example.com", "plain.example.com" },
	{ "%{D2}", "example.com" }, /* upper case: URL-escaped, the same here */
	/* syntax errors */
	{ "%{x}", NULL },
	{ "%{d0}", NULL },
	{ "%{c}", NULL },  /* c, r, t only in exp= */
	{ "%{t}", NULL },
	{ "%", NULL },
	{ "%a", NULL },
	{ "%{d", NULL },
	{ "%{d2x}", NULL },
	{ "a b", NULL },
};

/* Each case expanded for client 192.0.2.3, sender
 * strong-bad@email.example.com, domain email.example.com, HELO
 * mx.example.org: as a domain-spec, or (explain) as an explanation with
 * receiver mx.receiver.example. want NULL: a syntax error. */
static void check_cases(const struct macro_case *cases, size_t n, int explain)
{
	char out[600];

	for (size_t i = 0; i < n; i++) {
		const struct macro_case *c = &cases[i];
		int r = explain ? spf_explain_expand(c->spec, "192.0.2.3", "strong-bad@email.example.com",
						     "email.example.com", "mx.example.org",
						     "mx.receiver.example", out, sizeof(out)) :
				  spf_macro_expand(c->spec, "192.0.2.3", "strong-bad@email.example.com",
						   "email.example.com", "mx.example.org", out, sizeof(out));

		if (c->want) {
			if (CHECK_INT(c->spec, 0, r))
				CHECK_STR(c->spec, c->want, out);
		} else {
			CHECK_INT(c->spec, -1, r);
		}
	}
}

int main(void)
{
	char out[600];

	check_cases(rfc_v4, sizeof(rfc_v4) / sizeof(rfc_v4[0]), 0);

	/* RFC 7208 7.4, IPv6 2001:db8::cb01 */
	CHECK_INT("ip6", 0,
		  spf_macro_expand("%{ir}.%{v}._spf.%{d2}", "2001:db8::cb01",
				   "strong-bad@email.example.com", "email.example.com", "h", out,
				   sizeof(out)));
	CHECK_STR("ip6", "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com",
		  out);

	/* 4.3: no local part means "postmaster". */
	CHECK_INT("%{l}", 0, spf_macro_expand("%{l}", "192.0.2.3", "email.example.com",
					      "email.example.com", "h", out, sizeof(out)));
	CHECK_STR("%{l} without a local part", "postmaster", out);

	/* 7.3: a result longer than 253 octets loses labels on the left. */
	{
		char local[64], sender[128];

		memset(local, 'a', 60);
		local[60] = '\0';
		snprintf(sender, sizeof(sender), "%s@example.com", local);
		CHECK_INT("long", 0, spf_macro_expand("%{l}.%{l}.%{l}.%{l}.%{l}.x.example", "192.0.2.3",
						      sender, "example.com", "h", out, sizeof(out)));
		CHECK_TRUE("long result cut to 253", strlen(out) <= 253);
		CHECK_TRUE("long result keeps the right end",
			   strlen(out) > 10 && strcmp(out + strlen(out) - 10, ".x.example") == 0);
	}

	/* Explanation strings (6.2, 7): spaces, c, r, t, URL escaping. */
	{
		static const struct macro_case explain[] = {
			/* RFC 7208 7.4's example */
			{ "%{i} is not one of %{d}'s designated mail servers.",
			  "192.0.2.3 is not one of email.example.com's designated mail servers." },
			{ "See http://%{d}/why.html?s=%{S}&i=%{I}",
			  "See http://email.example.com/why.html?s=strong-bad%40email.example.com&i=192.0.2.3" },
			{ "%{l} via %{c} at %{r}", "strong-bad via 192.0.2.3 at mx.receiver.example" },
			{ "%{R}", "mx.receiver.example" },
			{ "100%% %_", "100%  " },
			{ "", "" },
			{ "bad %{z}", NULL },
			{ "bad %z", NULL },
			{ "tab\there", NULL },
			{ "high \x80", NULL },
		};

		check_cases(explain, sizeof(explain) / sizeof(explain[0]), 1);
		CHECK_INT("explain c v6", 0,
			  spf_explain_expand("%{c}", "2001:db8::cb01", "a@example.com", "example.com", "h",
					     "r.example", out, sizeof(out)));
		CHECK_STR("explain c v6", "2001:db8::cb01", out);
		CHECK_INT("explain t", 0,
			  spf_explain_expand("%{t}", "192.0.2.3", "a@example.com", "example.com", "h",
					     "r.example", out, sizeof(out)));
		CHECK_TRUE("explain t is a recent unix time",
			   strlen(out) >= 10 && strspn(out, "0123456789") == strlen(out) &&
				   atoll(out) > 1700000000LL);
		/* Too long for the buffer: an error, never a cut string. */
		CHECK_INT("explain overflow", -1,
			  spf_explain_expand("%{d}%{d}%{d}", "192.0.2.3", "a@example.com", "example.com",
					     "h", "r.example", out, 20));
	}

	/* Record syntax. */
	{
		static const struct {
			const char *rec;
			int ok;
		} recs[] = {
			{ "v=spf1", 1 },
			{ "v=spf1 -all", 1 },
			{ "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 a mx ptr ~all", 1 },
			{ "v=spf1 a:example.com/24//64 mx/30 -all", 1 },
			{ "v=spf1 a//64 -all", 1 },
			{ "v=spf1 include:_spf.example.com ?all", 1 },
			{ "v=spf1 exists:%{i}._spf.%{d} -all", 1 },
			{ "v=spf1 redirect=_spf.example.com", 1 },
			{ "v=spf1 exp=explain.example.com -all", 1 },
			{ "v=spf1 unknown-modifier=foo -all", 1 },
			{ "v=spf1  -all ", 1 },
			{ "v=spf1 +ALL", 1 },
			{ "v=spf10 -all", 0 },
			{ "v=spf1 foo:bar", 0 },            /* unknown mechanism */
			{ "v=spf1 ip4:192.0.2.300", 0 },
			{ "v=spf1 ip4:192.0.2.0/33", 0 },
			{ "v=spf1 ip6:2001:db8::/129", 0 },
			{ "v=spf1 ip4:192.0.2.0/024", 0 },  /* no leading zero */
			{ "v=spf1 include", 0 },
			{ "v=spf1 include:", 0 },
			{ "v=spf1 a:", 0 },
			{ "v=spf1 redirect=a.example redirect=b.example", 0 },
			{ "v=spf1 exp=a.example exp=b.example", 0 },
			{ "v=spf1 redirect=", 0 },
			{ "v=spf1 -all/24", 0 },
			{ "v=spf1 mx:a.example/24/24", 0 },
			{ "v=spf1 *all", 0 },
		};
		for (size_t i = 0; i < sizeof(recs) / sizeof(recs[0]); i++)
			CHECK_INT(recs[i].rec, recs[i].ok, spf_record_valid(recs[i].rec));
	}
	return check_finish("spf");
}
