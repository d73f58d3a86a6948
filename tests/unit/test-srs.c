/* mailauth/srs.c, through compose/signing.c (our secret): the SRS0
 * form, computed here independently (HMAC-SHA256 of
 * lower("TT=domain=local") with the secret, its first 40 bits in
 * base32), the round trip, case folding, forged and expired addresses,
 * who is not rewritten, the secret made on first use, and the longer
 * local parts srs_parse_path accepts. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "db.h"
#include "signing.h"
#include "testdir.h"
#include "tls-crypto.h"

#define SECRET "unit-test-secret-0123456789"
static const char b32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

static void expected(const char *local, const char *domain, const char *srs_domain, long day,
		     char *out, size_t cap)
{
	char tt[3], data[600], h[9];
	unsigned char mac[32];
	unsigned long long bits = 0;

	day %= 1024;
	tt[0] = b32[day >> 5];
	tt[1] = b32[day & 31];
	tt[2] = '\0';
	snprintf(data, sizeof(data), "%s=%s=%s", tt, domain, local);
	for (char *c = data; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	REQUIRE(dl_gnutls_hmac_fast(GNUTLS_MAC_SHA256, SECRET, strlen(SECRET), data, strlen(data), mac) == 0);
	for (int i = 0; i < 5; i++)
		bits = bits << 8 | mac[i];
	for (int i = 0; i < 8; i++)
		h[i] = b32[(bits >> (35 - 5 * i)) & 31];
	h[8] = '\0';
	snprintf(out, cap, "SRS0=%s=%s=%s=%s@%s", h, tt, domain, local, srs_domain);
}

static void parse(const char *plain, struct address *a)
{
	char path[600];
	const char *rest;

	snprintf(path, sizeof(path), "<%s>", plain);
	if (address_parse_path(path, 1, 0, a, &rest) == ADDRESS_TOOLONG)
		REQUIRE(srs_parse_path(path, a, &rest) == ADDRESS_OK);
}

static enum srs_result reverse(const char *addr, char *out, size_t cap)
{
	struct address a;

	parse(addr, &a);
	return signing_srs_reverse(&a, out, cap);
}

/* A fresh process (no secret cached, none stored): the first forward
 * makes one and stores it. */
static void first_use(void)
{
	char out[600], orig[600], want[600];
	struct address a;
	long today = (long)(time(NULL) / 86400);

	REQUIRE(db_open() == DB_OK);
	REQUIRE(tls_library_load() == 0);
	/* no secret yet: nothing verifies, and a reverse makes none */
	expected("someone", "strict.example", "example.test", today, want, sizeof(want));
	CHECK_INT(want, SRS_FORGED, reverse(want, orig, sizeof(orig)));
	parse("someone@strict.example", &a);
	CHECK_INT("first forward", 1, signing_srs_forward(&a, "example.test", 1, out, sizeof(out)));
	CHECK_INT(out, SRS_OK, reverse(out, orig, sizeof(orig)));
	CHECK_STR(out, "someone@strict.example", orig);
	{
		sqlite3_stmt *st;
		REQUIRE(sqlite3_prepare_v2(db_handle(),
					   "SELECT length(value) FROM settings WHERE key = 'srs_secret'", -1,
					   &st, NULL) == SQLITE_OK);
		CHECK_INT("stored secret", SQLITE_ROW, sqlite3_step(st));
		CHECK_TRUE("stored secret length", sqlite3_column_int(st, 0) >= 40);
		sqlite3_finalize(st);
	}
	/* _exit: the parent's atexit cleanup must not run here */
	fflush(stderr);
	_exit(check_failed ? 1 : 0);
}

