/* shared/maildir.c: Dovecot-compatible names (,S= ,W= and the unique
 * part), maildir_path, maildir_deliver into a temp Maildir, and
 * maildir_usage. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "limits.h"
#include "maildir.h"
#include "testdir.h"

static void test_name_size(void)
{
	static const struct {
		const char *name;
		char tag;
		int found;
		unsigned long long value;
	} cases[] = {
		{ "1700000000.M1P2.host,S=100,W=104:2,S", 'S', 1, 100 },
		{ "1700000000.M1P2.host,S=100,W=104:2,S", 'W', 1, 104 },
		{ "1700000000.M1P2.host,S=100,W=104", 'W', 1, 104 },
		{ "1700000000.M1P2.host,S=0", 'S', 1, 0 },
		{ "1700000000.M1P2.host,W=9,S=8", 'S', 1, 8 },
		{ "1700000000.M1P2.host,S=100:2,", 'S', 1, 100 },
		{ "1700000000.M1P2.host", 'S', 0, 0 },           /* no ,S= */
		{ "1700000000.M1P2.host:2,S", 'S', 0, 0 },        /* the S flag is no size */
		{ "1700000000.M1P2.host:2,S=5", 'S', 0, 0 },      /* ',S=' after ':' */
		{ "1700000000.M1P2.host:2,,S=5", 'S', 0, 0 },
		{ "1700000000.M1P2.host,S=100", 'W', 0, 0 },
		{ "a,S=abc", 'S', 0, 0 },
		{ "a,S=12x", 'S', 0, 0 },
		{ "a,S=", 'S', 0, 0 },
		{ "a,S=-5", 'S', 0, 0 },
		{ "a,S=+5", 'S', 0, 0 },
		{ "a,S= 5", 'S', 0, 0 },
		{ "a,s=5", 'S', 0, 0 },
		{ "a,S=x,S=7", 'S', 1, 7 },
		{ "a,XS=7", 'S', 0, 0 },
		{ ",S=5", 'S', 1, 5 },
		{ ".hidden,S=5", 'S', 1, 5 },
		{ "", 'S', 0, 0 },
		{ ":", 'S', 0, 0 },
		{ "a,S=9223372036854775807", 'S', 1, 9223372036854775807ULL },
		/* sizes beyond what a file can hold are no sizes (maildir_usage
		 * then stats the file) */
		{ "a,S=9223372036854775808", 'S', 0, 0 },
		{ "a,S=18446744073709551616", 'S', 0, 0 },
		{ "a,S=99999999999999999999999999", 'S', 0, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned long long v = 424242;
		char given[80];
		int found;

		snprintf(given, sizeof(given), "%s, tag %c", cases[i].name, cases[i].tag);
		found = maildir_name_size(cases[i].name, cases[i].tag, &v);
		CHECK_INT(given, cases[i].found, found);
		if (cases[i].found)
			CHECK_INT(given, (long long)cases[i].value, (long long)v);
		else
			CHECK_INT(given, 424242, v); /* untouched */
	}
}

static void test_name_uid(void)
{
	static const struct {
		const char *name, *uid;
	} cases[] = {
		{ "1700000000.M1P2.host,S=100,W=104:2,S", "1700000000.M1P2.host" },
		{ "1700000000.M1P2.host:2,S", "1700000000.M1P2.host" },
		{ "1700000000.M1P2Q3.host,S=1", "1700000000.M1P2Q3.host" },
		{ "plain", "plain" },
		{ ".dotfile", ".dotfile" },
		{ "a:2,S,S=5", "a" },
		{ ",S=5", "" },
		{ ":2,", "" },
		{ "", "" },
	};
	char buf[64], small[4];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n = maildir_name_uid(cases[i].name, buf, sizeof(buf));

		CHECK_STR(cases[i].name, cases[i].uid, buf);
		CHECK_INT(cases[i].name, strlen(cases[i].uid), n);
	}
	memset(small, 'X', sizeof(small));
	CHECK_INT("abcdef into 4 octets", 3, maildir_name_uid("abcdef,S=1", small, sizeof(small)));
	CHECK_STR("abcdef into 4 octets", "abc", small);
	CHECK_INT("cap 0", 0, maildir_name_uid("abc", small, 0));
	CHECK_STR("cap 0 leaves the buffer alone", "abc", small);
}

static int count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void write_file(const char *path, const char *content, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	REQUIRE(fd >= 0);
	REQUIRE(write(fd, content, len) == (ssize_t)len);
	close(fd);
}

