/* pop3-handler/maildrop.c: UIDL derivation, message-number and line-count
 * parsing, the wire form of RETR and TOP (CRLF, dot-stuffing, the cut
 * after n body lines), and the Maildir scan: new/ into cur/, odd names,
 * order, sizes, the lock, renamed and deleted files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "maildrop.h"
#include "testdir.h"

static void test_uid(void)
{
	static const struct {
		const char *name;
		const char *uid; /* NULL: the hashed form "H" + 16 hex digits */
	} cases[] = {
		{ "1700000000.M1P2.host", "1700000000.M1P2.host" },
		{ "1700000000.M1P2.host:2,", "1700000000.M1P2.host" },
		{ "1700000000.M1P2.host:2,S", "1700000000.M1P2.host" },
		{ "1700000000.M1P2.host,S=10,W=12:2,RS", "1700000000.M1P2.host" },
		{ "1700000000.M1P2.host,S=10", "1700000000.M1P2.host" },
		{ "a", "a" },
		{ "courier.123.host:2,", "courier.123.host" },
		/* 70 characters: the RFC 1939 maximum */
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:2,",
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" },
		/* 71: hashed */
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", NULL },
		{ "with space:2,", NULL },
		{ "caf\xc3\xa9", NULL },
		{ "tab\there", NULL },
		{ ":2,S", NULL },   /* empty base */
		{ ",S=5", NULL },
		{ "", NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char uid[POP3_UID_MAX + 1];

		memset(uid, 'Z', sizeof(uid));
		pop3_uid_from_name(cases[i].name, uid, sizeof(uid));
		if (cases[i].uid) {
			CHECK_STR(cases[i].name, cases[i].uid, uid);
		} else {
			CHECK_INT(cases[i].name, 17, strlen(uid));
			CHECK_INT(cases[i].name, 'H', uid[0]);
			CHECK_INT(cases[i].name, 16, strspn(uid + 1, "0123456789abcdef"));
		}
	}

	/* Hashed UIDs stay the same when only the flags change, and differ
	 * between base names. */
	{
		char a[POP3_UID_MAX + 1], b[POP3_UID_MAX + 1], c[POP3_UID_MAX + 1];

		pop3_uid_from_name("with space", a, sizeof(a));
		pop3_uid_from_name("with space,S=4:2,ST", b, sizeof(b));
		pop3_uid_from_name("with spade", c, sizeof(c));
		CHECK_STR("with space / with space,S=4:2,ST", a, b);
		CHECK_TRUE("with space / with spade", strcmp(a, c) != 0);
	}
}

static void test_parse_count(void)
{
	static const struct {
		const char *in;
		int rc;
		unsigned long value;
	} cases[] = {
		{ "0", 0, 0 },
		{ "1", 0, 1 },
		{ "007", 0, 7 },
		{ "1000", 0, 1000 },
		{ "1001", 0, 1000 },                        /* clamped to max */
		{ "99999999999999999999999999999", 0, 1000 }, /* no overflow */
		{ "", -1, 0 },
		{ "-1", -1, 0 },
		{ "+1", -1, 0 },
		{ " 1", -1, 0 },
		{ "1 ", -1, 0 },
		{ "1a", -1, 0 },
		{ "0x10", -1, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned long v = 4242;
		int rc = pop3_parse_count(cases[i].in, strlen(cases[i].in), 1000, &v);

		CHECK_INT(cases[i].in, cases[i].rc, rc);
		if (rc == 0)
			CHECK_INT(cases[i].in, cases[i].value, v);
	}
}

static void test_find(void)
{
	struct pop3_message msgs[3];
	struct maildrop d;
	static const struct {
		const char *arg;
		enum maildrop_lookup r;
		size_t index;
	} cases[] = {
		{ "1", LOOKUP_OK, 0 },
		{ "3", LOOKUP_OK, 2 },
		{ "03", LOOKUP_OK, 2 },
		{ "2", LOOKUP_DELETED, 0 },
		{ "0", LOOKUP_NO_SUCH, 0 },
		{ "4", LOOKUP_NO_SUCH, 0 },
		{ "100001", LOOKUP_NO_SUCH, 0 },
		{ "18446744073709551617", LOOKUP_NO_SUCH, 0 },
		{ "", LOOKUP_SYNTAX, 0 },
		{ "x", LOOKUP_SYNTAX, 0 },
		{ "-1", LOOKUP_SYNTAX, 0 },
		{ "1 2", LOOKUP_SYNTAX, 0 },
	};

	memset(&d, 0, sizeof(d));
	memset(msgs, 0, sizeof(msgs));
	msgs[1].deleted = 1;
	d.msgs = msgs;
	d.count = 3;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t index = 99;
		enum maildrop_lookup r = maildrop_find(&d, cases[i].arg, &index);

		CHECK_INT(cases[i].arg, cases[i].r, r);
		if (r == LOOKUP_OK)
			CHECK_INT(cases[i].arg, cases[i].index, index);
	}
}

