/* pgwire.c, PostgreSQL's side of the conversation as db.c reads it: the
 * first byte picks what the rest is.
 * - 0: backend messages (type, 32-bit length, body), as a statement's
 *   reply, fed to pgwire_feed. Checked: every row has the row
 *   description's column count, every value lies inside the result's
 *   buffer, is NUL-terminated and as long as its cell says, a NULL reads
 *   as NULL, and the result never outgrows PGWIRE_RESULT_MAX.
 * - 1: a SCRAM server-first message. Checked: an accepted one extends
 *   our nonce with printable characters, its salt fits its buffer, its
 *   iterations are within PGWIRE_SCRAM_ITERATIONS_MAX.
 * - 2: a --db URI. Checked: what parses has a host, a numeric port, a
 *   user and a database name, each NUL-terminated in its field. */
#include "fuzz.h"

#include "limits.h"
#include "pgwire.h"

static void messages(const uint8_t *p, size_t n)
{
	static struct pgwire_result r;
	size_t at = 0;

	pgwire_result_clear(&r);
	while (n - at >= 5) {
		char type = (char)p[at];
		uint32_t len = (uint32_t)p[at + 1] << 24 | (uint32_t)p[at + 2] << 16 |
			       (uint32_t)p[at + 3] << 8 | p[at + 4];

		at += 5;
		if (len < 4 || len - 4 > n - at)
			break;
		len -= 4;
		if (pgwire_feed(&r, type, p + at, len) < 0)
			break;
		at += len;
	}
	FUZZ_ASSERT(r.used <= r.cap && r.cap <= PGWIRE_RESULT_MAX);
	FUZZ_ASSERT(r.ncells == (size_t)r.nrows * (size_t)r.ncols);
	for (int row = 0; row < r.nrows; row++)
		for (int col = 0; col < r.ncols; col++) {
			int len;
			const char *v = pgwire_value(&r, row, col, &len);
			const struct pgwire_cell *c = &r.cells[(size_t)row * (size_t)r.ncols + (size_t)col];

			if (c->len < 0) {
				FUZZ_ASSERT(v == NULL && len == 0);
				continue;
			}
			FUZZ_ASSERT(v >= r.buf && v + len < r.buf + r.used + 1);
			FUZZ_ASSERT(len == c->len && v[len] == '\0');
		}
	FUZZ_ASSERT(pgwire_value(&r, r.nrows, 0, &(int){ 0 }) == NULL);
	FUZZ_ASSERT(strlen(r.tag) < sizeof(r.tag) && strlen(r.error) < sizeof(r.error));
	if (r.failed)
		FUZZ_ASSERT(strlen(r.sqlstate) == 5);
}

static void scram(const char *m)
{
	char nonce[64];
	unsigned char salt[32];
	size_t saltlen = 0;
	unsigned it = 0;
	const char *cnonce = "fyko+d2lbbFgONRv9qkxdawL";

	if (pgwire_scram_parse_first(m, cnonce, nonce, sizeof(nonce), salt, sizeof(salt), &saltlen,
				     &it) < 0)
		return;
	FUZZ_ASSERT(strncmp(nonce, cnonce, strlen(cnonce)) == 0 && strlen(nonce) > strlen(cnonce));
	FUZZ_ASSERT(strlen(nonce) < sizeof(nonce) && !strchr(nonce, ','));
	FUZZ_ASSERT(saltlen > 0 && saltlen <= sizeof(salt));
	FUZZ_ASSERT(it >= 1 && it <= PGWIRE_SCRAM_ITERATIONS_MAX);
}

static void uri(const char *s)
{
	struct pgwire_target t;

	if (pgwire_parse_uri(s, &t) < 0)
		return;
	FUZZ_ASSERT(pgwire_is_uri(s));
	FUZZ_ASSERT(t.host[0] && t.port[0] && t.user[0] && t.dbname[0]);
	FUZZ_ASSERT(memchr(t.host, 0, sizeof(t.host)) && memchr(t.password, 0, sizeof(t.password)));
	FUZZ_ASSERT(strspn(t.port, "0123456789") == strlen(t.port));
	FUZZ_ASSERT(t.connect_timeout_ms > 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (size < 1 || size > 65536)
		return 0;
	switch (data[0] % 3) {
	case 0:
		messages(data + 1, size - 1);
		break;
	case 1:
		s = fuzz_cstring(data + 1, size - 1);
		scram(s);
		free(s);
		break;
	default:
		s = fuzz_cstring(data + 1, size - 1);
		uri(s);
		free(s);
		break;
	}
	return 0;
}
