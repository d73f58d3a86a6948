/* base64_decode and sasl_plain_split, as SMTP AUTH (and POP3 AUTH) use
 * them on a client's line. Checked: decoding stays within its cap and
 * NUL-terminates; what decodes re-encodes and decodes to the same bytes;
 * any bytes encode and decode back; a PLAIN split points inside the
 * message at a non-empty login, and refuses an authzid naming another. */
#include "fuzz.h"

#include "auth.h"
#include "base64.h"
#include "limits.h"

static void check_plain(const char *msg, size_t len)
{
	const char *authcid = NULL, *passwd = NULL;

	if (sasl_plain_split(msg, len, &authcid, &passwd) < 0)
		return;
	FUZZ_ASSERT(authcid > msg && authcid < msg + len);
	FUZZ_ASSERT(passwd > authcid && passwd <= msg + len);
	FUZZ_ASSERT(authcid[0] != '\0');
	FUZZ_ASSERT(authcid[-1] == '\0' && passwd[-1] == '\0');
	/* the password runs to the end: no NUL inside it */
	FUZZ_ASSERT(strlen(passwd) == (size_t)(msg + len - passwd));
	/* an authzid, when given, is the login itself */
	FUZZ_ASSERT(authcid == msg + 1 || strcmp(msg, authcid) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[SMTP_AUTH_LINE_MAX], coded[2 * SMTP_AUTH_LINE_MAX], again[SMTP_AUTH_LINE_MAX];
	static char raw[SMTP_AUTH_LINE_MAX + 1];
	size_t cap;
	long n;
	char *line;

	if (size > SMTP_AUTH_LINE_MAX)
		return 0;
	line = fuzz_cstring(data, size);
	/* sometimes a tight output buffer */
	cap = size % 3 == 0 ? 1 + size % 17 : sizeof(out);

	memset(out, 0x7e, sizeof(out));
	n = base64_decode(line, out, cap);
	FUZZ_ASSERT(n >= -1);
	if (n >= 0) {
		size_t k;
		long m;

		FUZZ_ASSERT((size_t)n < cap && out[n] == '\0');
		FUZZ_ASSERT(strlen(line) % 4 == 0 && (size_t)n <= strlen(line) / 4 * 3);
		if (cap == sizeof(out))
			FUZZ_ASSERT(out[n + 1] == 0x7e); /* nothing written past the NUL */
		k = base64_encode(out, (size_t)n, coded, sizeof(coded));
		FUZZ_ASSERT(k == ((size_t)n + 2) / 3 * 4 && coded[k] == '\0');
		m = base64_decode(coded, again, sizeof(again));
		FUZZ_ASSERT(m == n && memcmp(again, out, (size_t)n) == 0);
		check_plain(out, (size_t)n);
	}

	/* any bytes, encoded, decode back; and the raw bytes as a PLAIN
	 * message (decoded messages always have a NUL after them) */
	{
		size_t k = base64_encode(data, size, coded, sizeof(coded));
		long m;

		FUZZ_ASSERT(k == (size + 2) / 3 * 4);
		m = base64_decode(coded, again, sizeof(again));
		if (size < sizeof(again)) {
			FUZZ_ASSERT(m == (long)size && memcmp(again, data, size) == 0);
		} else {
			FUZZ_ASSERT(m == -1); /* no room for the NUL */
		}
		memcpy(raw, data, size);
		raw[size] = '\0';
		check_plain(raw, size);
	}
	free(line);
	return 0;
}