/* The reference: LF to CRLF, a '.' at a line start doubled, a CRLF after a
 * last line without LF, TOP's cut, then ".\r\n". */
static size_t reference(const char *in, size_t len, long top, char *out)
{
	size_t o = 0, i = 0;
	int in_headers = 1;
	long body = 0;

	while (i < len) {
		size_t end = i;
		int blank;

		if (top >= 0 && !in_headers && body >= top)
			break;
		while (end < len && in[end] != '\n')
			end++;
		blank = end == i;
		if (in[i] == '.')
			out[o++] = '.';
		memcpy(out + o, in + i, end - i);
		o += end - i;
		out[o++] = '\r';
		out[o++] = '\n';
		if (!in_headers)
			body++;
		if (in_headers && blank)
			in_headers = 0;
		i = end + 1;
	}
	memcpy(out + o, ".\r\n", 3);
	return o + 3;
}

static void check_send(const char *dir, const char *given, const char *in, size_t len, long top,
		       const char *expected, size_t elen)
{
	char path[4200], *got, *ref = NULL;
	struct io *io = malloc(sizeof(*io));
	unsigned long long sent = 0;
	int fd, out;
	struct stat st;
	ssize_t n;

	REQUIRE(io != NULL);
	snprintf(path, sizeof(path), "%s/send-in", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	REQUIRE(fd >= 0);
	REQUIRE(write(fd, in, len) == (ssize_t)len);
	REQUIRE(lseek(fd, 0, SEEK_SET) == 0);
	snprintf(path, sizeof(path), "%s/send-out", dir);
	out = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	REQUIRE(out >= 0);
	io_init(io, -1, out, 1000);

	CHECK_INT(given, 0, maildrop_send(fd, top, io, &sent));
	REQUIRE(io_flush(io) == 0);
	REQUIRE(fstat(out, &st) == 0);
	got = malloc((size_t)st.st_size + 1);
	REQUIRE(got != NULL);
	n = pread(out, got, (size_t)st.st_size, 0);
	REQUIRE(n == st.st_size);
	if (!expected) {
		ref = malloc(2 * len + 8);
		REQUIRE(ref != NULL);
		elen = reference(in, len, top, ref);
		expected = ref;
	}
	CHECK_MEM_N(given, strlen(given), expected, elen, got, (size_t)n);
	/* sent counts the message octets (stuffing included), not ".\r\n" */
	CHECK_INT(given, elen - 3, sent);
	free(got);
	free(ref);
	free(io);
	close(fd);
	close(out);
}

#define SEND(dir, in, top, expected) \
	check_send(dir, in, in, sizeof(in) - 1, top, expected, sizeof(expected) - 1)

static void test_send(const char *dir)
{
	SEND(dir, "a\nb\n", -1, "a\r\nb\r\n.\r\n");
	SEND(dir, ".x\n..\n.\nmid.dle\n", -1, "..x\r\n...\r\n..\r\nmid.dle\r\n.\r\n");
	SEND(dir, "no final lf", -1, "no final lf\r\n.\r\n");
	SEND(dir, ".", -1, "..\r\n.\r\n");
	SEND(dir, "", -1, ".\r\n");
	SEND(dir, "\n", -1, "\r\n.\r\n");
	SEND(dir, "H: 1\n\nb1\nb2\n", 0, "H: 1\r\n\r\n.\r\n");
	SEND(dir, "H: 1\n\nb1\nb2\n", 1, "H: 1\r\n\r\nb1\r\n.\r\n");
	SEND(dir, "H: 1\n\nb1\nb2\n", 2, "H: 1\r\n\r\nb1\r\nb2\r\n.\r\n");
	SEND(dir, "H: 1\n\nb1\nb2\n", 3, "H: 1\r\n\r\nb1\r\nb2\r\n.\r\n");
	SEND(dir, "H: 1\n\n.b1\n\nb3", 2, "H: 1\r\n\r\n..b1\r\n\r\n.\r\n");
	SEND(dir, "H: 1\n\n.b1\n\nb3", 3, "H: 1\r\n\r\n..b1\r\n\r\nb3\r\n.\r\n");
	SEND(dir, "H: 1\nH: 2", 0, "H: 1\r\nH: 2\r\n.\r\n");   /* no body at all */
	SEND(dir, "H: 1\n\n", 0, "H: 1\r\n\r\n.\r\n");
	SEND(dir, "\nbody\n", 0, "\r\n.\r\n");                 /* no headers */
	SEND(dir, "", 0, ".\r\n");

	/* Large messages: dot lines and the TOP cut across read chunks. */
	{
		size_t cap = 300000, len = 0;
		char *big = malloc(cap);

		REQUIRE(big != NULL);
		len += (size_t)snprintf(big, cap, "Subject: big\nX-Long: %0*d\n\n", 9000, 7);
		for (int i = 0; len + 40 < cap; i++)
			len += (size_t)snprintf(big + len, cap - len, i % 3 ? "line %d\n" : ".dot %d\n", i);
		check_send(dir, "big, all", big, len, -1, NULL, 0);
		check_send(dir, "big, top 0", big, len, 0, NULL, 0);
		check_send(dir, "big, top 1", big, len, 1, NULL, 0);
		check_send(dir, "big, top 5000", big, len, 5000, NULL, 0);
		check_send(dir, "big, top huge", big, len, 0x7fffffff, NULL, 0);
		check_send(dir, "big, no final LF", big, len - 1, -1, NULL, 0);
		free(big);
	}
}

static void put_file(const char *md, const char *sub, const char *name, const char *content)
{
	char path[4400];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", md, sub, name);
	f = fopen(path, "w");
	REQUIRE(f != NULL);
	REQUIRE(fputs(content, f) >= 0);
	REQUIRE(fclose(f) == 0);
}

static int exists(const char *md, const char *sub, const char *name)
{
	char path[4400];

	snprintf(path, sizeof(path), "%s/%s/%s", md, sub, name);
	return access(path, F_OK) == 0;
}

static void mkdirs(const char *root, const char *login)
{
	char path[4400];
	static const char *const subs[] = { "", "/tmp", "/new", "/cur" };

	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/%s%s", root, login, subs[i]);
		REQUIRE(mkdir(path, 0700) == 0 || errno == EEXIST);
	}
}

