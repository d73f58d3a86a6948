/* shared/uidlist.c: Dovecot's pop3_uidl_format (what Dovecot 2.3's
 * var_expand makes of it), the dovecot-uidlist header and record lines
 * (good and bad), whole files, reading from a file, the lock (busy,
 * stale, dead holder) and the rewrite. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#include "check.h"
#include "testdir.h"
#include "uidlist.h"

static void test_format(void)
{
	static const struct {
		const char *format;
		int ok;
		unsigned keys;
	} parse[] = {
		{ "%08Xu%08Xv", 1, UIDL_KEY_UID | UIDL_KEY_UIDVALIDITY }, /* Dovecot 2.3's default */
		{ "%v.%u", 1, UIDL_KEY_UID | UIDL_KEY_UIDVALIDITY },      /* Cyrus 2.1.4 on */
		{ "%u", 1, UIDL_KEY_UID },
		{ "%f", 1, UIDL_KEY_FILENAME },                           /* Courier */
		{ "%g", 1, UIDL_KEY_GUID },
		{ "%08Xv%08Xu", 1, UIDL_KEY_UID | UIDL_KEY_UIDVALIDITY }, /* UW ipop3d */
		{ "x%%y%u", 1, UIDL_KEY_UID },
		{ "%Lf", 1, UIDL_KEY_FILENAME },
		{ "%.3Uf", 1, UIDL_KEY_FILENAME },
		{ "%U.3f", 0, 0 },             /* modifiers come last: '.' is no variable */
		{ "%5.2u", 1, UIDL_KEY_UID },
		{ "%-3.2u", 1, UIDL_KEY_UID },
		{ "%u%", 1, UIDL_KEY_UID },    /* a '%' at the end: dropped, as Dovecot does */
		{ "", 0, 0 },                  /* no variable: Dovecot refuses it too */
		{ "uidl", 0, 0 },
		{ "%%u", 0, 0 },               /* "%%" then a plain 'u' */
		{ "%m", 0, 0 },                /* header MD5: not made here */
		{ "%Mf", 0, 0 },               /* MD5 modifier */
		{ "%Hu", 0, 0 },
		{ "%{uid}", 0, 0 },
		{ "%x", 0, 0 },                /* not a variable (Dovecot has no 'x' modifier) */
		{ "%08xu", 0, 0 },
		{ "%u%q", 0, 0 },
		{ "%999999999u", 0, 0 },
	};
	static const struct {
		const char *format;
		uint32_t uid, uidvalidity;
		const char *filename, *guid, *want;
	} expand[] = {
		/* Dovecot's X is lower-case hex (printf "%llx"), as a real
		 * Dovecot 2.3 answers: "000000016b16c1cb" */
		{ "%08Xu%08Xv", 1, 0x6b16c1cb, "f", NULL, "000000016b16c1cb" },
		{ "%08Xu%08Xv", 4294967294u, 1, "f", NULL, "fffffffe00000001" },
		{ "%Xu", 255, 1, "f", NULL, "ff" },
		{ "%XUu", 255, 1, "f", NULL, "FF" },                  /* in their order */
		{ "%UXu", 255, 1, "f", NULL, "ff" },
		{ "%v.%u", 7, 1700000000, "f", NULL, "1700000000.7" },
		{ "%f", 7, 1, "1700000000.M1P2.host,S=10,W=12", NULL, "1700000000.M1P2.host,S=10,W=12" },
		{ "%g", 7, 1, "base", NULL, "base" },                 /* no G field: the base name */
		{ "%g", 7, 1, "base", "0123abcd", "0123abcd" },
		{ "%Xf", 7, 1, "notanumber", NULL, "0" },             /* X of text is 0 */
		{ "%Lf-%Uf", 7, 1, "AbC", NULL, "abc-ABC" },
		{ "%3f", 7, 1, "abcdef", NULL, "abc" },                /* a width cuts */
		{ "%08u", 42, 1, "f", NULL, "00000042" },              /* zero padding */
		{ "%02u", 12345, 1, "f", NULL, "12345" },              /* never cuts */
		{ "%2.3f", 7, 1, "abcdef", NULL, "cde" },              /* offset 2, width 3 */
		{ "%-2.f", 7, 1, "abcdef", NULL, "ef" },               /* the last 2 */
		{ "%.-2f", 7, 1, "abcdef", NULL, "abcd" },             /* all but the last 2 */
		{ "a%%b%u", 9, 1, "f", NULL, "a%b9" },
	};

	for (size_t i = 0; i < sizeof(parse) / sizeof(parse[0]); i++) {
		struct uidl_format f;
		const char *why = NULL;
		int r = uidl_format_parse(parse[i].format, &f, &why);

		CHECK_INT(parse[i].format, parse[i].ok ? 0 : -1, r);
		if (parse[i].ok)
			CHECK_INT(parse[i].format, parse[i].keys, f.keys);
		else
			CHECK_TRUE(parse[i].format, why && *why);
	}
	for (size_t i = 0; i < sizeof(expand) / sizeof(expand[0]); i++) {
		struct uidl_format f;
		struct uidl_values v = { expand[i].uid, expand[i].uidvalidity, expand[i].filename,
					 expand[i].guid };
		const char *why;
		char out[POP3_UIDL_DOVECOT_MAX + 1];
		long n;

		if (!CHECK_INT(expand[i].format, 0, uidl_format_parse(expand[i].format, &f, &why)))
			continue;
		n = uidl_format_expand(&f, &v, out, sizeof(out));
		CHECK_STR(expand[i].format, expand[i].want, out);
		CHECK_INT(expand[i].format, strlen(expand[i].want), n);
	}
	/* too long for the room given: -1, never a cut UIDL */
	{
		struct uidl_format f;
		struct uidl_values v = { 1, 1, "abcdefghij", NULL };
		const char *why;
		char small[8];

		uidl_format_parse("%f", &f, &why);
		CHECK_INT("%f into 8", -1, uidl_format_expand(&f, &v, small, sizeof(small)));
		CHECK_INT("%f into 0", -1, uidl_format_expand(&f, &v, small, 0));
	}
	/* a format longer than UIDL_FORMAT_MAX */
	{
		char big[UIDL_FORMAT_MAX + 8];
		struct uidl_format f;
		const char *why;

		memset(big, 'a', sizeof(big) - 1);
		big[0] = '%';
		big[1] = 'u';
		big[sizeof(big) - 1] = '\0';
		CHECK_INT("long format", -1, uidl_format_parse(big, &f, &why));
	}
}

