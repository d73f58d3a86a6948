/* address_parse_path and address_parse_plain on any bytes. The first byte
 * picks allow_null and allow_utf8; the rest is the argument. Beyond "no
 * crash": what parses stays within the RFC 5321 sizes, and what
 * address_format writes parses back to itself. */
#include "fuzz.h"

#include "address.h"

static void check_parsed(const struct address *a, int allow_utf8)
{
	char buf[ADDRESS_PATH_MAX + 1], again[ADDRESS_PATH_MAX + 1];
	struct address b;
	enum address_parse r;

	FUZZ_ASSERT(strlen(a->local) <= ADDRESS_PATH_MAX);
	FUZZ_ASSERT(strlen(a->domain) <= ADDRESS_DOMAIN_MAX);
	if (!allow_utf8)
		FUZZ_ASSERT(!a->non_ascii);
	for (const char *c = a->domain; *c; c++)
		FUZZ_ASSERT(*c < 'A' || *c > 'Z');
	if (a->is_null) {
		FUZZ_ASSERT(!a->local[0] && !a->domain[0]);
		return;
	}
	if (a->is_postmaster && !a->domain[0]) {
		FUZZ_ASSERT(strcmp(a->local, "postmaster") == 0);
		return;
	}
	FUZZ_ASSERT(a->local[0] && a->domain[0]);
	FUZZ_ASSERT(address_domain_valid(a->domain, strlen(a->domain), allow_utf8));
	FUZZ_ASSERT(a->is_literal == (a->domain[0] == '['));

	/* the normal form is a fixed point */
	address_format(a, buf, sizeof(buf));
	FUZZ_ASSERT(strlen(buf) <= ADDRESS_PATH_MAX);
	r = address_parse_plain(buf, allow_utf8, &b);
	if (r != ADDRESS_OK) {
		fprintf(stderr, "formatted \"%s\" does not parse again: %d\n", buf, (int)r);
		abort();
	}
	address_format(&b, again, sizeof(again));
	if (strcmp(buf, again) != 0) {
		fprintf(stderr, "\"%s\" formats again as \"%s\"\n", buf, again);
		abort();
	}
	FUZZ_ASSERT(strcmp(a->local, b.local) == 0 && strcmp(a->domain, b.domain) == 0);
	FUZZ_ASSERT(a->non_ascii == b.non_ascii && a->is_literal == b.is_literal);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct address a;
	const char *rest = NULL;
	enum address_parse r;
	int allow_null, allow_utf8;
	char *s;

	if (size < 1 || size > 4096)
		return 0;
	allow_null = data[0] & 1;
	allow_utf8 = (data[0] >> 1) & 1;
	s = fuzz_cstring(data + 1, size - 1);

	r = address_parse_path(s, allow_null, allow_utf8, &a, &rest);
	FUZZ_ASSERT(r == ADDRESS_OK || r == ADDRESS_SYNTAX || r == ADDRESS_TOOLONG ||
		    r == ADDRESS_NEED_UTF8);
	if (r == ADDRESS_NEED_UTF8)
		FUZZ_ASSERT(!allow_utf8);
	if (r == ADDRESS_OK) {
		FUZZ_ASSERT(rest > s && rest <= s + strlen(s) && rest[-1] == '>');
		if (a.is_null)
			FUZZ_ASSERT(allow_null);
		check_parsed(&a, allow_utf8);
	}

	/* allowing more never refuses what was accepted, nor changes it */
	if (r == ADDRESS_OK && (!allow_null || !allow_utf8)) {
		struct address wider;
		const char *rest2 = NULL;

		FUZZ_ASSERT(address_parse_path(s, 1, 1, &wider, &rest2) == ADDRESS_OK);
		FUZZ_ASSERT(rest2 == rest && strcmp(wider.local, a.local) == 0 &&
			    strcmp(wider.domain, a.domain) == 0 && wider.is_null == a.is_null);
	}
	if (r == ADDRESS_NEED_UTF8)
		FUZZ_ASSERT(address_parse_path(s, allow_null, 1, &a, &rest) != ADDRESS_NEED_UTF8);

	r = address_parse_plain(s, allow_utf8, &a);
	if (r == ADDRESS_OK) {
		FUZZ_ASSERT(!a.is_null && !a.is_postmaster);
		check_parsed(&a, allow_utf8);
	}

	(void)address_domain_valid(s, strlen(s), allow_utf8);
	free(s);
	return 0;
}
