/* command_split and esmtp_params on any command line, as the SMTP session
 * uses them for MAIL FROM:<path> PARAMS, plus log_printable, which every
 * logged client string goes through. Checked: the verb is upper-case and
 * bounded, the argument lies inside the line, every parameter the callback
 * sees is a well-formed esmtp-keyword with a well-formed value (RFC 5321
 * 4.1.2), and the printable copy is printable and bounded. */
#include "fuzz.h"

#include <ctype.h>
#include <strings.h>

#include "address.h"
#include "log.h"
#include "message.h"

struct seen {
	int calls;
	int stop_at;
};

static int each_param(void *ctx, const char *key, const char *value)
{
	struct seen *s = ctx;
	size_t klen = strlen(key);

	FUZZ_ASSERT(klen > 0 && klen < 64);
	FUZZ_ASSERT(isalnum((unsigned char)key[0]));
	for (const char *c = key; *c; c++)
		FUZZ_ASSERT((isalnum((unsigned char)*c) && !islower((unsigned char)*c)) || *c == '-');
	if (value) {
		size_t vlen = strlen(value);

		FUZZ_ASSERT(vlen > 0 && vlen < 512);
		for (const char *c = value; *c; c++)
			FUZZ_ASSERT(*c != ' ' && *c != '=' && (unsigned char)*c > 32 &&
				    (unsigned char)*c != 127);
	}
	return ++s->calls == s->stop_at ? 42 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char verb[16], printable[300];
	const char *arg;
	char *line;
	int r;

	if (size > 4096)
		return 0;
	line = fuzz_cstring(data, size);

	r = command_split(line, verb, sizeof(verb), &arg);
	if (r == 0) {
		size_t vlen = strlen(verb);
		struct seen seen = { 0, (int)(size % 7) };

		FUZZ_ASSERT(vlen > 0 && vlen < sizeof(verb));
		FUZZ_ASSERT(strncasecmp(verb, line, vlen) == 0);
		for (const char *c = verb; *c; c++)
			FUZZ_ASSERT(!islower((unsigned char)*c) && *c != ' ');
		FUZZ_ASSERT(arg >= line + vlen && arg <= line + strlen(line));

		/* MAIL FROM:<path> params, as cmd_mail reads them */
		if (strncasecmp(arg, "FROM:", 5) == 0) {
			struct address a;
			const char *rest = NULL;

			if (address_parse_path(arg + 5, 1, 1, &a, &rest) == ADDRESS_OK) {
				int e = esmtp_params(rest, each_param, &seen);
				FUZZ_ASSERT(e == 0 || e == -1 || e == 42);
			}
		}
		seen.calls = 0;
		r = esmtp_params(arg, each_param, &seen);
		FUZZ_ASSERT(r == 0 || r == -1 || r == 42);
		if (r == 42)
			FUZZ_ASSERT(seen.calls == seen.stop_at);
	} else {
		FUZZ_ASSERT(r == -1);
	}

	/* the size of the copy: 300, or a small one that truncates */
	{
		size_t cap = size % 2 ? sizeof(printable) : 1 + size % 13;
		size_t len = strlen(line);

		log_printable(printable, cap, line, len);
		FUZZ_ASSERT(strlen(printable) < cap);
		for (const char *c = printable; *c; c++)
			FUZZ_ASSERT((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f);
	}
	free(line);
	return 0;
}
