/* Dovecot's dovecot-uidlist (uidlist_parse) and pop3_uidl_format
 * (uidl_format_parse, uidl_format_expand) on any bytes: a uidlist is a
 * file in the user's Maildir, and a format is an administrator's text.
 *
 * The input's first line is a format, the rest a uidlist. Checked:
 *   - each record's UID is above the one before and above 0, below
 *     2^32-1; its base name is not empty, inside the input, holds no ':'
 *     or '/' and is followed in the line by ':' or the line's end; its G
 *     and P fields lie inside its line;
 *   - the reader's byte count ends on a line end, and uidlist_next_uid
 *     is past every UID read (or 0);
 *   - a format the parser takes expands to a NUL-terminated string that
 *     fits the room given, or to -1, and the same values expand the same
 *     way twice. */
#include "fuzz.h"

#include "uidlist.h"

struct state {
	const char *buf;
	size_t len;
	uint32_t prev;
	size_t records;
	const struct uidl_format *fmt;
	const struct uidlist_reader *reader;
};

static int inside(const struct state *s, const char *p, size_t n)
{
	return p >= s->buf && p + n <= s->buf + s->len;
}

static void on_record(void *ctx, const struct uidlist_record *r)
{
	struct state *s = ctx;
	const char *after;

	FUZZ_ASSERT(r->uid > s->prev && r->uid != 0 && r->uid != UINT32_MAX);
	s->prev = r->uid;
	s->records++;
	FUZZ_ASSERT(r->name_len > 0 && inside(s, r->name, r->name_len));
	FUZZ_ASSERT(!memchr(r->name, ':', r->name_len) && !memchr(r->name, '/', r->name_len));
	FUZZ_ASSERT(!memchr(r->name, '\n', r->name_len));
	after = r->name + r->name_len;
	FUZZ_ASSERT(after == s->buf + s->len || *after == ':' || *after == '\n');
	if (r->guid)
		FUZZ_ASSERT(inside(s, r->guid, r->guid_len) && !memchr(r->guid, ' ', r->guid_len));
	if (r->pop3_uidl)
		FUZZ_ASSERT(inside(s, r->pop3_uidl, r->pop3_uidl_len) &&
			    !memchr(r->pop3_uidl, ' ', r->pop3_uidl_len));
	if (s->fmt) {
		char name[UIDLIST_LINE_MAX + 1], a[POP3_UIDL_DOVECOT_MAX + 1], b[POP3_UIDL_DOVECOT_MAX + 1];
		struct uidl_values v = { r->uid, s->reader->header.uidvalidity, name, NULL };
		long n1, n2;

		FUZZ_ASSERT(r->name_len < sizeof(name));
		memcpy(name, r->name, r->name_len);
		name[r->name_len] = '\0';
		n1 = uidl_format_expand(s->fmt, &v, a, sizeof(a));
		n2 = uidl_format_expand(s->fmt, &v, b, sizeof(b));
		FUZZ_ASSERT(n1 == n2);
		if (n1 >= 0) {
			FUZZ_ASSERT((size_t)n1 < sizeof(a) && strlen(a) == (size_t)n1);
			FUZZ_ASSERT(strcmp(a, b) == 0);
		}
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	const char *lf = memchr(buf, '\n', size);
	size_t flen = lf ? (size_t)(lf - buf) : size;
	char *format = fuzz_cstring(data, flen);
	struct uidl_format fmt;
	struct state s = { 0 };
	struct uidlist_reader r = { .record = on_record, .ctx = &s };
	const char *why = NULL;
	enum uidlist_result res;

	s.reader = &r;

	if (uidl_format_parse(format, &fmt, &why) == 0) {
		struct uidl_values v = { 42, 1700000000, format, NULL };
		char small[12];
		long n = uidl_format_expand(&fmt, &v, small, sizeof(small));

		FUZZ_ASSERT(fmt.keys != 0);
		FUZZ_ASSERT(n == -1 || ((size_t)n < sizeof(small) && strlen(small) == (size_t)n));
		s.fmt = &fmt;
	} else {
		FUZZ_ASSERT(why && *why);
	}
	s.buf = lf ? lf + 1 : buf + size;
	s.len = lf ? size - flen - 1 : 0;
	res = uidlist_parse(&r, s.buf, s.len);
	FUZZ_ASSERT(r.bytes <= s.len && (r.bytes == 0 || s.buf[r.bytes - 1] == '\n'));
	if (res == UIDLIST_OK) {
		uint32_t next = uidlist_next_uid(&r);

		FUZZ_ASSERT(r.header.version == 1 || r.header.version == 3);
		FUZZ_ASSERT(r.header.uidvalidity != 0 && r.header.next_uid != 0);
		FUZZ_ASSERT(next == 0 || (next > r.last_uid && next >= r.header.next_uid));
		FUZZ_ASSERT(r.lines == s.records + 1);
	} else {
		FUZZ_ASSERT(res == UIDLIST_BROKEN && r.why && *r.why);
	}
	free(format);
	return 0;
}
