/* rspamd's reply as it comes off the socket (shared/rspamd.c): any bytes
 * through the HTTP response parser (complete or not, at EOF or not) and
 * any body through the JSON reader, whose strings then make a Subject
 * field and a reply text. Checked: no crash, no read past the input
 * (ASan), a body inside the input, NUL-terminated fields within their
 * bounds, an action we know, a Subject field of printable ASCII whose
 * every line after the first is a fold and ends in LF, at most 998
 * octets long, and a reply text of printable ASCII. */
#include "fuzz.h"

#include "rspamd.h"

static void check_subject(const char *text, size_t len)
{
	static char out[8192];
	long n = rspamd_subject_field(text, len, out, sizeof(out));
	size_t col = 0;

	if (n < 0)
		return;
	FUZZ_ASSERT((size_t)n < sizeof(out) && out[n] == '\0');
	FUZZ_ASSERT(n >= 9 && memcmp(out, "Subject:", 8) == 0 && out[n - 1] == '\n');
	for (long i = 0; i < n; i++) {
		unsigned char c = (unsigned char)out[i];

		if (c == '\n') {
			if (i + 1 < n && out[i + 1] != ' ')
				fuzz_broken("fuzz-rspamd", "a line of the Subject field is not a fold", out,
					    (size_t)n);
			col = 0;
			continue;
		}
		if (c < 0x20 || c >= 0x7f)
			fuzz_broken("fuzz-rspamd", "Subject field not printable ASCII", out, (size_t)n);
		if (++col > 998)
			fuzz_broken("fuzz-rspamd", "Subject line over 998 octets", out, (size_t)n);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct rspamd_verdict v;
	const char *p = (const char *)data;
	char shown[RSPAMD_MESSAGE_SHOWN + 1];
	size_t off = 0, len = 0;
	int status = 0;

	if (size > RSPAMD_REPLY_MAX + 64)
		return 0;
	for (int eof = 0; eof < 2; eof++) {
		int r = rspamd_http_parse(p, size, eof, &status, &off, &len);

		FUZZ_ASSERT(r >= -1 && r <= 1);
		if (r == 1) {
			FUZZ_ASSERT(off <= size && len <= size - off);
			FUZZ_ASSERT(status >= 100 && status <= 599);
			(void)rspamd_json_parse(p + off, len, &v);
		}
	}
	/* the input itself as a body */
	if (rspamd_json_parse(p, size, &v) == 0) {
		FUZZ_ASSERT(v.action >= RSPAMD_NO_ACTION && v.action <= RSPAMD_REJECT);
		FUZZ_ASSERT(strlen(v.action_name) < sizeof(v.action_name));
		FUZZ_ASSERT(strlen(v.subject) <= RSPAMD_SUBJECT_MAX);
		FUZZ_ASSERT(strlen(v.smtp_message) <= RSPAMD_MESSAGE_MAX);
		FUZZ_ASSERT(!v.has_score || (v.score > -1e9 && v.score < 1e9));
		check_subject(v.subject, strlen(v.subject));
		rspamd_reply_text(v.smtp_message, shown, sizeof(shown));
		for (const char *s = shown; *s; s++)
			FUZZ_ASSERT(*s >= 0x20 && *s < 0x7f);
		FUZZ_ASSERT(strlen(shown) <= RSPAMD_MESSAGE_SHOWN);
	}
	/* and as a subject, raw bytes and all */
	check_subject(p, size > RSPAMD_SUBJECT_MAX * 2 ? RSPAMD_SUBJECT_MAX * 2 : size);
	return 0;
}