static void test_header(void)
{
	static const struct {
		const char *line;
		int ok;
		unsigned version;
		uint32_t uidvalidity, next;
	} cases[] = {
		{ "3 V1275660208 N25022 G3085f01b7f11094c501100008c4a11c1", 1, 3, 1275660208, 25022 },
		{ "3 N5 V9 G3085F01B7F11094C501100008C4A11C1", 1, 3, 9, 5 }, /* any order, either case */
		{ "3 V1 N1", 1, 3, 1, 1 },                                  /* G is optional */
		{ "3 V1 N1 Zsomething Q", 1, 3, 1, 1 },                     /* others are kept */
		{ "3 V1   N2 ", 1, 3, 1, 2 },
		{ "3  V1 N2", 0, 0, 0, 0 },    /* Dovecot reads " V1" as a field ' ' */
		{ "3 V4294967295 N4294967295", 1, 3, 4294967295u, 4294967295u },
		{ "1 1700000000 17", 1, 1, 1700000000, 17 },
		{ "1 1700000000 17 trailing", 1, 1, 1700000000, 17 },
		{ "1 5   6", 1, 1, 5, 6 },
		{ "", 0, 0, 0, 0 },
		{ "3", 0, 0, 0, 0 },
		{ "3 ", 0, 0, 0, 0 },
		{ "3V1 N1", 0, 0, 0, 0 },
		{ "2 V1 N1", 0, 0, 0, 0 },                                  /* version 2: not read */
		{ "4 V1 N1", 0, 0, 0, 0 },
		{ "x V1 N1", 0, 0, 0, 0 },
		{ "3 V0 N1", 0, 0, 0, 0 },
		{ "3 V1 N0", 0, 0, 0, 0 },
		{ "3 V1", 0, 0, 0, 0 },
		{ "3 N1", 0, 0, 0, 0 },
		{ "3 V4294967296 N1", 0, 0, 0, 0 },                         /* past 32 bits */
		{ "3 V99999999999999999999 N1", 0, 0, 0, 0 },
		{ "3 V-1 N1", 0, 0, 0, 0 },
		{ "3 V1x N1", 0, 0, 0, 0 },
		{ "3 V N1", 0, 0, 0, 0 },
		{ "3 V1 N1 G123", 0, 0, 0, 0 },                             /* GUID not 128 bits */
		{ "3 V1 N1 G3085f01b7f11094c501100008c4a11cz", 0, 0, 0, 0 },
		{ "1 5", 0, 0, 0, 0 },
		{ "1 5 x", 0, 0, 0, 0 },
		{ "1 0 5", 0, 0, 0, 0 },
		{ "1 x 5", 0, 0, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct uidlist_header h;
		const char *why = NULL;
		int r = uidlist_parse_header(cases[i].line, strlen(cases[i].line), &h, &why);

		CHECK_INT(cases[i].line, cases[i].ok ? 0 : -1, r);
		if (!cases[i].ok) {
			CHECK_TRUE(cases[i].line, why && *why);
			continue;
		}
		CHECK_INT(cases[i].line, cases[i].version, h.version);
		CHECK_INT(cases[i].line, cases[i].uidvalidity, h.uidvalidity);
		CHECK_INT(cases[i].line, cases[i].next, h.next_uid);
	}
}

static void test_record(void)
{
	static const struct {
		unsigned version;
		const char *line;
		int ok;
		uint32_t uid;
		const char *name;      /* the base name */
		const char *guid;      /* NULL: none */
		const char *pop3_uidl; /* NULL: none */
	} cases[] = {
		{ 3, "25006 :1276528487.M364837P9451.kurkku,S=1355,W=1394:2,", 1, 25006,
		  "1276528487.M364837P9451.kurkku,S=1355,W=1394", NULL, NULL },
		{ 3, "25017 W2481 :1276533073.M242911P3632.kurkku:2,F", 1, 25017,
		  "1276533073.M242911P3632.kurkku", NULL, NULL },
		{ 3, "1 :a", 1, 1, "a", NULL, NULL },
		{ 3, "7 W43 G0123 P1700.7 :name", 1, 7, "name", "0123", "1700.7" },
		{ 3, "7 P :name", 1, 7, "name", NULL, "" },          /* P empty: the base name */
		{ 3, "7 G :name", 1, 7, "name", NULL, NULL },        /* G empty: none */
		{ 3, "7 Pfirst Psecond :n", 1, 7, "n", NULL, "first" },
		{ 3, "7 w12 1x :n", 1, 7, "n", NULL, NULL },         /* bad fields dropped */
		{ 3, "7   W1   :n", 1, 7, "n", NULL, NULL },
		{ 3, "7 :name with space", 1, 7, "name with space", NULL, NULL },
		{ 3, "7 ::x", 0, 0, NULL, NULL, NULL },              /* empty base name */
		{ 3, "4294967294 :n", 1, 4294967294u, "n", NULL, NULL },
		{ 3, "4294967295 :n", 0, 0, NULL, NULL, NULL },      /* not a UID */
		{ 3, "99999999999999999999 :n", 0, 0, NULL, NULL, NULL },
		{ 3, "0 :n", 0, 0, NULL, NULL, NULL },
		{ 3, ":n", 0, 0, NULL, NULL, NULL },
		{ 3, "7:n", 0, 0, NULL, NULL, NULL },
		{ 3, "7", 0, 0, NULL, NULL, NULL },
		{ 3, "7 ", 0, 0, NULL, NULL, NULL },
		{ 3, "7 W1", 0, 0, NULL, NULL, NULL },               /* no ':' name */
		{ 3, "7 :", 0, 0, NULL, NULL, NULL },
		{ 3, "7 :../etc/passwd", 0, 0, NULL, NULL, NULL },
		{ 3, "x7 :n", 0, 0, NULL, NULL, NULL },
		{ 3, "-7 :n", 0, 0, NULL, NULL, NULL },
		{ 1, "5 1700000000.M1P1.host:2,S", 1, 5, "1700000000.M1P1.host", NULL, NULL },
		{ 1, "5   name", 1, 5, "name", NULL, NULL },
		{ 1, "5 W12 :name", 1, 5, "W12 ", NULL, NULL },      /* version 1 has no fields */
		{ 1, "5", 0, 0, NULL, NULL, NULL },
		{ 1, "5 a/b", 0, 0, NULL, NULL, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct uidlist_record r;
		const char *why = NULL;
		int rc = uidlist_parse_record(cases[i].version, cases[i].line, strlen(cases[i].line), &r,
					      &why);

		CHECK_INT(cases[i].line, cases[i].ok ? 0 : -1, rc);
		if (!cases[i].ok) {
			CHECK_TRUE(cases[i].line, why && *why);
			continue;
		}
		CHECK_INT(cases[i].line, cases[i].uid, r.uid);
		CHECK_MEM_N(cases[i].line, strlen(cases[i].line), cases[i].name, strlen(cases[i].name),
			    r.name, r.name_len);
		if (cases[i].guid)
			CHECK_MEM_N(cases[i].line, strlen(cases[i].line), cases[i].guid,
				    strlen(cases[i].guid), r.guid, r.guid_len);
		else
			CHECK_TRUE(cases[i].line, r.guid == NULL);
		if (cases[i].pop3_uidl)
			CHECK_MEM_N(cases[i].line, strlen(cases[i].line), cases[i].pop3_uidl,
				    strlen(cases[i].pop3_uidl), r.pop3_uidl, r.pop3_uidl_len);
		else
			CHECK_TRUE(cases[i].line, r.pop3_uidl == NULL);
	}
}

struct seen {
	char names[16][64];
	uint32_t uids[16];
	size_t n;
};

static void remember(void *ctx, const struct uidlist_record *r)
{
	struct seen *s = ctx;

	if (s->n < 16) {
		snprintf(s->names[s->n], sizeof(s->names[0]), "%.*s", (int)r->name_len, r->name);
		s->uids[s->n++] = r->uid;
	}
}

static void test_file(void)
{
	static const struct {
		const char *file;
		size_t len; /* 0: strlen */
		enum uidlist_result want;
		size_t records;
		uint32_t next; /* uidlist_next_uid */
	} cases[] = {
		{ "3 V1 N4 G3085f01b7f11094c501100008c4a11c1\n1 :a\n2 :b\n3 :c\n", 0, UIDLIST_OK, 3, 4 },
		/* Dovecot appends without rewriting N: the next UID is past
		 * the last record */
		{ "3 V1 N2\n1 :a\n5 :b\n", 0, UIDLIST_OK, 2, 6 },
		{ "3 V1 N9\n", 0, UIDLIST_OK, 0, 9 },
		/* a record being appended (no LF yet) is not read */
		{ "3 V1 N2\n1 :a\n2 :b", 0, UIDLIST_OK, 1, 2 },
		{ "1 100 5\n1 a\n4 b:2,S\n", 0, UIDLIST_OK, 2, 5 },
		{ "3 V1 N4294967295\n4294967294 :a\n", 0, UIDLIST_OK, 1, 0 }, /* none left */
		{ "", 0, UIDLIST_BROKEN, 0, 0 },
		{ "3 V1 N1", 0, UIDLIST_BROKEN, 0, 0 },                 /* no complete header */
		{ "garbage\n1 :a\n", 0, UIDLIST_BROKEN, 0, 0 },
		{ "3 V1 N4\n2 :a\n1 :b\n", 0, UIDLIST_BROKEN, 1, 0 },   /* UIDs going down */
		{ "3 V1 N4\n2 :a\n2 :b\n", 0, UIDLIST_BROKEN, 1, 0 },
		{ "3 V1 N4\n1 :a\n\n", 0, UIDLIST_BROKEN, 1, 0 },       /* an empty line */
		{ "3 V1 N4\n1 :a\nx\n", 0, UIDLIST_BROKEN, 1, 0 },
		{ "1 100 5\n5 a\n", 0, UIDLIST_BROKEN, 0, 0 },          /* v1: past next UID */
		{ "3 V1 N4\n1 :a\0b\n", 15, UIDLIST_BROKEN, 0, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct seen s = { .n = 0 };
		struct uidlist_reader r = { .record = remember, .ctx = &s };
		size_t len = strlen(cases[i].file);
		enum uidlist_result res;

		if (cases[i].len)
			len = cases[i].len;
		res = uidlist_parse(&r, cases[i].file, len);
		CHECK_INT(cases[i].file, cases[i].want, res);
		CHECK_INT(cases[i].file, cases[i].records, s.n);
		if (res == UIDLIST_OK)
			CHECK_INT(cases[i].file, cases[i].next, uidlist_next_uid(&r));
		else
			CHECK_TRUE(cases[i].file, r.why && *r.why);
	}
	/* later records for one base name come later: the caller keeps the
	 * last, as Dovecot does */
	{
		struct seen s = { .n = 0 };
		struct uidlist_reader r = { .record = remember, .ctx = &s };
		const char *f = "3 V1 N9\n1 :a,S=1\n3 :a,S=1:2,S\n";

		CHECK_INT(f, UIDLIST_OK, uidlist_parse(&r, f, strlen(f)));
		CHECK_INT(f, 2, s.n);
		CHECK_STR(f, "a,S=1", s.names[1]);
		CHECK_INT(f, 3, s.uids[1]);
	}
	/* a line past UIDLIST_LINE_MAX */
	{
		static char big[UIDLIST_LINE_MAX + 64];
		struct uidlist_reader r = { .record = NULL };
		int n = snprintf(big, sizeof(big), "3 V1 N2\n1 :");

		memset(big + n, 'a', sizeof(big) - (size_t)n - 2);
		big[sizeof(big) - 2] = '\n';
		big[sizeof(big) - 1] = '\0';
		CHECK_INT("long line", UIDLIST_BROKEN, uidlist_parse(&r, big, strlen(big)));
		big[sizeof(big) - 2] = 'a';
		CHECK_INT("long partial line", UIDLIST_BROKEN, uidlist_parse(&r, big, strlen(big)));
	}
}

static void write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0640);

	REQUIRE(fd >= 0);
	REQUIRE(write(fd, data, len) == (ssize_t)len);
	close(fd);
}

static char *read_file(const char *path)
{
	static char buf[1 << 16];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n < 0 ? 0 : n] = '\0';
	return buf;
}

