/* mailauth/headers.c: the header section reader (fields, folds, where the
 * body begins, bounds), the domains of an address-list field (RFC 5322
 * 3.4) and the edited copy of a staged message. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "db.h"
#include "edit.h"
#include "headers.h"
#include "limits.h"
#include "testdir.h"

static const char *dir;

/* Reads msg from start; checks the field names (joined by ',') and the
 * text where the body begins. */
static void check_block(const char *msg, off_t start, const char *names, const char *body)
{
	struct header_block hb;
	char got[512] = "";
	int fd = testdir_file(msg, strlen(msg));

	if (!CHECK_INT(msg, 0, header_block_read(fd, start, (off_t)strlen(msg), &hb))) {
		close(fd);
		return;
	}
	for (size_t i = 0; i < hb.n; i++) {
		size_t l = strlen(got);
		snprintf(got + l, sizeof(got) - l, "%s%.*s", i ? "," : "", (int)hb.fields[i].name_len,
			 hb.fields[i].name);
		/* each field's raw text lies at its offset in the file */
		CHECK_TRUE(msg, memcmp(msg + hb.fields[i].offset, hb.fields[i].raw, hb.fields[i].raw_len) == 0);
	}
	CHECK_STR(msg, names, got);
	CHECK_STR(msg, body, msg + hb.body);
	header_block_free(&hb);
	close(fd);
}

/* The domains read from a From field holding value, at most max, joined
 * by ','; with "+N" when N mailboxes were left unchecked. */
static void check_domains_max(const char *value, size_t max, const char *want)
{
	char field[4200], got[1024] = "", domains[4][ADDRESS_DOMAIN_MAX + 1];
	struct header_block hb;
	size_t n, unchecked = 99;
	int fd;

	REQUIRE(max <= 4);
	snprintf(field, sizeof(field), "From:%s\n\n", value);
	fd = testdir_file(field, strlen(field));
	REQUIRE(header_block_read(fd, 0, (off_t)strlen(field), &hb) == 0);
	REQUIRE(hb.n == 1);
	n = header_address_domains(&hb.fields[0], domains, max, &unchecked);
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(got);
		snprintf(got + l, sizeof(got) - l, "%s%s", i ? "," : "", domains[i]);
	}
	if (unchecked) {
		size_t l = strlen(got);
		snprintf(got + l, sizeof(got) - l, "+%zu", unchecked);
	}
	CHECK_STR(value, want, got);
	header_block_free(&hb);
	close(fd);
}

static void check_domains(const char *value, const char *want)
{
	check_domains_max(value, 4, want);
}