int main(void)
{
	const char *d = testdir_make("srs");
	const char *db = testdb_make(d);
	long today = (long)(time(NULL) / 86400);
	char out[600], want[600], orig[600], sql[200];
	struct address a;
	int status = 0;
	pid_t pid;

	testdb_exec(db, "INSERT INTO domains VALUES ('example.test');");
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		first_use();
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK_INT("first use (child process)", 0, WIFEXITED(status) ? WEXITSTATUS(status) : -1);

	snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO settings VALUES ('srs_secret', '%s');", SECRET);
	testdb_exec(db, sql);
	REQUIRE(db_open() == DB_OK);
	REQUIRE(tls_library_load() == 0);

	/* the form, and the round trip */
	parse("Someone@Strict.Example", &a);
	CHECK_INT("forward", 1, signing_srs_forward(&a, "example.test", 1, out, sizeof(out)));
	expected("Someone", "strict.example", "example.test", today, want, sizeof(want));
	CHECK_STR("forward", want, out);
	CHECK_INT(out, SRS_OK, reverse(out, orig, sizeof(orig)));
	CHECK_STR(out, "Someone@strict.example", orig);
	/* an MTA that lower-cases the whole address */
	for (char *c = out; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	CHECK_INT(out, SRS_OK, reverse(out, orig, sizeof(orig)));
	/* ages: 21 days is still good, 22 and a future stamp are not */
	expected("x", "strict.example", "example.test", today - 21, want, sizeof(want));
	CHECK_INT(want, SRS_OK, reverse(want, orig, sizeof(orig)));
	expected("x", "strict.example", "example.test", today - 22, want, sizeof(want));
	CHECK_INT(want, SRS_EXPIRED, reverse(want, orig, sizeof(orig)));
	expected("x", "strict.example", "example.test", today + 3, want, sizeof(want));
	CHECK_INT(want, SRS_EXPIRED, reverse(want, orig, sizeof(orig)));
	/* forged: a changed part, a hash of another secret, malformed */
	expected("x", "strict.example", "example.test", today, want, sizeof(want));
	{
		char changed[600];
		snprintf(changed, sizeof(changed), "%s", want);
		memcpy(strstr(changed, "=x@"), "=y@", 3);
		CHECK_INT(changed, SRS_FORGED, reverse(changed, orig, sizeof(orig)));
		snprintf(changed, sizeof(changed), "%s", want);
		changed[5] = changed[5] == 'A' ? 'B' : 'A';
		CHECK_INT(changed, SRS_FORGED, reverse(changed, orig, sizeof(orig)));
	}
	static const char *const malformed[] = {
		"SRS0=@example.test", "SRS0=ABCDEFGH@example.test", "SRS0=ABCDEFGH=AA@example.test",
		"SRS0=ABCDEFGH=AA=strict.example@example.test", "SRS0=ABC=AA=strict.example=x@example.test",
		"SRS0=ABCDEFGH=A1=strict.example=x@example.test", "SRS0=ABCDEFGH=AA=bad..example=x@example.test",
	};
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
		CHECK_INT(malformed[i], SRS_FORGED, reverse(malformed[i], orig, sizeof(orig)));
	/* not ours to reverse */
	CHECK_INT("other domain", SRS_NOT_SRS, reverse("SRS0=ABCDEFGH=AA=s.example=x@remote.example", orig, sizeof(orig)));
	CHECK_INT("plain", SRS_NOT_SRS, reverse("alice@example.test", orig, sizeof(orig)));

	/* who is not rewritten */
	parse("alice@example.test", &a);
	CHECK_INT("our own domain", 0, signing_srs_forward(&a, "example.test", 1, out, sizeof(out)));
	/* ... but from a client without the right to send it is forged */
	CHECK_INT("our own domain, untrusted", 1, signing_srs_forward(&a, "example.test", 0, out, sizeof(out)));
	CHECK_INT(out, SRS_OK, reverse(out, orig, sizeof(orig)));
	CHECK_STR(out, "alice@example.test", orig);
	parse("", &a);
	CHECK_INT("null sender", 0, signing_srs_forward(&a, "example.test", 1, out, sizeof(out)));
	REQUIRE(address_parse_path("<\"john smith\"@strict.example>", 0, 0, &a, NULL) == ADDRESS_OK);
	CHECK_INT("quoted local part", 0, signing_srs_forward(&a, "example.test", 1, out, sizeof(out)));

	/* long: past 64 octets of local part, back through srs_parse_path */
	parse("a-rather-long-local-part.for-newsletters@bounces.mail.strict.example", &a);
	CHECK_INT("long", 1, signing_srs_forward(&a, "example.test", 1, out, sizeof(out)));
	CHECK_TRUE(out, strchr(out, '@') - out > 64);
	CHECK_INT(out, SRS_OK, reverse(out, orig, sizeof(orig)));
	CHECK_STR(out, "a-rather-long-local-part.for-newsletters@bounces.mail.strict.example", orig);
	{
		const char *rest;
		char path[400];
		memset(path, 'x', 80);
		memcpy(path, "<", 1);
		memcpy(path + 80, "@example.test>", 15);
		CHECK_INT(path, ADDRESS_TOOLONG, srs_parse_path(path, &a, &rest));
		memcpy(path + 1, "SRS0=", 5);
		CHECK_INT(path, ADDRESS_OK, srs_parse_path(path, &a, &rest));
		CHECK_STR(path, "example.test", a.domain);
		CHECK_INT(path, 0, (long long)strlen(rest));
		CHECK_INT("two @", ADDRESS_SYNTAX, srs_parse_path("<SRS0=a@b@example.test>", &a, &rest));
		CHECK_INT("dots", ADDRESS_TOOLONG, srs_parse_path("<SRS0=a..b@example.test>", &a, &rest));
		CHECK_INT("no >", ADDRESS_SYNTAX, srs_parse_path("<SRS0=ab@example.test", &a, &rest));
		CHECK_INT("bad domain", ADDRESS_SYNTAX, srs_parse_path("<SRS0=ab@-x.example>", &a, &rest));
	}
	return check_finish("srs");
}