static void test_read_fd(const char *dir)
{
	char path[4096];
	static char big[3 * 65536];
	struct seen s = { .n = 0 };
	struct uidlist_reader r = { .record = remember, .ctx = &s };
	size_t o = 0;
	int fd;

	/* many records across the reader's chunks, one split by a chunk end */
	snprintf(path, sizeof(path), "%s/read-uidlist", dir);
	o += (size_t)snprintf(big + o, sizeof(big) - o, "3 V7 N1 G%032d\n", 0);
	for (unsigned uid = 1; o + 200 < sizeof(big); uid++)
		o += (size_t)snprintf(big + o, sizeof(big) - o, "%u W%u :1700000000.M%uP1.host,S=%u\n",
				      uid, uid * 3, uid, uid);
	write_file(path, big, o);
	fd = open(path, O_RDONLY);
	REQUIRE(fd >= 0);
	CHECK_INT("big file", UIDLIST_OK, uidlist_read_fd(&r, fd));
	CHECK_INT("big file bytes", o, r.bytes);
	CHECK_INT("big file uidvalidity", 7, r.header.uidvalidity);
	CHECK_TRUE("big file last uid", r.last_uid > 1000 && uidlist_next_uid(&r) == r.last_uid + 1);
	CHECK_STR("big file first", "1700000000.M1P1.host,S=1", s.names[0]);
	close(fd);

	/* the same bytes as uidlist_parse reads them */
	{
		struct uidlist_reader b = { .record = NULL };

		CHECK_INT("big buffer", UIDLIST_OK, uidlist_parse(&b, big, o));
		CHECK_INT("big buffer last", r.last_uid, b.last_uid);
		CHECK_INT("big buffer lines", r.lines, b.lines);
	}

	/* a broken line deep in the file */
	memcpy(big + o - 150, "\nbroken\n", 8);
	write_file(path, big, o);
	fd = open(path, O_RDONLY);
	CHECK_INT("broken deep", UIDLIST_BROKEN, uidlist_read_fd(&r, fd));
	CHECK_TRUE("broken deep line", r.lines > 1000);
	close(fd);

	/* a partial last line is left for its writer */
	write_file(path, "3 V1 N2\n1 :a\n2 :b", 17);
	fd = open(path, O_RDONLY);
	CHECK_INT("partial", UIDLIST_OK, uidlist_read_fd(&r, fd));
	CHECK_INT("partial bytes", 13, r.bytes);
	close(fd);

	/* an empty file has no header */
	write_file(path, "", 0);
	fd = open(path, O_RDONLY);
	CHECK_INT("empty", UIDLIST_BROKEN, uidlist_read_fd(&r, fd));
	close(fd);
}