/* The name maildir_deliver makes: <secs>.M<usec>P<pid>[Q<n>].<host>,S=<s>,W=<w> */
static int name_well_formed(const char *name, unsigned long long s, unsigned long long w)
{
	char tail[64];
	const char *p = name;
	size_t tl;

	while (*p >= '0' && *p <= '9')
		p++;
	if (p == name || strncmp(p, ".M", 2) != 0)
		return 0;
	p += 2;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p++ != 'P')
		return 0;
	if (*p < '0' || *p > '9')
		return 0;
	while ((*p >= '0' && *p <= '9') || *p == 'Q')
		p++;
	if (*p++ != '.' || !*p || *p == ',')
		return 0;
	snprintf(tail, sizeof(tail), ",S=%llu,W=%llu", s, w);
	tl = strlen(tail);
	if (strlen(p) <= tl || strcmp(p + strlen(p) - tl, tail) != 0)
		return 0;
	/* the host part holds neither '/' nor ':' (Dovecot escapes them) */
	return strcspn(p, "/:") == strlen(p);
}

static void test_path(const char *root)
{
	char dir[4096], sub[4200];
	struct stat st;
	static const char *const bad[] = { "a/b", ".hidden", "..", ".", "", "/abs" };

	CHECK_INT("alice, create", 0, maildir_path(root, "alice", dir, sizeof(dir), 1));
	snprintf(sub, sizeof(sub), "%s/alice", root);
	CHECK_STR("alice, create", sub, dir);
	for (int i = 0; i < 3; i++) {
		static const char *const subs[] = { "tmp", "new", "cur" };

		snprintf(sub, sizeof(sub), "%s/%s", dir, subs[i]);
		if (CHECK_INT(sub, 0, stat(sub, &st)))
			CHECK_INT(sub, 0700, st.st_mode & 07777);
	}
	/* again: nothing changes, nothing fails */
	CHECK_INT("alice, create again", 0, maildir_path(root, "alice", dir, sizeof(dir), 1));
	/* without create nothing is made */
	CHECK_INT("bob, no create", 0, maildir_path(root, "bob", dir, sizeof(dir), 0));
	CHECK_INT("bob, no create", -1, stat(dir, &st));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		CHECK_INT(bad[i], -1, maildir_path(root, bad[i], dir, sizeof(dir), 1));
		CHECK_INT(bad[i], EINVAL, errno);
	}
	{
		char small[8];
		CHECK_INT("path longer than the buffer", -1,
			  maildir_path(root, "alice", small, sizeof(small), 0));
	}
}