int main(void)
{
	dir = testdir_make("headers");

	check_block("A: 1\nB: 2\n continued\n\nbody\n", 0, "A,B", "body\n");
	check_block("A: 1\nB: 2\n", 0, "A,B", "");
	check_block("A: 1", 0, "A", "");
	check_block("A: 1\nnot a field\nB: 2\n", 0, "A", "not a field\nB: 2\n");
	check_block("\nbody only\n", 0, "", "body only\n");
	check_block("Received: ours\nX-Y: 1\n\nb", 15, "X-Y", "b");
	check_block("Obs-Space : v\n\tfold\n\n", 0, "Obs-Space", "");
	check_block(" leading fold\nA: 1\n\n", 0, "", " leading fold\nA: 1\n\n");
	check_block(":no name\n\n", 0, "", ":no name\n\n");

	/* value and its flat form */
	{
		const char *m = "Subject:  one\n\t two  \n\n";
		struct header_block hb;
		char flat[64];
		int fd = testdir_file(m, strlen(m));

		REQUIRE(header_block_read(fd, 0, (off_t)strlen(m), &hb) == 0);
		CHECK_INT(m, 13, (long long)hb.fields[0].value_len);
		CHECK_INT(m, 7, header_value_flat(&hb.fields[0], flat, sizeof(flat)));
		CHECK_STR(m, "one two", flat);
		CHECK_INT(m, -1, header_value_flat(&hb.fields[0], flat, 4));
		CHECK_TRUE(m, header_is(&hb.fields[0], "SUBJECT"));
		{
			long pos = -1;
			CHECK_TRUE(m, header_next(&hb, "subject", &pos) == &hb.fields[0]);
			CHECK_TRUE(m, header_next(&hb, "subject", &pos) == NULL);
		}
		header_block_free(&hb);
		close(fd);
	}

	/* bounds: a header section over MESSAGE_HEADER_MAX, too many fields */
	{
		size_t len = MESSAGE_HEADER_MAX + 100;
		char *big = malloc(len + 1);
		struct header_block hb;
		int fd;

		REQUIRE(big != NULL);
		for (size_t i = 0; i < len; i += 10)
			memcpy(big + i, "X: 123456\n", len - i < 10 ? len - i : 10);
		big[len] = '\0';
		fd = testdir_file(big, len);
		errno = 0;
		CHECK_INT("too many fields", -1, header_block_read(fd, 0, (off_t)len, &hb));
		CHECK_INT("too many fields", EFBIG, errno);
		close(fd);
		memset(big, 'a', len);
		memcpy(big, "Long: ", 6);
		big[len - 1] = '\n';
		fd = testdir_file(big, len);
		errno = 0;
		CHECK_INT("one field too long", -1, header_block_read(fd, 0, (off_t)len, &hb));
		CHECK_INT("one field too long", EFBIG, errno);
		close(fd);
		free(big);
	}

	check_domains(" Alice <alice@Example.COM>", "example.com");
	check_domains(" alice@example.com", "example.com");
	check_domains(" \"Doe, John\" <j@a.example>, b@b.example", "a.example,b.example");
	check_domains(" (comment) a@x.example (another (nested) one)", "x.example");
	check_domains(" Group: a@g1.example, b@g2.example;", "g1.example,g2.example");
	check_domains(" \"quoted@display.example\" <real@real.example>", "real.example");
	check_domains(" <\"weird@local\"@q.example>", "q.example");
	check_domains(" undisclosed-recipients:;", "");
	check_domains(" no address at all", "");
	check_domains(" a@[192.0.2.1]", "");
	check_domains(" a@bad..example", "");
	check_domains(" Alice\n <alice@fold.example>", "fold.example");
	check_domains(" \"a\\\"b\" <x@esc.example>", "esc.example");
	check_domains(" trailing.dot@example.org.", "example.org");
	/* Each domain once; beyond max, counted as unchecked. */
	check_domains(" a@x.example, b@X.example, c@y.example, d@x.example", "x.example,y.example");
	check_domains_max(" a@1.example, b@2.example, c@3.example, d@1.example", 2, "1.example,2.example+1");
	check_domains_max(" a@1.example, b@2.example, c@3.example, d@4.example, e@5.example", 4,
			  "1.example,2.example,3.example,4.example+1");
	check_domains_max(" a@1.example, b@1.example", 1, "1.example");
	/* Obsolete spaces around dots and '@' (RFC 5322 4.4). */
	check_domains(" a@reject . example", "reject.example");
	check_domains(" John <a . b @ reject .\n\texample>", "reject.example");
	/* Malformed: every address it holds. */
	check_domains(" <a@reject.example> <b@harmless.example>", "reject.example,harmless.example");
	check_domains(" a@reject.example b@harmless.example", "reject.example,harmless.example");
	check_domains(" a@reject.example <b@harmless.example>", "harmless.example,reject.example");
	check_domains(" <a@reject.example b@harmless.example>", "reject.example,harmless.example");
	/* A quoted display name stays a name. */
	check_domains(" \"a@reject.example\" <b@harmless.example>", "harmless.example");
	check_domains(" \"john doe\"@q.example", "q.example");
	/* Internationalised domains as written (RFC 6532). */
	check_domains(" a@mail.shop.\xe5\x85\xac\xe5\x8f\xb8.cn", "mail.shop.\xe5\x85\xac\xe5\x8f\xb8.cn");
	/* Too long to read whole: unchecked, not silently cut. */
	{
		char v[3000];
		snprintf(v, sizeof(v), " a@ok.example, <%02000d@reject.example>", 0);
		check_domains(v, "ok.example+1");
		snprintf(v, sizeof(v), " \"%02000d\" <b@long.example>", 0);
		check_domains(v, "long.example");
	}

	/* the edited copy: prefix on top, dropped fields gone */
	{
		const char *m = "Received: x\nA-R: drop me\n fold\nKeep: 1\nA-R: me too\n\nbody\n";
		struct header_block hb;
		const struct header_field *drop[2];
		char path[4200], got[256];
		off_t size = 0;
		int fd = testdir_file(m, strlen(m)), out;
		ssize_t n;

		testdb_make(dir);
		{
			char sql[4300];
			snprintf(sql, sizeof(sql),
				 "INSERT INTO settings VALUES ('spool_dir', '%s/spool');", dir);
			testdb_exec(getenv("POSTAGE_DB"), sql);
		}
		REQUIRE(db_open() == DB_OK);
		REQUIRE(header_block_read(fd, 12, (off_t)strlen(m), &hb) == 0);
		REQUIRE(hb.n == 3);
		drop[0] = &hb.fields[0];
		drop[1] = &hb.fields[2];
		/* On disk, then in memory (no path): the same bytes. */
		for (int in_memory = 0; in_memory < 2; in_memory++) {
			out = header_copy_edited(fd, (off_t)strlen(m), "Top: 1\n", 7, drop, 2, "copy1",
						 in_memory, path, sizeof(path), &size);
			if (!CHECK_TRUE(m, out >= 0))
				continue;
			CHECK_TRUE(in_memory ? "in memory: no path" : "on disk: a path",
				   (path[0] == '\0') == in_memory);
			n = read(out, got, sizeof(got) - 1);
			REQUIRE(n >= 0);
			got[n] = '\0';
			CHECK_STR(m, "Top: 1\nReceived: x\nKeep: 1\n\nbody\n", got);
			CHECK_INT(m, n, size);
			close(out);
			if (path[0])
				unlink(path);
		}
		header_block_free(&hb);
		close(fd);
	}
	return check_finish("headers");
}
