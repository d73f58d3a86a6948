/* shared/auth.c: base64 (RFC 4648), the SASL PLAIN message (RFC 4616),
 * auth_equal, and auth_check / the failed-login throttle against a
 * database made from schema/schema.sql. */
#include <crypt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "auth.h"
#include "base64.h"
#include "check.h"
#include "db.h"
#include "limits.h"
#include "testdir.h"

#define S(lit) lit, sizeof(lit) - 1

static void test_base64(void)
{
	/* RFC 4648 10 test vectors, both ways */
	static const struct {
		const char *plain, *coded;
	} vectors[] = {
		{ "", "" },         { "f", "Zg==" },         { "fo", "Zm8=" },
		{ "foo", "Zm9v" },  { "foob", "Zm9vYg==" },  { "fooba", "Zm9vYmE=" },
		{ "foobar", "Zm9vYmFy" },
	};
	static const char *const malformed[] = {
		"Zg=",      /* not a multiple of 4 */
		"Zg",       "Z",         "Zm9vY",
		"Z===",     /* three pad characters */
		"====",     "=Zg=",      "Z=g=",     "Zg=a",
		"Zm9v=",    "Zg==Zg==",  /* padding in the middle */
		"Zm9vYmFy====",
		"Zm 9v",    "Zm9v\r\n",  " Zm9v",
		"Zm9-",     "Zm9_",      /* base64url is another alphabet */
		"Zm9\x80",  "Zm9.",      "Zm9:",
	};
	char out[64], enc[64];

	for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		size_t plen = strlen(vectors[i].plain);
		long n = base64_decode(vectors[i].coded, out, sizeof(out));

		if (CHECK_INT(vectors[i].coded, plen, n))
			CHECK_MEM_N(vectors[i].coded, strlen(vectors[i].coded), vectors[i].plain, plen, out, (size_t)n);
		CHECK_INT(vectors[i].coded, 0, out[plen]); /* NUL appended */
		CHECK_INT(vectors[i].plain, strlen(vectors[i].coded),
			  base64_encode(vectors[i].plain, plen, enc, sizeof(enc)));
		CHECK_STR(vectors[i].plain, vectors[i].coded, enc);
	}
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
		CHECK_INT(malformed[i], -1, base64_decode(malformed[i], out, sizeof(out)));

	/* every byte value survives a round trip, NUL included */
	{
		unsigned char all[256];
		char coded[400], back[300];
		long n;

		for (int i = 0; i < 256; i++)
			all[i] = (unsigned char)i;
		for (size_t len = 0; len <= 256; len += 37) {
			char given[40];
			size_t k = base64_encode(all + (256 - len), len, coded, sizeof(coded));

			snprintf(given, sizeof(given), "the last %zu byte values", len);
			CHECK_INT(given, (len + 2) / 3 * 4, k);
			n = base64_decode(coded, back, sizeof(back));
			CHECK_INT(given, len, n);
			if (n == (long)len)
				CHECK_MEM_N(given, strlen(given), (const char *)all + (256 - len), len, back, len);
		}
		n = base64_decode("AA==", back, sizeof(back));
		CHECK_INT("AA==", 1, n);
		CHECK_INT("AA==", 0, back[0]);
	}

	/* the cap counts the NUL: 3 octets need 4 */
	CHECK_INT("Zm9v into 4 octets", 3, base64_decode("Zm9v", out, 4));
	CHECK_INT("Zm9v into 3 octets", -1, base64_decode("Zm9v", out, 3));
	CHECK_INT("\"\" into 1 octet", 0, base64_decode("", out, 1));
	/* an encoder with too little room stops at a whole group, terminated */
	memset(enc, 'X', sizeof(enc));
	CHECK_INT("foobar into 8 octets", 4, base64_encode("foobar", 6, enc, 8));
	CHECK_STR("foobar into 8 octets", "Zm9v", enc);
	CHECK_INT("foobar into 9 octets", 8, base64_encode("foobar", 6, enc, 9));
	CHECK_STR("foobar into 9 octets", "Zm9vYmFy", enc);
}

