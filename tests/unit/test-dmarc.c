/* shared/dmarc.c: the organizational domain (RFC 7489 3.2) from Debian's
 * public suffix list: normal, wildcard and exception rules, the private
 * section. Policy discovery and alignment, with DNS, are tested in
 * tests/protocol/test_spf_dmarc.py. */
#include <stdio.h>
#include <unistd.h>

#include "check.h"
#include "dmarc.h"

static void org(const char *domain, const char *want)
{
	char out[ADDRESS_DOMAIN_MAX + 1];

	dmarc_org_domain(domain, out, sizeof(out));
	CHECK_STR(domain, want, out);
}

int main(void)
{
	/* Without the list too: one or two labels are their own. */
	org("example.com", "example.com");
	org("EXAMPLE.COM.", "example.com");
	org("uk", "uk");
	org("example.test", "example.test");

	if (access(PUBLIC_SUFFIX_LIST, R_OK) != 0) {
		fprintf(stderr, "test-dmarc: %s missing (package publicsuffix): list cases skipped\n",
			PUBLIC_SUFFIX_LIST);
		return check_finish("dmarc");
	}
	org("mail.example.com", "example.com");
	org("a.b.c.example.com", "example.com");
	org("a.b.example.co.uk", "example.co.uk");
	org("co.uk", "co.uk");
	org("www.city.kawasaki.jp", "city.kawasaki.jp");   /* !city.kawasaki.jp */
	org("foo.bar.kawasaki.jp", "foo.bar.kawasaki.jp"); /* *.kawasaki.jp */
	org("a.foo.bar.kawasaki.jp", "foo.bar.kawasaki.jp");
	org("www.ck", "www.ck");
	org("a.b.ck", "a.b.ck");
	org("x.blogspot.com", "x.blogspot.com");           /* private section */
	org("a.x.blogspot.com", "x.blogspot.com");
	org("mail.sub.example.test", "example.test");      /* unknown TLD: the default rule */
	org("a.b.c.unknowntld", "c.unknowntld");
	return check_finish("dmarc");
}
