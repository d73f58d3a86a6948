/* The DNS answer parsing of mailauth/dns.c: res_nquery hands back the raw
 * message, and walk_answers with its per-type callbacks (TXT, A, AAAA,
 * MX, PTR) is our own code. mailauth/dns.c is included here (those are
 * static), so the target links its own copy of it; nothing is sent.
 *
 * The input is one raw DNS message, at most DNS_ANSWER_MAX octets as
 * query() keeps, in a buffer of exactly its size (so that ASan sees any
 * read past it); each of the five parsers runs over it. Invariants: at
 * most DNS_RECORDS_MAX records; TXT texts inside their buffer, each
 * NUL-terminated at its len; A and AAAA only from records of 4 and 16
 * octets; MX and PTR names NUL-terminated, printable ASCII (dn_expand
 * escapes the rest), as the queue puts them in logs and bounces. */
#include "fuzz.h"

#include "../../mailauth/dns.c"

#include <ctype.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void check_name(const char *name, size_t cap)
{
	size_t n = strnlen(name, cap);

	FUZZ_ASSERT(n < cap);
	for (size_t i = 0; i < n; i++)
		FUZZ_ASSERT(name[i] > 0x20 && name[i] < 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dns_txt txt;
	static struct dns_addrs addrs;
	static struct dns_mx mx;
	static struct dns_names names;
	unsigned char *ans;
	int len;

	if (size > DNS_ANSWER_MAX)
		size = DNS_ANSWER_MAX;
	len = (int)size;
	ans = malloc(size ? size : 1);
	if (!ans)
		abort();
	memcpy(ans, data, size);

	{
		struct txt_ctx c = { &txt, 0 };
		txt.n = 0;
		walk_answers(ans, len, txt_each, &c);
		FUZZ_ASSERT(txt.n <= DNS_RECORDS_MAX);
		FUZZ_ASSERT(c.used <= sizeof(txt.buf));
		for (size_t i = 0; i < txt.n; i++) {
			FUZZ_ASSERT(txt.text[i] >= txt.buf && txt.text[i] < txt.buf + sizeof(txt.buf));
			FUZZ_ASSERT(txt.text[i] + txt.len[i] < txt.buf + c.used);
			FUZZ_ASSERT(txt.text[i][txt.len[i]] == '\0');
		}
	}
	for (int family = 0; family < 2; family++) {
		struct addr_ctx c = { &addrs, family ? ns_t_aaaa : ns_t_a };
		addrs.n = 0;
		walk_answers(ans, len, addr_each, &c);
		FUZZ_ASSERT(addrs.n <= DNS_RECORDS_MAX);
	}
	mx.n = 0;
	walk_answers(ans, len, mx_each, &mx);
	FUZZ_ASSERT(mx.n <= DNS_RECORDS_MAX);
	for (size_t i = 0; i < mx.n; i++) {
		check_name(mx.mx[i].host, sizeof(mx.mx[i].host));
		FUZZ_ASSERT(mx.mx[i].pref <= 0xffff);
	}
	names.n = 0;
	walk_answers(ans, len, ptr_each, &names);
	FUZZ_ASSERT(names.n <= DNS_RECORDS_MAX);
	for (size_t i = 0; i < names.n; i++)
		check_name(names.name[i], sizeof(names.name[i]));

	free(ans);
	return 0;
}
