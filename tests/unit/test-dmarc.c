/* mailauth/dmarc.c: the organizational domain (RFC 7489 3.2) from Debian's
 * public suffix list, through libpsl and through our own reading of the
 * list (the fallback when libpsl cannot be loaded): normal, wildcard and
 * exception rules, the private section, internationalised names as
 * A-labels and as U-labels. Policy discovery and alignment, with DNS, are
 * tested in tests/protocol/test_spf_dmarc.py. */
#include <dlfcn.h>
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

/* Cases both ways of reading the list agree on. */
static void list_cases(void)
{
	org("mail.example.com", "example.com");
	org("a.b.c.example.com", "example.com");
	org("A.B.Example.CO.UK.", "example.co.uk");
	org("a.b.example.co.uk", "example.co.uk");
	org("co.uk", "co.uk");
	org("www.city.kawasaki.jp", "city.kawasaki.jp");   /* !city.kawasaki.jp */
	org("foo.bar.kawasaki.jp", "foo.bar.kawasaki.jp"); /* *.kawasaki.jp */
	org("a.foo.bar.kawasaki.jp", "foo.bar.kawasaki.jp");
	org("www.ck", "www.ck");
	org("a.b.ck", "a.b.ck");
	org("a.www.ck", "www.ck");                         /* !www.ck */
	org("x.blogspot.com", "x.blogspot.com");           /* private section */
	org("a.x.blogspot.com", "x.blogspot.com");
	org("mail.sub.example.test", "example.test");      /* unknown TLD: the default rule */
	org("a.b.c.unknowntld", "c.unknowntld");
}

int main(void)
{
	void *lib;

	/* Without any list: one or two labels are their own. */
	org("example.com", "example.com");
	org("EXAMPLE.COM.", "example.com");
	org("uk", "uk");
	org("example.test", "example.test");

	/* CI installs libpsl5 and publicsuffix (scripts/test): their absence
	 * is a failure here, not a skip. */
	if (access(PUBLIC_SUFFIX_LIST, R_OK) != 0 || access(PUBLIC_SUFFIX_DAFSA, R_OK) != 0) {
		fprintf(stderr, "test-dmarc: %s or %s missing: install the package publicsuffix\n",
			PUBLIC_SUFFIX_LIST, PUBLIC_SUFFIX_DAFSA);
		return 1;
	}
	lib = dlopen("libpsl.so.5", RTLD_NOW | RTLD_NOLOAD);
	CHECK_TRUE("libpsl not loaded before a long name", lib == NULL);

	/* libpsl */
	list_cases();
	lib = dlopen("libpsl.so.5", RTLD_NOW | RTLD_NOLOAD);
	if (!CHECK_TRUE("libpsl.so.5 loaded (install the package libpsl5)", lib != NULL))
		return check_finish("dmarc");
	/* 公司.cn is a public suffix; the list writes it in Unicode. */
	org("mail.shop.xn--55qx5d.cn", "shop.xn--55qx5d.cn");
	org("shop.xn--55qx5d.cn", "shop.xn--55qx5d.cn");
	org("xn--55qx5d.cn", "xn--55qx5d.cn");
	org("mail.shop.\xe5\x85\xac\xe5\x8f\xb8.cn", "shop.xn--55qx5d.cn");
	org("Mail.Shop.XN--55QX5D.CN", "shop.xn--55qx5d.cn");
	/* 中国 (xn--fiqs8s) is a top-level domain. */
	org("a.b.xn--fiqs8s", "b.xn--fiqs8s");
	org("a.b.\xe4\xb8\xad\xe5\x9b\xbd", "b.xn--fiqs8s");
	/* U-labels are mapped as mail clients map them (UTS #46). */
	org("mail.B\xc3\x9c" "CHER.example.com", "example.com");
	org("mail.b\xc3\xbc" "cher.de", "xn--bcher-kva.de");
	/* Not a valid IDN: given back lower-cased, never looked up. */
	org("a.\xff.example", "a.\xff.example");

	/* Our own reading, as when libpsl cannot be loaded: the same answers
	 * for ASCII rules. */
	dmarc_use_libpsl(0);
	list_cases();
	dmarc_use_libpsl(1);
	return check_finish("dmarc");
}
