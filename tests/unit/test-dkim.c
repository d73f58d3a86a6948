/* mailauth/dkim.c: canonicalisation (RFC 6376 3.4, with the example of
 * 3.4.5), body hashes with l=, and tag lists (3.2). Signing and
 * verification with keys in DNS are tested against python3-dkim and
 * opendkim in tests/protocol/test_dkim.py and test_spf_dmarc.py. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "dkim.h"
#include "testdir.h"
#include "tls-crypto.h"

#define S(lit) lit, sizeof(lit) - 1

/* The body hash of body (LF form) equals SHA-256 of canon (CRLF form). */
static void check_body(const char *body, size_t blen, int relaxed, unsigned long long limit,
		       const char *canon, size_t clen, int line)
{
	unsigned char got[32], want[32];
	int fd = testdir_file(body, blen);

	REQUIRE(dl_gnutls_hash_fast(GNUTLS_DIG_SHA256, canon, clen, want) == 0);
	if (check_int_at(__FILE__, line, body, blen, 0,
			 dkim_body_hash(fd, 0, (off_t)blen, relaxed, limit, got), "dkim_body_hash"))
		check_mem_at(__FILE__, line, body, blen, (const char *)want, 32, (const char *)got, 32,
			     relaxed ? "relaxed body hash" : "simple body hash");
	close(fd);
}

#define BODY(body, relaxed, limit, canon) \
	check_body(S(body), relaxed, limit, S(canon), __LINE__)

static void check_header(int relaxed, const char *raw, const char *want)
{
	char out[512];
	long n = dkim_canon_header(relaxed, raw, strlen(raw), out, sizeof(out));

	if (CHECK_TRUE(raw, n >= 0))
		CHECK_STR(raw, want, out);
}

int main(void)
{
	const unsigned long long all = ~0ULL;

	testdir_make("dkim");
	REQUIRE(tls_library_load() == 0);

	/* RFC 6376 3.4.5 */
	check_header(1, "A: X\n", "a:X\r\n");
	check_header(1, "B : Y\t\n\tZ  \n", "b:Y Z\r\n");
	check_header(0, "A: X\n", "A: X\r\n");
	check_header(0, "B : Y\t\n\tZ  \n", "B : Y\t\r\n\tZ  \r\n");
	BODY(" C \nD \t E\n\n\n", 1, all, " C\r\nD E\r\n");
	BODY(" C \nD \t E\n\n\n", 0, all, " C \r\nD \t E\r\n");

	/* more header cases */
	check_header(1, "Subject:   several   spaces \t here\t\n", "subject:several spaces here\r\n");
	check_header(1, "To:\n\tfolded@example.com\n", "to:folded@example.com\r\n");
	check_header(1, "X-Empty:\n", "x-empty:\r\n");
	check_header(1, "MiXeD-CaSe: Value Case Kept\n", "mixed-case:Value Case Kept\r\n");

	/* 3.4.3/3.4.4: empty bodies, missing final line end, trailing blank
	 * (and, relaxed, whitespace-only) lines, inner empty lines kept */
	BODY("", 1, all, "");
	BODY("", 0, all, "\r\n");
	BODY("\n\n\n", 1, all, "");
	BODY("\n\n\n", 0, all, "\r\n");
	BODY("abc", 1, all, "abc\r\n");
	BODY("abc", 0, all, "abc\r\n");
	BODY("a\n  \n\t\n", 1, all, "a\r\n");
	BODY("a\n  \n\t\n", 0, all, "a\r\n  \r\n\t\r\n");
	BODY("a\n \nb\n", 1, all, "a\r\n\r\nb\r\n");
	BODY("a\n\n\nb\n\n", 0, all, "a\r\n\r\n\r\nb\r\n");
	BODY("  lead\tand  trail  \n", 1, all, " lead and trail\r\n");
	/* l=: only the first octets of the canonical body count */
	BODY(" C \nD \t E\n\n\n", 1, 3, " C\r");
	BODY(" C \nD \t E\n\n\n", 1, 0, "");
	BODY("x\n", 0, 100, "x\r\n");

	/* tag lists */
	{
		struct tag tags[TAGS_MAX];
		size_t n = 0;
		char v[64];
		const char *sig = "v=1; a=rsa-sha256;\n\td = example.com ; h=from :\n to; b=abc\n def; p=";

		if (CHECK_INT(sig, 0, tags_parse(sig, strlen(sig), tags, &n))) {
			CHECK_INT(sig, 6, (long long)n);
			CHECK_TRUE(sig, tag_is(tag_get(tags, n, "d"), "example.com"));
			CHECK_TRUE(sig, tag_is(tag_get(tags, n, "a"), "RSA-SHA256"));
			REQUIRE(tag_copy(tag_get(tags, n, "h"), v, sizeof(v)) == 0);
			CHECK_STR(sig, "from:to", v);
			REQUIRE(tag_copy(tag_get(tags, n, "b"), v, sizeof(v)) == 0);
			CHECK_STR(sig, "abcdef", v);
			CHECK_INT(sig, 0, (long long)tag_get(tags, n, "p")->len);
			CHECK_TRUE(sig, tag_get(tags, n, "x") == NULL);
		}
		static const char *const bad[] = {
			"a=1; a=2", "1a=x", "=x", "a", "a b=c", "a=1;; b", "toolongtagnameisbad=1",
		};
		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			CHECK_INT(bad[i], -1, tags_parse(bad[i], strlen(bad[i]), tags, &n));
		CHECK_INT("empty", 0, tags_parse("", 0, tags, &n));
		CHECK_INT("trailing ;", 0, tags_parse("a=1;", 4, tags, &n));
		CHECK_INT("trailing ;", 1, (long long)n);
	}
	return check_finish("dkim");
}