static void test_deliver(const char *root)
{
	static const char prefix[] = "Return-Path: <a@b.example>\nDelivered-To: alice@example.org\n";
	static const char body[] = "Received: from x\n\tby y\nSubject: hi\n\nline one\n.line two\n";
	char dir[4096], src[4200], name[512], name2[512], path[5000], buf[512];
	unsigned long long size = sizeof(prefix) - 1 + sizeof(body) - 1, lfs = 2 + 6, v;
	struct stat st;
	int fd, n;

	REQUIRE(maildir_path(root, "carol", dir, sizeof(dir), 1) == 0);
	snprintf(src, sizeof(src), "%s/source", root);
	write_file(src, body, sizeof(body) - 1);
	fd = open(src, O_RDONLY | O_CLOEXEC);
	REQUIRE(fd >= 0);

	CHECK_INT("deliver", 0, maildir_deliver(dir, prefix, sizeof(prefix) - 1, fd, sizeof(body) - 1,
						  lfs, name, sizeof(name)));
	CHECK_TRUE(name, name_well_formed(name, size, size + lfs));
	CHECK_INT(name, 1, maildir_name_size(name, 'S', &v));
	CHECK_INT(name, size, v);
	CHECK_INT(name, 1, maildir_name_size(name, 'W', &v));
	CHECK_INT(name, size + lfs, v);
	snprintf(path, sizeof(path), "%s/new/%s", dir, name);
	if (CHECK_INT(path, 0, stat(path, &st))) {
		CHECK_INT(path, size, st.st_size);
		CHECK_INT(path, 0600, st.st_mode & 07777);
		CHECK_INT(path, 1, st.st_nlink);
	}
	{
		int rfd = open(path, O_RDONLY | O_CLOEXEC);
		char want[512];

		REQUIRE(rfd >= 0);
		n = (int)read(rfd, buf, sizeof(buf));
		close(rfd);
		snprintf(want, sizeof(want), "%s%s", prefix, body);
		CHECK_MEM_N(path, strlen(path), want, strlen(want), buf, n < 0 ? 0 : (size_t)n);
	}
	snprintf(path, sizeof(path), "%s/tmp", dir);
	CHECK_INT("tmp/ after a delivery", 0, count_entries(path));

	/* a second delivery gets another name; only the first src_len bytes
	 * are taken */
	CHECK_INT("deliver 10 bytes", 0, maildir_deliver(dir, "", 0, fd, 10, 1, name2, sizeof(name2)));
	CHECK_INT("second name differs", 1, strcmp(name, name2) != 0);
	CHECK_TRUE(name2, name_well_formed(name2, 10, 11));
	snprintf(path, sizeof(path), "%s/new", dir);
	CHECK_INT("new/ after two deliveries", 2, count_entries(path));

	/* a source shorter than src_len: refused, nothing left behind */
	errno = 0;
	CHECK_INT("deliver past the source's end", -1,
		  maildir_deliver(dir, prefix, sizeof(prefix) - 1, fd, sizeof(body) + 100, 0, name2,
				  sizeof(name2)));
	CHECK_INT("deliver past the source's end", EIO, errno);
	CHECK_INT("new/ after a failed delivery", 2, count_entries(path));
	snprintf(path, sizeof(path), "%s/tmp", dir);
	CHECK_INT("tmp/ after a failed delivery", 0, count_entries(path));

	/* no Maildir there */
	snprintf(path, sizeof(path), "%s/nobody", root);
	errno = 0;
	CHECK_INT("deliver into a missing Maildir", -1,
		  maildir_deliver(path, prefix, sizeof(prefix) - 1, fd, 5, 0, name2, sizeof(name2)));
	CHECK_INT("deliver into a missing Maildir", ENOENT, errno);
	close(fd);

	/* usage: ,S= when the name has it, else the file's size; dot files
	 * and other directories do not count */
	CHECK_INT("usage after two deliveries", (long long)size + 10, maildir_usage(dir));
	snprintf(path, sizeof(path), "%s/cur/1700000000.M1P2.host:2,S", dir);
	write_file(path, "0123456789abc", 13);
	snprintf(path, sizeof(path), "%s/cur/1700000001.M1P2.host,S=1000,W=1010:2,RS", dir);
	write_file(path, "x", 1);
	snprintf(path, sizeof(path), "%s/new/.hidden,S=5000", dir);
	write_file(path, "x", 1);
	snprintf(path, sizeof(path), "%s/tmp/1700000002.M1P2.host,S=7000", dir);
	write_file(path, "x", 1);
	CHECK_INT("usage with cur/ files", (long long)size + 10 + 13 + 1000, maildir_usage(dir));
	/* a size that no file can have is not believed */
	snprintf(path, sizeof(path), "%s/cur/1700000003.M1P2.host,S=99999999999999999999:2,", dir);
	write_file(path, "xy", 2);
	CHECK_INT("usage with an absurd S=", (long long)size + 10 + 13 + 1000 + 2, maildir_usage(dir));
	/* nor do sizes that add up past what a long long holds */
	snprintf(path, sizeof(path), "%s/cur/1700000004.M1P2.host,S=9223372036854775807:2,", dir);
	write_file(path, "x", 1);
	snprintf(path, sizeof(path), "%s/cur/1700000005.M1P2.host,S=9223372036854775807:2,", dir);
	write_file(path, "x", 1);
	CHECK_INT("usage of two huge S=", INT64_MAX, maildir_usage(dir));

	snprintf(path, sizeof(path), "%s/nobody", root);
	CHECK_INT("usage of a missing Maildir", 0, maildir_usage(path));
	CHECK_INT("fsync_dir of a missing dir", -1, fsync_dir(path));
	CHECK_INT("fsync_dir", 0, fsync_dir(dir));
}

/* One file for many Maildirs (a mailing list's local members): staged
 * once without fsync, linked into the others' tmp/ with the same ,S= and
 * ,W=, synced once through an fd that outlives the renames, published. */
