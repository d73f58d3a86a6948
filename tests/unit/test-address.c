/* shared/address.c: path and mailbox syntax (RFC 5321 4.1.2, 4.1.3,
 * 4.5.3.1; RFC 6531 for UTF-8), address_format, and recipient resolution
 * against a database made from schema/schema.sql. */
#include <stdio.h>
#include <string.h>

#include "address.h"
#include "check.h"
#include "db.h"
#include "testdir.h"

enum { NO = 0, YES = 1 };

struct path_case {
	const char *in;
	int allow_null, allow_utf8;
	enum address_parse want;
	const char *local, *domain; /* when ADDRESS_OK */
	const char *rest;           /* when ADDRESS_OK; NULL: not checked */
	int is_null, is_postmaster, is_literal, non_ascii;
};

static const struct path_case path_cases[] = {
	/* null path and postmaster (RFC 5321 4.1.1.2, 4.5.1) */
	{ "<>", YES, NO, ADDRESS_OK, "", "", "", 1, 0, 0, 0 },
	{ "<>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<> SIZE=100", YES, NO, ADDRESS_OK, "", "", " SIZE=100", 1, 0, 0, 0 },
	{ "<postmaster>", NO, NO, ADDRESS_OK, "postmaster", "", "", 0, 1, 0, 0 },
	{ "<PostMaster>", NO, NO, ADDRESS_OK, "postmaster", "", "", 0, 1, 0, 0 },
	{ "<postmaster@Example.ORG>", NO, NO, ADDRESS_OK, "postmaster", "example.org", "", 0, 0, 0, 0 },
	{ "<postmaster@>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<postmasters>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },

	/* plain paths, brackets, leading spaces, the rest after '>' */
	{ "<user@example.com>", NO, NO, ADDRESS_OK, "user", "example.com", "", 0, 0, 0, 0 },
	{ "   <user@example.com>", NO, NO, ADDRESS_OK, "user", "example.com", "", 0, 0, 0, 0 },
	{ "<user@example.com> BODY=8BITMIME", NO, NO, ADDRESS_OK, "user", "example.com",
	  " BODY=8BITMIME", 0, 0, 0, 0 },
	{ "<user@example.com>>", NO, NO, ADDRESS_OK, "user", "example.com", ">", 0, 0, 0, 0 },
	{ "user@example.com", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<user@example.com", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "\t<user@example.com>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<", YES, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "< user@example.com>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<user@example.com >", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	/* the domain is lower-cased, the local part kept as sent */
	{ "<John.Smith@Example.COM>", NO, NO, ADDRESS_OK, "John.Smith", "example.com", "", 0, 0, 0, 0 },

	/* source routes are accepted and dropped (RFC 5321 4.1.2, appendix C) */
	{ "<@a.example,@b.example:user@c.example>", NO, NO, ADDRESS_OK, "user", "c.example", "", 0, 0, 0, 0 },
	{ "<@a.example:user@c.example> X", NO, NO, ADDRESS_OK, "user", "c.example", " X", 0, 0, 0, 0 },
	{ "<@[192.0.2.1]:user@c.example>", NO, NO, ADDRESS_OK, "user", "c.example", "", 0, 0, 0, 0 },
	{ "<@a.example,b.example:user@c.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<@a.example,@b.example,:user@c.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<@a.example,,@b.example:user@c.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<@:user@c.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<@a.example:>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<@a.example user@c.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<@-a.example:user@c.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<@a.example:@b.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<@a.example:postmaster>", NO, NO, ADDRESS_OK, "postmaster", "", "", 0, 1, 0, 0 },

	/* quoted local parts (RFC 5321 4.1.2 Quoted-string); a quoted
	 * string that is a valid dot-string loses its quotes */
	{ "<\"a@b\"@x.example>", NO, NO, ADDRESS_OK, "\"a@b\"", "x.example", "", 0, 0, 0, 0 },
	{ "<\"john.doe\"@x.example>", NO, NO, ADDRESS_OK, "john.doe", "x.example", "", 0, 0, 0, 0 },
	{ "<\"a b\"@x.example>", NO, NO, ADDRESS_OK, "\"a b\"", "x.example", "", 0, 0, 0, 0 },
	{ "<\"a\\\"b\"@x.example>", NO, NO, ADDRESS_OK, "\"a\\\"b\"", "x.example", "", 0, 0, 0, 0 },
	{ "<\"a\\\\b\"@x.example>", NO, NO, ADDRESS_OK, "\"a\\\\b\"", "x.example", "", 0, 0, 0, 0 },
	{ "<\"\\a\\b\"@x.example>", NO, NO, ADDRESS_OK, "ab", "x.example", "", 0, 0, 0, 0 },
	{ "<\"a\\ b\"@x.example>", NO, NO, ADDRESS_OK, "\"a b\"", "x.example", "", 0, 0, 0, 0 },
	{ "<\"\"@x.example>", NO, NO, ADDRESS_OK, "\"\"", "x.example", "", 0, 0, 0, 0 },
	{ "<\".a\"@x.example>", NO, NO, ADDRESS_OK, "\".a\"", "x.example", "", 0, 0, 0, 0 },
	{ "<\"a..b\"@x.example>", NO, NO, ADDRESS_OK, "\"a..b\"", "x.example", "", 0, 0, 0, 0 },
	{ "<\"a>b\"@x.example> SIZE=1", NO, NO, ADDRESS_OK, "\"a>b\"", "x.example", " SIZE=1", 0, 0, 0, 0 },
	{ "<\"a\\\">\"@x.example>", NO, NO, ADDRESS_OK, "\"a\\\">\"", "x.example", "", 0, 0, 0, 0 },
	{ "<\"a\"b@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a\"b\"@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\"ab@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\"ab\">", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\"a\tb\"@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\"a\x7f\"@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\"a\\\x01\"@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\"a\\\"@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },

	/* dot-string (RFC 5321 4.1.2): atoms of atext joined by single dots */
	{ "<a.b.c@x.example>", NO, NO, ADDRESS_OK, "a.b.c", "x.example", "", 0, 0, 0, 0 },
	{ "<!#$%&'*+-/=?^_`{|}~@x.example>", NO, NO, ADDRESS_OK, "!#$%&'*+-/=?^_`{|}~", "x.example", "", 0, 0, 0, 0 },
	{ "<.a@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a.@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a..b@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<.@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a b@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a(c)@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a,b@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@b@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },

	/* UTF-8 (RFC 6531): only with SMTPUTF8, only when well-formed */
	{ "<j\xc3\xb6s@x.example>", NO, NO, ADDRESS_NEED_UTF8, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<j\xc3\xb6s@x.example>", NO, YES, ADDRESS_OK, "j\xc3\xb6s", "x.example", "", 0, 0, 0, 1 },
	{ "<u@b\xc3\xbc" "cher.example>", NO, NO, ADDRESS_NEED_UTF8, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<u@b\xc3\xbc" "cher.example>", NO, YES, ADDRESS_OK, "u", "b\xc3\xbc" "cher.example", "", 0, 0, 0, 1 },
	{ "<\xe7\x94\xa8\xe6\x88\xb7@\xe4\xbe\x8b\xe5\xad\x90.example>", NO, YES, ADDRESS_OK,
	  "\xe7\x94\xa8\xe6\x88\xb7", "\xe4\xbe\x8b\xe5\xad\x90.example", "", 0, 0, 0, 1 },
	{ "<\xf0\x9f\x98\x80@x.example>", NO, YES, ADDRESS_OK, "\xf0\x9f\x98\x80", "x.example", "", 0, 0, 0, 1 },
	{ "<\"j\xc3\xb6 s\"@x.example>", NO, YES, ADDRESS_OK, "\"j\xc3\xb6 s\"", "x.example", "", 0, 0, 0, 1 },
	{ "<\"j\xc3\xb6 s\"@x.example>", NO, NO, ADDRESS_NEED_UTF8, NULL, NULL, NULL, 0, 0, 0, 0 },
	/* malformed UTF-8 is a syntax error with or without SMTPUTF8 */
	{ "<\xc3@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\xc3@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\x80@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a\xc3\xb6\xb6@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\xc0\xaf@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },         /* overlong '/' */
	{ "<\xc1\xbf@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },          /* overlong */
	{ "<\xe0\x80\xaf@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },     /* overlong, 3 */
	{ "<\xf0\x80\x80\xaf@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 }, /* overlong, 4 */
	{ "<\xed\xa0\x80@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },     /* surrogate */
	{ "<\xf4\x90\x80\x80@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 }, /* > U+10FFFF */
	{ "<\xf8\x88\x80\x80\x80@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\xff@x.example>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<u@b\xc3.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<u@\xc0\xae.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<\"\xc3\"@x.example>", NO, YES, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },

	/* domains (RFC 5321 4.1.2 Domain; RFC 1035 labels) */
	{ "<a@localhost>", NO, NO, ADDRESS_OK, "a", "localhost", "", 0, 0, 0, 0 },
	{ "<a@123.example>", NO, NO, ADDRESS_OK, "a", "123.example", "", 0, 0, 0, 0 },
	{ "<a@ex--ample.com>", NO, NO, ADDRESS_OK, "a", "ex--ample.com", "", 0, 0, 0, 0 },
	{ "<a@x-1.example>", NO, NO, ADDRESS_OK, "a", "x-1.example", "", 0, 0, 0, 0 },
	{ "<a@example.com.>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@.example.com>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@example..com>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@->", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@-example.com>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@example-.com>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@example.com->", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@example.-com>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@ex_ample.com>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@exa mple.com>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@example.com:25>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },

	/* address literals (RFC 5321 4.1.3) */
	{ "<a@[192.0.2.1]>", NO, NO, ADDRESS_OK, "a", "[192.0.2.1]", "", 0, 0, 1, 0 },
	{ "<a@[IPv6:2001:DB8::1]>", NO, NO, ADDRESS_OK, "a", "[ipv6:2001:db8::1]", "", 0, 0, 1, 0 },
	{ "<a@[ipv6:::1]>", NO, NO, ADDRESS_OK, "a", "[ipv6:::1]", "", 0, 0, 1, 0 },
	{ "<a@[IPv6:::ffff:192.0.2.1]>", NO, NO, ADDRESS_OK, "a", "[ipv6:::ffff:192.0.2.1]", "", 0, 0, 1, 0 },
	{ "<a@[192.0.2.256]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[192.0.2]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[192.0.2.1.5]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[ 192.0.2.1]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[2001:db8::1]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[IPv6:192.0.2.1]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[IPv6:2001:db8::g]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[IPv6:1:2:3:4:5:6:7:8:9]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[IPv4:192.0.2.1]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[x-tag:content]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[192.0.2.1>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@[192.0.2.1]x>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@x.[192.0.2.1]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
	{ "<a@192.0.2.1]>", NO, NO, ADDRESS_SYNTAX, NULL, NULL, NULL, 0, 0, 0, 0 },
};

static void test_path_table(void)
{
	for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
		const struct path_case *c = &path_cases[i];
		struct address a;
		const char *rest = NULL;
		enum address_parse r;

		memset(&a, 0x5a, sizeof(a));
		r = address_parse_path(c->in, c->allow_null, c->allow_utf8, &a, &rest);
		if (!CHECK_INT(c->in, c->want, r) || r != ADDRESS_OK)
			continue;
		CHECK_STR(c->in, c->local, a.local);
		CHECK_STR(c->in, c->domain, a.domain);
		if (c->rest)
			CHECK_STR(c->in, c->rest, rest);
		CHECK_INT(c->in, c->is_null, a.is_null);
		CHECK_INT(c->in, c->is_postmaster, a.is_postmaster);
		CHECK_INT(c->in, c->is_literal, a.is_literal);
		CHECK_INT(c->in, c->non_ascii, a.non_ascii);
	}
}

struct plain_case {
	const char *in;
	int allow_utf8;
	enum address_parse want;
	const char *local, *domain;
};

static const struct plain_case plain_cases[] = {
	{ "a@b.example", NO, ADDRESS_OK, "a", "b.example" },
	{ "First.Last@Sub.Example.ORG", NO, ADDRESS_OK, "First.Last", "sub.example.org" },
	{ "\"a@b\"@x.example", NO, ADDRESS_OK, "\"a@b\"", "x.example" },
	{ "\"plain\"@x.example", NO, ADDRESS_OK, "plain", "x.example" },
	{ "a@[192.0.2.1]", NO, ADDRESS_OK, "a", "[192.0.2.1]" },
	{ "j\xc3\xb6@x.example", NO, ADDRESS_NEED_UTF8, NULL, NULL },
	{ "j\xc3\xb6@x.example", YES, ADDRESS_OK, "j\xc3\xb6", "x.example" },
	{ "j\xc3@x.example", YES, ADDRESS_SYNTAX, NULL, NULL },
	{ "postmaster", NO, ADDRESS_SYNTAX, NULL, NULL }, /* a target needs a domain */
	{ "<a@b.example>", NO, ADDRESS_SYNTAX, NULL, NULL },
	{ "a@b.example ", NO, ADDRESS_SYNTAX, NULL, NULL },
	{ " a@b.example", NO, ADDRESS_SYNTAX, NULL, NULL },
	{ "a@b.example.", NO, ADDRESS_SYNTAX, NULL, NULL },
	{ "a.@b.example", NO, ADDRESS_SYNTAX, NULL, NULL },
	{ "@b.example", NO, ADDRESS_SYNTAX, NULL, NULL },
	{ "a@", NO, ADDRESS_SYNTAX, NULL, NULL },
	{ "", NO, ADDRESS_SYNTAX, NULL, NULL },
};

static void test_plain_table(void)
{
	for (size_t i = 0; i < sizeof(plain_cases) / sizeof(plain_cases[0]); i++) {
		const struct plain_case *c = &plain_cases[i];
		struct address a;
		enum address_parse r = address_parse_plain(c->in, c->allow_utf8, &a);

		if (!CHECK_INT(c->in, c->want, r) || r != ADDRESS_OK)
			continue;
		CHECK_STR(c->in, c->local, a.local);
		CHECK_STR(c->in, c->domain, a.domain);
		CHECK_INT(c->in, 0, a.is_null);
		CHECK_INT(c->in, 0, a.is_postmaster);
	}
}

/* n copies of c into buf (NUL-terminated); returns buf. */
static char *repeat(char *buf, char c, size_t n)
{
	memset(buf, c, n);
	buf[n] = '\0';
	return buf;
}

/* A valid domain of exactly len octets: labels of 63 'd's and dots, never
 * ending in a dot. */
static char *domain_of(char *buf, size_t len)
{
	size_t o = 0;

	while (o < len) {
		size_t left = len - o;
		size_t label = left > 63 ? 63 : left;

		if (left == 64)
			label = 62; /* else only the dot would be left */
		memset(buf + o, 'd', label);
		o += label;
		if (o < len)
			buf[o++] = '.';
	}
	buf[len] = '\0';
	return buf;
}

/* RFC 5321 4.5.3.1: local part 64, domain 255, path 256 octets. */
static void test_lengths(void)
{
	char local[400], domain[400], in[1200], given[64];
	struct address a;
	enum address_parse r;

	for (size_t n = 62; n <= 66; n++) {
		snprintf(in, sizeof(in), "<%s@x.example>", repeat(local, 'l', n));
		snprintf(given, sizeof(given), "local part of %zu octets", n);
		r = address_parse_path(in, 0, 0, &a, NULL);
		CHECK_INT(given, n <= 64 ? ADDRESS_OK : ADDRESS_TOOLONG, r);
		if (r == ADDRESS_OK)
			CHECK_INT(given, n, strlen(a.local));

		/* a quoted local part counts what is inside the quotes */
		snprintf(in, sizeof(in), "<\"%s x\"@x.example>", repeat(local, 'q', n - 2));
		snprintf(given, sizeof(given), "quoted local part of %zu octets", n);
		CHECK_INT(given, n <= 64 ? ADDRESS_OK : ADDRESS_TOOLONG,
			  address_parse_path(in, 0, 0, &a, NULL));
	}

	/* labels: 63 octets at most (RFC 1035 2.3.4) */
	snprintf(in, sizeof(in), "<a@%s.example>", repeat(local, 'd', 63));
	CHECK_INT("label of 63 octets", ADDRESS_OK, address_parse_path(in, 0, 0, &a, NULL));
	snprintf(in, sizeof(in), "<a@%s.example>", repeat(local, 'd', 64));
	CHECK_INT("label of 64 octets", ADDRESS_SYNTAX, address_parse_path(in, 0, 0, &a, NULL));
	snprintf(in, sizeof(in), "<a@x.%s>", repeat(local, 'd', 64));
	CHECK_INT("last label of 64 octets", ADDRESS_SYNTAX, address_parse_path(in, 0, 0, &a, NULL));

	/* the domain on its own */
	domain_of(domain, 255);
	CHECK_INT("domain of 255 octets", 1, address_domain_valid(domain, 255, 0));
	domain_of(domain, 256);
	CHECK_INT("domain of 256 octets", 0, address_domain_valid(domain, 256, 0));
	CHECK_INT("empty domain", 0, address_domain_valid("", 0, 0));
	CHECK_INT("domain length given, not NUL", 1, address_domain_valid("ab.example-", 10, 0));

	/* the whole path: local@domain of 256 octets fits, 257 does not */
	for (size_t dl = 189; dl <= 193; dl++) {
		size_t total = 64 + 1 + dl;

		snprintf(in, sizeof(in), "<%s@%s>", repeat(local, 'l', 64), domain_of(domain, dl));
		snprintf(given, sizeof(given), "path of %zu octets", total);
		r = address_parse_path(in, 0, 0, &a, NULL);
		CHECK_INT(given, total <= 256 ? ADDRESS_OK : ADDRESS_TOOLONG, r);
		if (r == ADDRESS_OK) {
			char out[ADDRESS_PATH_MAX + 1];
			address_format(&a, out, sizeof(out));
			CHECK_INT(given, total, strlen(out));
		}
	}
	/* a domain over 255 octets is too long, whatever the local part */
	snprintf(in, sizeof(in), "<a@%s>", domain_of(domain, 256));
	CHECK_INT("domain of 256 octets in a path", ADDRESS_TOOLONG, address_parse_path(in, 0, 0, &a, NULL));
	snprintf(in, sizeof(in), "a@%s", domain_of(domain, 300));
	CHECK_INT("domain of 300 octets, plain", ADDRESS_TOOLONG, address_parse_plain(in, 0, &a));

	/* a huge path (with a long source route) is refused before parsing */
	{
		size_t o = 0;
		in[o++] = '<';
		while (o < 700) {
			memcpy(in + o, "@r.example,", 11);
			o += 11;
		}
		in[o - 1] = ':';
		memcpy(in + o, "a@b.example>", 13);
		CHECK_INT("path of 700 octets with a source route", ADDRESS_TOOLONG,
			  address_parse_path(in, 0, 0, &a, NULL));
	}
	/* a quoted local part that re-quotes to more than the buffer */
	{
		size_t o = 0;
		in[o++] = '<';
		in[o++] = '"';
		for (int i = 0; i < 200; i++) {
			in[o++] = '\\';
			in[o++] = '"';
		}
		memcpy(in + o, "\"@x.example>", 13);
		CHECK_INT("quoted local part of 200 escaped quotes", ADDRESS_TOOLONG,
			  address_parse_path(in, 0, 0, &a, NULL));
	}
}

static void test_format(void)
{
	struct address a;
	char buf[ADDRESS_PATH_MAX + 1], small[6];

	REQUIRE(address_parse_path("<>", 1, 0, &a, NULL) == ADDRESS_OK);
	address_format(&a, buf, sizeof(buf));
	CHECK_STR("<>", "", buf);

	REQUIRE(address_parse_path("<postmaster>", 0, 0, &a, NULL) == ADDRESS_OK);
	address_format(&a, buf, sizeof(buf));
	CHECK_STR("<postmaster>", "postmaster", buf);

	REQUIRE(address_parse_path("<@r.example:Bob@EXAMPLE.org>", 0, 0, &a, NULL) == ADDRESS_OK);
	address_format(&a, buf, sizeof(buf));
	CHECK_STR("<@r.example:Bob@EXAMPLE.org>", "Bob@example.org", buf);

	REQUIRE(address_parse_path("<\"a b\"@x.example>", 0, 0, &a, NULL) == ADDRESS_OK);
	address_format(&a, buf, sizeof(buf));
	CHECK_STR("<\"a b\"@x.example>", "\"a b\"@x.example", buf);

	/* what address_format writes parses back to the same address */
	{
		static const char *const again[] = {
			"<\"a\\\"b\"@x.example>", "<\"a@b\"@x.example>", "<a@[IPv6:2001:db8::1]>",
			"<\"\\\\\"@x.example>", "<\"a>b\"@x.example>",
		};
		for (size_t i = 0; i < sizeof(again) / sizeof(again[0]); i++) {
			struct address b;
			char out2[ADDRESS_PATH_MAX + 1];

			REQUIRE(address_parse_path(again[i], 0, 0, &a, NULL) == ADDRESS_OK);
			address_format(&a, buf, sizeof(buf));
			if (!CHECK_INT(buf, ADDRESS_OK, address_parse_plain(buf, 0, &b)))
				continue;
			address_format(&b, out2, sizeof(out2));
			CHECK_STR(again[i], buf, out2);
		}
	}

	/* a small buffer truncates, never overruns */
	REQUIRE(address_parse_path("<abc@example.org>", 0, 0, &a, NULL) == ADDRESS_OK);
	memset(small, 'X', sizeof(small));
	address_format(&a, small, sizeof(small));
	CHECK_STR("<abc@example.org> into 6 octets", "abc@e", small);
}

/* Resolution: addresses, catch-alls, forwards (local, remote, loops), the
 * bare <postmaster>, case-insensitive domains. */
static void test_resolve(const char *dir)
{
	const char *db = testdb_make(dir);
	struct destination d[FORWARD_TARGETS_MAX];
	struct address a;
	size_t n;
	char login[ADDRESS_LOCAL_MAX + 1];

	testdb_exec(db,
		    "INSERT INTO settings VALUES ('hostname', 'mx.test.example');"
		    "INSERT INTO domains VALUES ('example.org'), ('Xcatch.example');"
		    "INSERT INTO mailboxes (login, password, quota_bytes) VALUES "
		    "  ('alice', '$6$salt$hash', 1000);"
		    "INSERT INTO mailboxes (login, password) VALUES ('bob', '$6$salt$hash');"
		    "INSERT INTO mailboxes (login, password, enabled) VALUES ('carol', '$6$s$h', 0);"
		    "INSERT INTO addresses VALUES ('alice@example.org', 'alice'),"
		    "  ('postmaster@example.org', 'alice'), ('bob@example.org', 'bob'),"
		    "  ('carol@example.org', 'carol'), ('@xcatch.example', 'bob'),"
		    "  ('both@example.org', 'bob');"
		    "INSERT INTO forwards VALUES ('list@example.org', 'alice@example.org'),"
		    "  ('list@example.org', 'BOB@Example.ORG'), ('list@example.org', 'ext@remote.example'),"
		    "  ('list@example.org', 'not an@address'),"
		    "  ('both@example.org', 'alice@example.org'),"
		    "  ('loop1@example.org', 'loop2@example.org'),"
		    "  ('loop2@example.org', 'loop1@example.org'),"
		    "  ('half@example.org', 'loop1@example.org'), ('half@example.org', 'bob@example.org');");
	REQUIRE(db_open() == DB_OK);

#define RESOLVE(path, want, count)                                                      \
	do {                                                                            \
		REQUIRE(address_parse_path(path, 0, 1, &a, NULL) == ADDRESS_OK);        \
		n = 99;                                                                 \
		CHECK_INT(path, want, resolve_recipient(&a, d, FORWARD_TARGETS_MAX, &n)); \
		CHECK_INT(path, count, n);                                              \
	} while (0)

	RESOLVE("<alice@example.org>", RESOLVE_OK, 1);
	CHECK_STR("<alice@example.org>", "alice", d[0].mailbox);
	CHECK_INT("<alice@example.org>", DEST_MAILBOX, d[0].kind);
	CHECK_INT("<alice@example.org>", 1000, d[0].quota_bytes);
	CHECK_INT("<alice@example.org>", 1, d[0].enabled);

	RESOLVE("<ALICE@EXAMPLE.ORG>", RESOLVE_OK, 1);
	CHECK_STR("<ALICE@EXAMPLE.ORG>", "alice", d[0].mailbox);

	RESOLVE("<bob@example.org>", RESOLVE_OK, 1);
	CHECK_INT("<bob@example.org>", -1, d[0].quota_bytes);

	RESOLVE("<carol@example.org>", RESOLVE_OK, 1);
	CHECK_INT("<carol@example.org> (disabled)", 0, d[0].enabled);

	RESOLVE("<nobody@example.org>", RESOLVE_UNKNOWN, 0);
	RESOLVE("<anyone@xcatch.example>", RESOLVE_OK, 1);
	CHECK_STR("<anyone@xcatch.example>", "bob", d[0].mailbox);
	RESOLVE("<anyone@XCATCH.example>", RESOLVE_OK, 1);
	RESOLVE("<someone@remote.example>", RESOLVE_NOT_LOCAL, 0);
	RESOLVE("<a@[192.0.2.1]>", RESOLVE_NOT_LOCAL, 0);

	/* a list: two mailboxes and a remote address; the bad target is
	 * skipped */
	RESOLVE("<list@example.org>", RESOLVE_OK, 3);
	{
		int mb_alice = 0, mb_bob = 0, remote = 0;
		for (size_t i = 0; i < n && i < 3; i++) {
			if (d[i].kind == DEST_MAILBOX && strcmp(d[i].mailbox, "alice") == 0)
				mb_alice++;
			if (d[i].kind == DEST_MAILBOX && strcmp(d[i].mailbox, "bob") == 0)
				mb_bob++;
			if (d[i].kind == DEST_REMOTE && strcmp(d[i].address, "ext@remote.example") == 0)
				remote++;
		}
		CHECK_INT("<list@example.org>: alice", 1, mb_alice);
		CHECK_INT("<list@example.org>: bob", 1, mb_bob);
		CHECK_INT("<list@example.org>: ext@remote.example", 1, remote);
	}
	/* an address with a mailbox and a forward gets both */
	RESOLVE("<both@example.org>", RESOLVE_OK, 2);
	/* a pure loop is refused; a loop beside a real target is not */
	RESOLVE("<loop1@example.org>", RESOLVE_LOOP, 0);
	RESOLVE("<half@example.org>", RESOLVE_OK, 1);
	CHECK_STR("<half@example.org>", "bob", d[0].mailbox);

	/* <postmaster>: the hostname is not hosted, so the first hosted domain
	 * with a postmaster gets it */
	RESOLVE("<postmaster>", RESOLVE_OK, 1);
	CHECK_STR("<postmaster>", "alice", d[0].mailbox);

	/* max bounds what is written */
	REQUIRE(address_parse_path("<list@example.org>", 0, 0, &a, NULL) == ADDRESS_OK);
	CHECK_INT("<list@example.org> with room for 1", RESOLVE_OK, resolve_recipient(&a, d, 1, &n));
	CHECK_INT("<list@example.org> with room for 1", 1, n);

	CHECK_INT("EXAMPLE.ORG", 1, domain_is_local("EXAMPLE.ORG"));
	CHECK_INT("remote.example", 0, domain_is_local("remote.example"));

	REQUIRE(address_parse_path("<Bob@Example.org>", 0, 0, &a, NULL) == ADDRESS_OK);
	login[0] = '\0';
	CHECK_INT("owner of <Bob@Example.org>", 1, address_owner(&a, login, sizeof(login)));
	CHECK_STR("owner of <Bob@Example.org>", "bob", login);
	REQUIRE(address_parse_path("<x@xcatch.example>", 0, 0, &a, NULL) == ADDRESS_OK);
	CHECK_INT("owner of <x@xcatch.example>", 1, address_owner(&a, login, sizeof(login)));
	CHECK_STR("owner of <x@xcatch.example>", "bob", login);
	REQUIRE(address_parse_path("<x@remote.example>", 0, 0, &a, NULL) == ADDRESS_OK);
	CHECK_INT("owner of <x@remote.example>", 0, address_owner(&a, login, sizeof(login)));
#undef RESOLVE
}

int main(void)
{
	const char *dir = testdir_make("address");

	setenv("POSTAGE_LOG_FILE", "/dev/null", 1);
	test_path_table();
	test_plain_table();
	test_lengths();
	test_format();
	test_resolve(dir);
	return check_finish("address");
}
