/* SPF records and macros as DNS hands them to us (RFC 7208 4.6, 7): any
 * TXT text through the record parser, and any domain-spec through the
 * macro expansion, for an IPv4 and an IPv6 client, and any TXT text
 * through the explanation expansion (exp=, RFC 7208 6.2). Checked: no
 * crash, an expansion is NUL-terminated, within its buffer and (a
 * domain-spec) at most 253 octets, an explanation holds only printable
 * ASCII and spaces, and a record that parses also parses with "v=spf1" in
 * upper case. */
#include "fuzz.h"

#include <ctype.h>

#include "spf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[1024];
	char *s, *rec;
	int r;

	if (size > 4096)
		return 0;
	s = fuzz_cstring(data, size);
	rec = malloc(strlen(s) + 8);
	if (!rec)
		abort();
	snprintf(rec, strlen(s) + 8, "v=spf1 %s", s);
	r = spf_record_valid(rec);
	FUZZ_ASSERT(r == 0 || r == 1);
	memcpy(rec, "V=SPF1", 6);
	FUZZ_ASSERT(spf_record_valid(rec) == r);
	free(rec);

	for (int v6 = 0; v6 < 2; v6++) {
		memset(out, 0x7e, sizeof(out));
		r = spf_macro_expand(s, v6 ? "2001:db8::cb01" : "192.0.2.3", "strong-bad@email.example.com",
				     "email.example.com", "mx.example.org", out, 600);
		FUZZ_ASSERT(r == 0 || r == -1);
		if (r == 0) {
			size_t n = strnlen(out, 600);
			FUZZ_ASSERT(n < 600);
			FUZZ_ASSERT(n <= 253);
			FUZZ_ASSERT(out[601] == 0x7e); /* nothing past the buffer */
		}
		memset(out, 0x7e, sizeof(out));
		r = spf_explain_expand(s, v6 ? "2001:db8::cb01" : "192.0.2.3", "strong-bad@email.example.com",
				       "email.example.com", "mx.example.org", "mx.receiver.example", out, 600);
		FUZZ_ASSERT(r == 0 || r == -1);
		if (r == 0) {
			size_t n = strnlen(out, 600);
			FUZZ_ASSERT(n < 600);
			for (size_t k = 0; k < n; k++)
				FUZZ_ASSERT(out[k] >= 0x20 && out[k] < 0x7f);
			FUZZ_ASSERT(out[601] == 0x7e);
		}
	}
	free(s);
	return 0;
}