static void test_scan(const char *root)
{
	char md[4200], sub[4400];
	struct maildrop d, other;
	unsigned long long size = 0, octets = 0;
	size_t count = 0, removed = 99;
	int fd;

	/* A mailbox never delivered to: empty, and nothing created. */
	CHECK_INT("missing Maildir", MAILDROP_OK, maildrop_open(&d, root, "nobody", NULL));
	CHECK_INT("missing Maildir", 0, d.count);
	snprintf(md, sizeof(md), "%s/nobody", root);
	CHECK_INT("missing Maildir not created", -1, access(md, F_OK));
	maildrop_close(&d);

	/* Names that no Maildir writer should make are refused, not used. */
	CHECK_INT("login ../x", MAILDROP_ERROR, maildrop_open(&d, root, "../x", NULL));
	CHECK_INT("login .hidden", MAILDROP_ERROR, maildrop_open(&d, root, ".hidden", NULL));

	mkdirs(root, "alice");
	snprintf(md, sizeof(md), "%s/alice", root);
	put_file(md, "new", "1700000002.M5P1.h,S=6,W=8", "a\nbb\n");
	put_file(md, "new", ".dotfile", "no");
	snprintf(sub, sizeof(sub), "%s/new/subdir", md);
	REQUIRE(mkdir(sub, 0700) == 0);
	put_file(md, "cur", "1700000000.M123P1.h:2,", "x\n.y\nno lf");
	put_file(md, "cur", "1700000000.M99P1.h:2,S", "");
	put_file(md, "cur", ".hidden", "no");
	put_file(md, "cur", "noinfo", "plain\n");
	put_file(md, "tmp", "1700000003.M1P1.h", "being written");
	put_file(md, "new", "1700000001.M1P1.h:2,T", "flagged in new\n");

	CHECK_INT("open alice", MAILDROP_OK, maildrop_open(&d, root, "alice", NULL));
	CHECK_INT("messages", 5, d.count);
	if (d.count == 5) {
		/* Version order: M99 before M123, seconds before all. */
		CHECK_STR("order 1", "1700000000.M99P1.h", d.msgs[0].uid);
		CHECK_STR("order 2", "1700000000.M123P1.h", d.msgs[1].uid);
		CHECK_STR("order 3", "1700000001.M1P1.h", d.msgs[2].uid);
		CHECK_STR("order 4", "1700000002.M5P1.h", d.msgs[3].uid);
		CHECK_STR("order 5", "noinfo", d.msgs[4].uid);
		CHECK_STR("moved with :2,", "1700000002.M5P1.h,S=6,W=8:2,", d.msgs[3].name);
		CHECK_STR("info kept when moved", "1700000001.M1P1.h:2,T", d.msgs[2].name);

		/* Sizes: W= when present (even when it lies), else counted. */
		CHECK_INT("size of empty", 0, maildrop_size(&d, 0, &size));
		CHECK_INT("size of empty", 0, size);
		CHECK_INT("size counted", 0, maildrop_size(&d, 1, &size));
		CHECK_INT("size counted, CRLF added at the end", 10 + 2 + 2, size);
		CHECK_INT("size from W=", 0, maildrop_size(&d, 3, &size));
		CHECK_INT("size from W=", 8, size);
		CHECK_INT("size noinfo", 0, maildrop_size(&d, 4, &size));
		CHECK_INT("size noinfo", 7, size);
		CHECK_INT("stat", 0, maildrop_stat(&d, &count, &octets));
		CHECK_INT("stat count", 5, count);
		CHECK_INT("stat octets", 0 + 14 + 16 + 8 + 7, octets);
	}
	CHECK_TRUE("new/ emptied", !exists(md, "new", "1700000002.M5P1.h,S=6,W=8"));
	CHECK_TRUE("moved into cur/", exists(md, "cur", "1700000002.M5P1.h,S=6,W=8:2,"));
	CHECK_TRUE("dot file left in new/", exists(md, "new", ".dotfile"));
	CHECK_TRUE("tmp/ untouched", exists(md, "tmp", "1700000003.M1P1.h"));
	CHECK_TRUE("lock file", exists(md, "", MAILDROP_LOCK_NAME));

	/* A second session is refused while the first holds the lock. */
	CHECK_INT("second open", MAILDROP_IN_USE, maildrop_open(&other, root, "alice", NULL));

	/* Renamed behind our back (an IMAP server setting a flag). */
	{
		char from[4400], to[4400];

		snprintf(from, sizeof(from), "%s/cur/1700000000.M123P1.h:2,", md);
		snprintf(to, sizeof(to), "%s/cur/1700000000.M123P1.h:2,S", md);
		REQUIRE(rename(from, to) == 0);
		fd = maildrop_open_message(&d, 1);
		CHECK_TRUE("renamed message found", fd >= 0);
		if (fd >= 0)
			close(fd);
		CHECK_STR("renamed message", "1700000000.M123P1.h:2,S", d.msgs[1].name);
	}

	/* Deletions happen at commit, and only for marked messages. */
	d.msgs[1].deleted = 1;
	d.msgs[4].deleted = 1;
	CHECK_INT("commit", 0, maildrop_commit(&d, &removed));
	CHECK_INT("removed", 2, removed);
	CHECK_TRUE("deleted", !exists(md, "cur", "1700000000.M123P1.h:2,S"));
	CHECK_TRUE("deleted", !exists(md, "cur", "noinfo"));
	CHECK_TRUE("kept", exists(md, "cur", "1700000000.M99P1.h:2,S"));
	maildrop_close(&d);

	/* The lock went with the close. */
	CHECK_INT("reopen", MAILDROP_OK, maildrop_open(&d, root, "alice", NULL));
	CHECK_INT("reopen count", 3, d.count);
	maildrop_close(&d);

	/* Two files with one base name still get distinct UIDLs. */
	put_file(md, "cur", "1700000005.dup:2,", "1\n");
	put_file(md, "cur", "1700000005.dup,S=2:2,S", "2\n");
	CHECK_INT("open dup", MAILDROP_OK, maildrop_open(&d, root, "alice", NULL));
	CHECK_INT("dup count", 5, d.count);
	for (size_t i = 0; i + 1 < d.count; i++)
		for (size_t j = i + 1; j < d.count; j++)
			CHECK_TRUE(d.msgs[i].uid, strcmp(d.msgs[i].uid, d.msgs[j].uid) != 0);
	maildrop_close(&d);

	/* A Maildir without cur/ (made by hand) gets one. */
	snprintf(sub, sizeof(sub), "%s/bob", root);
	REQUIRE(mkdir(sub, 0700) == 0);
	CHECK_INT("open bare", MAILDROP_OK, maildrop_open(&d, root, "bob", NULL));
	CHECK_INT("bare count", 0, d.count);
	CHECK_TRUE("cur/ made", exists(sub, "cur", "."));
	maildrop_close(&d);
}

int main(void)
{
	const char *dir = testdir_make("maildrop");

	test_uid();
	test_parse_count();
	test_find();
	test_send(dir);
	test_scan(dir);
	return check_finish("maildrop");
}