static pid_t dead_pid(void)
{
	pid_t pid = fork();

	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(0);
	REQUIRE(waitpid(pid, NULL, 0) == pid);
	return pid;
}

static void age_file(const char *path, time_t seconds)
{
	struct utimbuf t;

	t.actime = t.modtime = time(NULL) - seconds;
	REQUIRE(utime(path, &t) == 0);
}

static void test_lock(const char *root)
{
	char dir[4096], lock_path[4200], text[300], host[256];
	struct uidlist_lock l, other;
	struct timespec a, b;
	long waited;

	snprintf(dir, sizeof(dir), "%s/lockdir", root);
	REQUIRE(mkdir(dir, 0700) == 0);
	snprintf(lock_path, sizeof(lock_path), "%s/dovecot-uidlist.lock", dir);
	REQUIRE(gethostname(host, sizeof(host) - 1) == 0);
	host[sizeof(host) - 1] = '\0';

	/* free: taken at once, holding "<pid>:<host>" as Dovecot's does */
	CHECK_INT("lock free", UIDLIST_LOCKED, uidlist_lock(dir, 0, &l));
	snprintf(text, sizeof(text), "%ld:%s", (long)getpid(), host);
	CHECK_STR("lock text", text, read_file(lock_path));

	/* held by a live process: busy after the wait */
	clock_gettime(CLOCK_MONOTONIC, &a);
	CHECK_INT("lock held", UIDLIST_LOCK_BUSY, uidlist_lock(dir, 300, &other));
	clock_gettime(CLOCK_MONOTONIC, &b);
	waited = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
	CHECK_TRUE("lock waited 300 ms", waited >= 290 && waited < 3000);
	uidlist_unlock(&l);
	CHECK_INT("unlocked", -1, access(lock_path, F_OK));

	/* a lock whose process on this host is gone: stale once 2 s old */
	snprintf(text, sizeof(text), "%ld:%s", (long)dead_pid(), host);
	write_file(lock_path, text, strlen(text));
	age_file(lock_path, UIDLIST_LOCK_PID_CHECK_SECONDS + 1);
	CHECK_INT("dead holder", UIDLIST_LOCKED, uidlist_lock(dir, 0, &l));
	uidlist_unlock(&l);

	/* ... but not while it is new: it may be being written */
	write_file(lock_path, text, strlen(text));
	CHECK_INT("dead holder, new lock", UIDLIST_LOCK_BUSY, uidlist_lock(dir, 0, &l));

	/* a live process on another host: only its age makes it stale */
	snprintf(text, sizeof(text), "%ld:elsewhere.example", (long)dead_pid());
	write_file(lock_path, text, strlen(text));
	age_file(lock_path, 60);
	CHECK_INT("other host", UIDLIST_LOCK_BUSY, uidlist_lock(dir, 0, &l));
	age_file(lock_path, UIDLIST_LOCK_STALE_SECONDS + 5);
	CHECK_INT("other host, old", UIDLIST_LOCKED, uidlist_lock(dir, 0, &l));
	uidlist_unlock(&l);

	/* an empty lock (Dovecot's replace-style locks hold no pid) */
	write_file(lock_path, "", 0);
	age_file(lock_path, 30);
	CHECK_INT("empty lock", UIDLIST_LOCK_BUSY, uidlist_lock(dir, 0, &l));
	unlink(lock_path);

	/* something that is not a file is never removed */
	REQUIRE(mkdir(lock_path, 0700) == 0);
	age_file(lock_path, UIDLIST_LOCK_STALE_SECONDS + 5);
	CHECK_INT("lock is a folder", UIDLIST_LOCK_BUSY, uidlist_lock(dir, 0, &l));
	REQUIRE(rmdir(lock_path) == 0);

	/* our lock taken over by another: unlock leaves theirs */
	CHECK_INT("lock again", UIDLIST_LOCKED, uidlist_lock(dir, 0, &l));
	REQUIRE(unlink(lock_path) == 0);
	write_file(lock_path, "1:other", 7);
	uidlist_unlock(&l);
	CHECK_STR("theirs kept", "1:other", read_file(lock_path));
	unlink(lock_path);
}