static void test_links(const char *root)
{
	static const char prefix[] = "Return-Path: <team-bounces@example.org>\n";
	static const char body[] = "Subject: post\n\nhello\n";
	char dirs[3][4096], src[4200], path[5200];
	struct maildir_staged st[3];
	struct stat a, b;
	size_t blen;
	int fd, lfd;

	snprintf(src, sizeof(src), "%s/post", root);
	write_file(src, body, sizeof(body) - 1);
	fd = open(src, O_RDONLY | O_CLOEXEC);
	REQUIRE(fd >= 0);
	for (int i = 0; i < 3; i++) {
		char login[16];
		snprintf(login, sizeof(login), "member%d", i);
		REQUIRE(maildir_path(root, login, dirs[i], sizeof(dirs[i]), 1) == 0);
	}
	CHECK_INT("stage unsynced", 0, maildir_stage_unsynced(dirs[0], prefix, sizeof(prefix) - 1, fd,
							      sizeof(body) - 1, 4, &st[0]));
	close(fd);
	for (int i = 1; i < 3; i++) {
		CHECK_INT("stage link", 0, maildir_stage_link(dirs[i], &st[0], &st[i]));
		CHECK_TRUE("a name of its own", strcmp(st[i].base, st[0].base) != 0);
		blen = strlen(st[i].base);
		CHECK_STR(st[i].name, st[0].name + strlen(st[0].base), st[i].name + blen);
	}
	CHECK_INT("sync once", 0, maildir_stage_sync(&st[0]));
	lfd = maildir_stage_open(&st[0]);
	CHECK_TRUE("open the shared file", lfd >= 0);
	for (int i = 0; i < 3; i++)
		CHECK_INT("publish", 0, maildir_publish(&st[i]));
	if (lfd >= 0) {
		CHECK_INT("fsync after the renames", 0, fsync(lfd));
		close(lfd);
	}
	snprintf(path, sizeof(path), "%s/new/%s", dirs[0], st[0].name);
	REQUIRE(stat(path, &a) == 0);
	CHECK_INT("three links", 3, a.st_nlink);
	CHECK_INT("S= is the size", 1, name_well_formed(st[0].name, (unsigned long long)a.st_size,
							 (unsigned long long)a.st_size + 4));
	snprintf(path, sizeof(path), "%s/new/%s", dirs[2], st[2].name);
	REQUIRE(stat(path, &b) == 0);
	CHECK_INT("the same file", 1, a.st_ino == b.st_ino);
	snprintf(path, sizeof(path), "%s/tmp", dirs[1]);
	CHECK_INT("tmp/ emptied", 0, count_entries(path));
	/* a copy taken back goes from its Maildir only */
	maildir_discard(&st[1]);
	snprintf(path, sizeof(path), "%s/new", dirs[1]);
	CHECK_INT("discarded", 0, count_entries(path));
	snprintf(path, sizeof(path), "%s/new/%s", dirs[0], st[0].name);
	REQUIRE(stat(path, &a) == 0);
	CHECK_INT("the others stay", 2, a.st_nlink);
	/* no tmp/ to link into: made */
	fd = open(src, O_RDONLY | O_CLOEXEC);
	REQUIRE(fd >= 0);
	REQUIRE(maildir_stage_unsynced(dirs[0], prefix, sizeof(prefix) - 1, fd, sizeof(body) - 1, 4,
				       &st[0]) == 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/tmp", dirs[1]);
	REQUIRE(rmdir(path) == 0);
	CHECK_INT("stage link without tmp/", 0, maildir_stage_link(dirs[1], &st[0], &st[1]));
	maildir_discard(&st[1]);
	maildir_discard(&st[0]);
	/* the first copy gone: nothing to link */
	CHECK_INT("stage link of nothing", -1, maildir_stage_link(dirs[2], &st[0], &st[2]));
}

static void make_dir(const char *base, const char *sub)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/%s", base, sub);
	REQUIRE(mkdir(path, 0700) == 0);
}

static void put_file(const char *base, const char *name, size_t len)
{
	char path[4200], buf[64];

	REQUIRE(len <= sizeof(buf));
	memset(buf, 'x', sizeof(buf));
	snprintf(path, sizeof(path), "%s/%s", base, name);
	write_file(path, buf, len);
}

/* Quotas see every folder (issue 22): IMAP clients keep Sent, Drafts and
 * Trash as Maildir++ folders, and Dovecot's Maildir++ quota counts their
 * new/ and cur/ with the inbox's. */