static void test_sasl_plain(void)
{
	static const struct {
		const char *msg;
		size_t len;
		int want;
		const char *authcid, *passwd;
	} cases[] = {
		{ S("\0alice\0secret"), 0, "alice", "secret" },
		{ S("alice\0alice\0secret"), 0, "alice", "secret" },
		{ S("\0alice\0"), 0, "alice", "" },
		{ S("\0alice\0pass word \x01\xc3\xa9"), 0, "alice", "pass word \x01\xc3\xa9" },
		{ S("bob\0alice\0secret"), -1, NULL, NULL },   /* acting for someone else */
		{ S("Alice\0alice\0secret"), -1, NULL, NULL }, /* logins are exact */
		{ S("\0\0secret"), -1, NULL, NULL },
		{ S("\0alice"), -1, NULL, NULL },
		{ S("alice"), -1, NULL, NULL },
		{ S(""), -1, NULL, NULL },
		{ S("\0"), -1, NULL, NULL },
		{ S("\0\0"), -1, NULL, NULL },
		{ S("\0alice\0sec\0ret"), -1, NULL, NULL },
		{ S("\0alice\0secret\0"), -1, NULL, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* as base64_decode leaves it: a NUL after len */
		char msg[64];
		const char *authcid = NULL, *passwd = NULL;
		int r;

		memcpy(msg, cases[i].msg, cases[i].len);
		msg[cases[i].len] = '\0';
		r = sasl_plain_split(msg, cases[i].len, &authcid, &passwd);
		if (!CHECK_INT_N(cases[i].msg, cases[i].len, cases[i].want, r) || r != 0)
			continue;
		CHECK_STR(cases[i].authcid, cases[i].authcid, authcid);
		CHECK_STR(cases[i].authcid, cases[i].passwd, passwd);
	}

	/* the whole AUTH PLAIN initial response of RFC 4616 section 4 */
	{
		char msg[128];
		const char *authcid, *passwd;
		long n = base64_decode("AHRpbQB0YW5zdGFhZnRhbnN0YWFm", msg, sizeof(msg));

		CHECK_INT("AHRpbQB0YW5zdGFhZnRhbnN0YWFm", 0,
			  n < 0 ? -2 : sasl_plain_split(msg, (size_t)n, &authcid, &passwd));
		if (n >= 0) {
			CHECK_STR("AHRpbQB0YW5zdGFhZnRhbnN0YWFm", "tim", authcid);
			CHECK_STR("AHRpbQB0YW5zdGFhZnRhbnN0YWFm", "tanstaaftanstaaf", passwd);
		}
	}
}

static void test_equal(void)
{
	static const struct {
		const char *a, *b;
		int want;
	} cases[] = {
		{ "a", "a", 1 },       { "a", "b", 0 },      { "", "", 1 },
		{ "abc", "abcd", 0 },  { "abcd", "abc", 0 }, { "", "a", 0 },
		{ "$6$x$abc", "$6$x$abd", 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char given[64];

		snprintf(given, sizeof(given), "\"%s\" vs \"%s\"", cases[i].a, cases[i].b);
		CHECK_INT(given, cases[i].want, auth_equal(cases[i].a, cases[i].b));
	}
}

static int failures_of(const char *key)
{
	sqlite3_stmt *st;
	int n = 0;

	REQUIRE(sqlite3_prepare_v2(db_handle(), "SELECT failures FROM auth_failures WHERE ip_key = ?1",
				   -1, &st, NULL) == SQLITE_OK);
	sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW)
		n = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	return n;
}

/* Passwords in the three schemes of DESIGN.md, the disabled flag, and the
 * throttle (rows written directly, so no test waits for a delay). */
static void test_check(const char *dir)
{
	const char *db = testdb_make(dir);
	static const char *const prefixes[] = { "$6$", "$y$", "$2b$" };
	static const unsigned long costs[] = { 1000, 0, 4 };
	char sql[1024];
	long long now = (long long)time(NULL);

	for (size_t i = 0; i < 3; i++) {
		char salt[CRYPT_GENSALT_OUTPUT_SIZE];
		struct crypt_data data;
		const char *hash;

		REQUIRE(crypt_gensalt_rn(prefixes[i], costs[i], NULL, 0, salt, sizeof(salt)) != NULL);
		memset(&data, 0, sizeof(data));
		hash = crypt_r("right horse", salt, &data);
		REQUIRE(hash && hash[0] == '$');
		snprintf(sql, sizeof(sql),
			 "INSERT INTO mailboxes (login, password) VALUES ('user%zu', '%s');", i, hash);
		testdb_exec(db, sql);
	}
	testdb_exec(db, "INSERT INTO mailboxes (login, password, enabled) "
			"SELECT 'off', password, 0 FROM mailboxes WHERE login = 'user0';");
	snprintf(sql, sizeof(sql),
		 "INSERT INTO auth_failures VALUES ('198.51.100.5', 5, %lld, %lld),"
		 " ('198.51.100.10', 10, %lld, %lld), ('198.51.100.15', 15, %lld, %lld),"
		 " ('198.51.100.20', 20, %lld, %lld), ('198.51.100.99', 99, %lld, %lld),"
		 " ('2001:db8:1:2::/64', 20, %lld, %lld);",
		 now, now, now, now, now, now, now, now, now - THROTTLE_WINDOW_SECONDS - 60,
		 now - THROTTLE_WINDOW_SECONDS - 60, now, now);
	testdb_exec(db, sql);
	REQUIRE(db_open() == DB_OK);

	for (size_t i = 0; i < 3; i++) {
		char login[16], ip[32];

		snprintf(login, sizeof(login), "user%zu", i);
		snprintf(ip, sizeof(ip), "192.0.2.%zu", i + 1);
		CHECK_INT(prefixes[i], AUTH_FAIL, auth_check(ip, login, "wrong horse"));
		CHECK_INT(prefixes[i], 1, failures_of(ip));
		CHECK_INT(prefixes[i], AUTH_FAIL, auth_check(ip, login, "right horse "));
		CHECK_INT(prefixes[i], AUTH_FAIL, auth_check(ip, login, ""));
		CHECK_INT(prefixes[i], 3, failures_of(ip));
		CHECK_INT(prefixes[i], AUTH_OK, auth_check(ip, login, "right horse"));
		/* only time clears failures: the success gave back its own slot */
		CHECK_INT(prefixes[i], 3, failures_of(ip));
	}
	CHECK_INT("unknown login", AUTH_FAIL, auth_check("192.0.2.50", "nobody", "right horse"));
	CHECK_INT("unknown login", 1, failures_of("192.0.2.50"));
	CHECK_INT("login with a quote", AUTH_FAIL, auth_check("192.0.2.51", "x' OR '1'='1", "x"));
	CHECK_INT("disabled, right password", AUTH_DISABLED, auth_check("192.0.2.60", "off", "right horse"));
	CHECK_INT("disabled, wrong password", AUTH_DISABLED, auth_check("192.0.2.60", "off", "wrong"));
	CHECK_INT("disabled", 2, failures_of("192.0.2.60"));

	/* the throttle: a delay after 5 failures, doubling every 5, refusal
	 * at 20; rows older than the window do not count */
	CHECK_INT("198.51.100.1 (no failures)", 0, auth_throttle_delay("198.51.100.1"));
	CHECK_INT("198.51.100.5 (5 failures)", 1, auth_throttle_delay("198.51.100.5"));
	CHECK_INT("198.51.100.10 (10 failures)", 2, auth_throttle_delay("198.51.100.10"));
	CHECK_INT("198.51.100.15 (15 failures)", 4, auth_throttle_delay("198.51.100.15"));
	CHECK_INT("198.51.100.20 (20 failures)", -1, auth_throttle_delay("198.51.100.20"));
	CHECK_INT("198.51.100.99 (99 old failures)", 0, auth_throttle_delay("198.51.100.99"));
	/* refused unchecked, even with the right password */
	CHECK_INT("198.51.100.20, right password", AUTH_THROTTLED,
		  auth_check("198.51.100.20", "user0", "right horse"));
	CHECK_INT("198.51.100.20", 20, failures_of("198.51.100.20"));
	/* IPv6 counts per /64 */
	CHECK_INT("2001:db8:1:2::99", -1, auth_throttle_delay("2001:db8:1:2::99"));
	CHECK_INT("2001:db8:1:2:ffff::1", AUTH_THROTTLED, auth_check("2001:db8:1:2:ffff::1", "user0", "x"));
	CHECK_INT("2001:db8:1:3::1", 0, auth_throttle_delay("2001:db8:1:3::1"));
	/* a new failure prunes the rows older than the window */
	CHECK_INT("192.0.2.70", AUTH_FAIL, auth_check("192.0.2.70", "user0", "wrong"));
	CHECK_INT("198.51.100.99 pruned", 0, failures_of("198.51.100.99"));
}

int main(void)
{
	const char *dir = testdir_make("auth");

	test_base64();
	test_sasl_plain();
	test_equal();
	test_check(dir);
	return check_finish("auth");
}