static void test_append(const char *root)
{
	char dir[4096], path[4200];
	const char *names[] = { "1700000005.M1P1.h,S=3,W=4:2,", "1700000006.M2P1.h:2,S", "plain" };
	struct uidlist_lock l;
	struct uidlist_reader r = { .record = NULL };
	struct stat st;
	uint32_t uv = 0;
	const char *v3 = "3 V77 N3 G3085f01b7f11094c501100008c4a11c1 Xkeep\n1 W9 :a\n2 :b\n";
	int fd;

	snprintf(dir, sizeof(dir), "%s/appenddir", root);
	REQUIRE(mkdir(dir, 0700) == 0);
	snprintf(path, sizeof(path), "%s/dovecot-uidlist", dir);

	/* version 3: kept as it is (a partial last line dropped), new
	 * records after it */
	write_file(path, v3, strlen(v3));
	fd = open(path, O_RDWR | O_APPEND);
	REQUIRE(write(fd, "3 :partial", 10) == 10);
	REQUIRE(fchmod(fd, 0640) == 0);
	CHECK_INT("read v3", UIDLIST_OK, uidlist_read_fd(&r, fd));
	REQUIRE(uidlist_lock(dir, 0, &l) == UIDLIST_LOCKED);
	CHECK_INT("append v3", 0, uidlist_append(dir, &l, fd, &r, uidlist_next_uid(&r), names, 3, &uv));
	uidlist_unlock(&l);
	close(fd);
	CHECK_INT("append v3 uidvalidity", 77, uv);
	CHECK_STR("append v3 file",
		  "3 V77 N3 G3085f01b7f11094c501100008c4a11c1 Xkeep\n1 W9 :a\n2 :b\n"
		  "3 :1700000005.M1P1.h,S=3,W=4\n4 :1700000006.M2P1.h\n5 :plain\n",
		  read_file(path));
	REQUIRE(stat(path, &st) == 0);
	CHECK_INT("append v3 mode kept", 0640, st.st_mode & 0777);
	snprintf(path, sizeof(path), "%s/dovecot-uidlist.tmp", dir);
	CHECK_INT("no tmp left", -1, access(path, F_OK));
	snprintf(path, sizeof(path), "%s/dovecot-uidlist", dir);

	/* and it reads back */
	fd = open(path, O_RDONLY);
	CHECK_INT("reread v3", UIDLIST_OK, uidlist_read_fd(&r, fd));
	CHECK_INT("reread v3 next", 6, uidlist_next_uid(&r));
	close(fd);

	/* version 1: the header's next UID is raised */
	write_file(path, "1 55 3\n1 a\n2 b:2,S\n", 19);
	fd = open(path, O_RDONLY);
	CHECK_INT("read v1", UIDLIST_OK, uidlist_read_fd(&r, fd));
	REQUIRE(uidlist_lock(dir, 0, &l) == UIDLIST_LOCKED);
	CHECK_INT("append v1", 0, uidlist_append(dir, &l, fd, &r, 3, names + 1, 2, &uv));
	uidlist_unlock(&l);
	close(fd);
	CHECK_STR("append v1 file", "1 55 5\n1 a\n2 b:2,S\n3 1700000006.M2P1.h\n4 plain\n",
		  read_file(path));
	fd = open(path, O_RDONLY);
	CHECK_INT("reread v1", UIDLIST_OK, uidlist_read_fd(&r, fd));
	close(fd);

	/* none yet: a new version 3 file */
	REQUIRE(unlink(path) == 0);
	REQUIRE(uidlist_lock(dir, 0, &l) == UIDLIST_LOCKED);
	CHECK_INT("append new", 0, uidlist_append(dir, &l, -1, NULL, 1, names, 2, &uv));
	uidlist_unlock(&l);
	fd = open(path, O_RDONLY);
	CHECK_INT("read new", UIDLIST_OK, uidlist_read_fd(&r, fd));
	close(fd);
	CHECK_INT("new version", 3, r.header.version);
	CHECK_INT("new uidvalidity", uv, r.header.uidvalidity);
	CHECK_TRUE("new uidvalidity is a time", uv > 1600000000u);
	CHECK_INT("new next", 3, uidlist_next_uid(&r));
	CHECK_TRUE("new GUID", strstr(read_file(path), " G") != NULL);

	/* the lock is no longer ours: nothing is replaced */
	REQUIRE(uidlist_lock(dir, 0, &l) == UIDLIST_LOCKED);
	REQUIRE(unlink(l.path) == 0);
	fd = open(path, O_RDONLY);
	CHECK_INT("read before lost lock", UIDLIST_OK, uidlist_read_fd(&r, fd));
	errno = 0;
	CHECK_INT("append lost lock", -1, uidlist_append(dir, &l, fd, &r, 3, names, 1, &uv));
	CHECK_INT("append lost lock errno", ENOLCK, errno);
	close(fd);
	uidlist_unlock(&l);
	fd = open(path, O_RDONLY);
	CHECK_INT("reread after lost lock", UIDLIST_OK, uidlist_read_fd(&r, fd));
	CHECK_INT("append lost lock: file as it was", 3, uidlist_next_uid(&r));
	close(fd);

	/* a name no record can hold */
	{
		const char *bad[] = { "with\nnewline" };

		REQUIRE(uidlist_lock(dir, 0, &l) == UIDLIST_LOCKED);
		CHECK_INT("append bad name", -1, uidlist_append(dir, &l, -1, NULL, 1, bad, 1, &uv));
		uidlist_unlock(&l);
	}
}

int main(void)
{
	const char *dir = testdir_make("uidlist");

	test_format();
	test_header();
	test_record();
	test_file();
	test_read_fd(dir);
	test_lock(dir);
	test_append(dir);
	return check_finish("uidlist");
}