static void test_usage_folders(const char *mail_root)
{
	char dir[4200], path[4300];
	long long inbox;

	snprintf(dir, sizeof(dir), "%s/folders", mail_root);
	REQUIRE(maildir_path(mail_root, "folders", path, sizeof(path), 1) == 0);
	put_file(dir, "new/1700000000.M1P1.host,S=100,W=104", 1);
	put_file(dir, "cur/1700000000.M2P1.host:2,S", 7);
	inbox = 100 + 7;
	CHECK_INT("the inbox alone", inbox, maildir_usage(dir));

	/* .Sent: cur/ and new/ both count; tmp/ does not */
	make_dir(dir, ".Sent");
	make_dir(dir, ".Sent/cur");
	make_dir(dir, ".Sent/new");
	make_dir(dir, ".Sent/tmp");
	put_file(dir, ".Sent/cur/1700000001.M1P1.host,S=5000,W=5100:2,S", 1);
	put_file(dir, ".Sent/new/1700000001.M2P1.host,S=300", 1);
	put_file(dir, ".Sent/tmp/1700000001.M3P1.host,S=70000", 1);
	put_file(dir, ".Sent/dovecot-uidlist", 40);
	CHECK_INT("with .Sent", inbox + 5300, maildir_usage(dir));

	/* .Drafts, .Trash and a subfolder (.Archive.2024, Maildir++'s
	 * separator is the dot); a size from stat when the name has none */
	make_dir(dir, ".Drafts");
	make_dir(dir, ".Drafts/cur");
	put_file(dir, ".Drafts/cur/1700000002.M1P1.host:2,D", 11);
	make_dir(dir, ".Trash");
	make_dir(dir, ".Trash/cur");
	put_file(dir, ".Trash/cur/1700000003.M1P1.host,S=20:2,ST", 1);
	make_dir(dir, ".Archive.2024");
	make_dir(dir, ".Archive.2024/new");
	put_file(dir, ".Archive.2024/new/1700000004.M1P1.host,S=40", 1);
	CHECK_INT("with .Drafts, .Trash, .Archive.2024", inbox + 5300 + 11 + 20 + 40,
		  maildir_usage(dir));

	/* not folders: a dot file (POP3's lock), a directory without the
	 * dot, a link to a folder (counted once, as the folder itself), a
	 * folder's dot files, a folder without new/ or cur/ */
	put_file(dir, ".postage-pop3.lock", 0);
	put_file(dir, "dovecot-uidlist", 50);
	make_dir(dir, "Sent");
	make_dir(dir, "Sent/cur");
	put_file(dir, "Sent/cur/1700000005.M1P1.host,S=900", 1);
	snprintf(path, sizeof(path), "%s/.Link", dir);
	REQUIRE(symlink(".Sent", path) == 0);
	put_file(dir, ".Drafts/cur/.hidden,S=800", 1);
	make_dir(dir, ".Empty");
	CHECK_INT("what is not a folder", inbox + 5300 + 11 + 20 + 40, maildir_usage(dir));

	/* a folder's new/ or cur/ that is a file counts nothing */
	make_dir(dir, ".Odd");
	put_file(dir, ".Odd/cur", 9);
	CHECK_INT("a cur/ that is a file", inbox + 5300 + 11 + 20 + 40, maildir_usage(dir));

	/* POP3 (pop3-handler/maildrop.c) reads the inbox alone: the folders
	 * are no business of new/ and cur/ */
	snprintf(path, sizeof(path), "%s/cur", dir);
	CHECK_INT("the inbox's cur/ holds its own only", 1, count_entries(path));
}

/* At most MAILDIR_FOLDERS_MAX folders are read: the check runs at RCPT. */
static void test_usage_folders_bound(const char *mail_root)
{
	char dir[4200], path[4300], name[64];

	snprintf(dir, sizeof(dir), "%s/many", mail_root);
	REQUIRE(maildir_path(mail_root, "many", path, sizeof(path), 1) == 0);
	for (int i = 0; i < MAILDIR_FOLDERS_MAX + 5; i++) {
		snprintf(name, sizeof(name), ".F%d", i);
		make_dir(dir, name);
		snprintf(name, sizeof(name), ".F%d/cur", i);
		make_dir(dir, name);
		snprintf(name, sizeof(name), ".F%d/cur/1700000000.M%dP1.host,S=1:2,", i, i);
		put_file(dir, name, 1);
	}
	CHECK_INT("folders past the bound are not read", MAILDIR_FOLDERS_MAX, maildir_usage(dir));
}

static void test_unique(void)
{
	char a[256], b[256];

	maildir_unique_name(a, sizeof(a));
	maildir_unique_name(b, sizeof(b));
	CHECK_INT(a, 1, strcmp(a, b) != 0);
	CHECK_INT(a, 0, strchr(a, ',') != NULL || strchr(a, ':') != NULL || strchr(a, '/') != NULL);
}

int main(void)
{
	const char *root = testdir_make("maildir");
	char mail_root[4200];

	snprintf(mail_root, sizeof(mail_root), "%s/mail", root);
	test_name_size();
	test_name_uid();
	test_unique();
	test_path(mail_root);
	test_deliver(mail_root);
	test_links(mail_root);
	test_usage_folders(mail_root);
	test_usage_folders_bound(mail_root);
	return check_finish("maildir");
}
