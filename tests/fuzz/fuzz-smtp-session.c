/* The whole SMTP session, fed from the fuzz input: the smtp-handler's
 * sources (all but main.c) are built into this target, and each input is
 * one connection. The first byte picks who connects ('0' to '4', other
 * bytes modulo 5):
 *   0  a local peer (fd 0 is a memfd holding the input), port 25
 *   1  127.0.0.1, which is in relay_networks (so AUTH is offered), port 25
 *   2  127.0.0.1 on the submission port (MAIL needs AUTH)
 *   3  127.0.0.2, which has a recent POP3 login (POP-before-SMTP)
 *   4  192.0.2.1, an outside client, port 25: the inbound SPF/DMARC checks
 *      run (their DNS finds no route out of the namespace: temperror)
 * For 1-4, fd 0 is the server side of a loopback TCP connection whose
 * client wrote the input and half-closed. Replies (fd 1) go to another
 * memfd and are checked: each a well-formed reply line (RFC 5321 4.2: a
 * code, '-' or ' ', text without control characters, CRLF) of at most 512
 * octets (4.5.3.1.5), a multi-line reply completed with its code. What
 * the session left on disk is checked too: every delivered message's size
 * is its name's ,S= and its size plus LFs its ,W=; no Maildir tmp/ or
 * spool tmp/ keeps a file; each queued file has its row, of its size.
 *
 * Each input runs in this process, not in a fork: libFuzzer only sees the
 * coverage of its own process. So the state a session leaves is reset
 * after each run (the session struct, the tables sessions write, the
 * delivered files), and what must never outlive a session is checked:
 * an open database transaction (it would hold the write lock while the
 * next client talks) and a leaked file descriptor.
 *
 * LLVMFuzzerInitialize moves the process into a private network namespace
 * with only loopback up and 192.0.2.1 added to it (it refuses to run
 * otherwise), so that nothing a session looks up (DNS for SPF, DKIM,
 * DMARC) can leave the machine; then it makes the database once, from
 * schema/schema.sql, and names it in $POSTAGE_DB. Files go under
 * $POSTAGE_FUZZ_DIR, else /dev/shm (cheap fsync), else $TMPDIR. */
#include "fuzz.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "maildir.h"
#include "session.h"

/* Inputs larger than this go through the memfd only: a loopback socket
 * must take the whole input before the session starts reading. */
#define SOCKET_INPUT_MAX 32768

static struct session session; /* large: keep it off the stack */
static const char *workdir;
static int memfd = -1, replyfd = -1, listen_fd = -1, null_fd = -1;
static struct sockaddr_in listen_addr;
static int last_changes;

static void write_proc(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		fuzz_die(path);
	close(fd);
}

/* A private network namespace with loopback up and 192.0.2.1 (TEST-NET-1,
 * the outside client) on it, or exit. */
static void isolate_network(void)
{
	struct ifreq ifr;
	int s;

	if (unshare(CLONE_NEWNET) < 0) {
		char map[64];
		unsigned uid = (unsigned)getuid(), gid = (unsigned)getgid();

		if (unshare(CLONE_NEWUSER | CLONE_NEWNET) < 0)
			fuzz_die("cannot make a private network namespace (needs root or user "
				 "namespaces); refusing to fuzz sessions that could reach the network");
		write_proc("/proc/self/setgroups", "deny");
		snprintf(map, sizeof(map), "0 %u 1", uid);
		write_proc("/proc/self/uid_map", map);
		snprintf(map, sizeof(map), "0 %u 1", gid);
		write_proc("/proc/self/gid_map", map);
	}
	s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		fuzz_die("socket");
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
		fuzz_die("SIOCGIFFLAGS lo");
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
		fuzz_die("SIOCSIFFLAGS lo");
	{
		struct sockaddr_in *a = (struct sockaddr_in *)&ifr.ifr_addr;

		memset(&ifr, 0, sizeof(ifr));
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo:1");
		a->sin_family = AF_INET;
		inet_pton(AF_INET, "192.0.2.1", &a->sin_addr);
		if (ioctl(s, SIOCSIFADDR, &ifr) < 0)
			fuzz_die("SIOCSIFADDR lo:1 192.0.2.1");
		inet_pton(AF_INET, "255.255.255.255", &a->sin_addr);
		if (ioctl(s, SIOCSIFNETMASK, &ifr) < 0)
			fuzz_die("SIOCSIFNETMASK lo:1");
	}
	close(s);
}

static int remove_file(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_F)
		unlink(path);
	return 0;
}

/* The settings, domains, mailboxes (password "secret"), addresses,
 * forwards, mailing lists, relay network and POP-before-SMTP login the
 * scenarios use. */
static void make_world(void)
{
	char sql[8192];
	const char *hash = fuzz_password_hash("secret");

	snprintf(sql, sizeof(sql),
		 "INSERT INTO settings VALUES ('hostname', 'mx.fuzz.example'),"
		 " ('max_message_bytes', '8000'), ('pop_before_smtp_minutes', '1000000'),"
		 " ('max_messages_per_hour_per_login', '50'), ('received_show_login', '1'),"
		 " ('auth_failure_delay_ms', '0');"
		 "INSERT INTO domains VALUES ('example.org'), ('example.net'),"
		 " ('b\xc3\xbc" "cher.example'), ('xn--bcher-kva.example');"
		 "INSERT INTO mailboxes (login, password, quota_bytes, enabled) VALUES"
		 " ('alice', '%s', NULL, 1), ('bob', '%s', 3000, 1), ('carol', '%s', NULL, 0),"
		 " ('dave', '%s', 0, 1);"
		 "INSERT INTO addresses VALUES ('alice@example.org', 'alice'),"
		 " ('postmaster@example.org', 'alice'), ('bob@example.org', 'bob'),"
		 " ('carol@example.org', 'carol'), ('dave@example.org', 'dave'),"
		 " ('@example.net', 'bob'), ('j\xc3\xb6rg@b\xc3\xbc" "cher.example', 'alice'),"
		 " ('\"a b\"@example.org', 'alice');"
		 "INSERT INTO forwards VALUES ('list@example.org', 'alice@example.org'),"
		 " ('list@example.org', 'bob@example.org'), ('list@example.org', 'ext@remote.example'),"
		 " ('fwd@example.org', 'someone@remote.example'),"
		 " ('loop1@example.org', 'loop2@example.org'), ('loop2@example.org', 'loop1@example.org');"
		 "INSERT INTO lists (address, owner, archive, subject_prefix) VALUES"
		 " ('team@example.org', 'alice@example.org', 'dave', '[team]');"
		 "INSERT INTO lists (address, owner, posting) VALUES"
		 " ('news@example.org', 'alice@example.org', 'announce'),"
		 " ('mod@example.org', 'owner@remote.example', 'moderated');"
		 "INSERT INTO list_members (list, address) VALUES ('team@example.org', 'alice@example.org'),"
		 " ('team@example.org', 'ext@remote.example'), ('team@example.org', 'news@example.org'),"
		 " ('news@example.org', 'bob@example.org'), ('news@example.org', 'team@example.org'),"
		 " ('mod@example.org', 'sender@remote.example');"
		 "INSERT INTO relay_networks VALUES ('127.0.0.1/32'), ('2001:db8::/32');"
		 "INSERT INTO pop_logins VALUES ('127.0.0.2', 'alice', %lld);",
		 hash, hash, hash, hash, (long long)time(NULL));
	workdir = fuzz_world(sql);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	socklen_t len = sizeof(listen_addr);

	(void)argc;
	(void)argv;
	isolate_network();
	make_world();
	smtp_error_delay_ms = 0; /* the limits still hold; only the waiting goes */
	signal(SIGPIPE, SIG_IGN);
	log_init("postage-smtp-fuzz");

	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	memfd = memfd_create("smtp-input", MFD_CLOEXEC);
	replyfd = memfd_create("smtp-replies", MFD_CLOEXEC);
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (null_fd < 0 || memfd < 0 || replyfd < 0 || listen_fd < 0)
		fuzz_die("open");
	memset(&listen_addr, 0, sizeof(listen_addr));
	listen_addr.sin_family = AF_INET;
	listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(listen_fd, (struct sockaddr *)&listen_addr, sizeof(listen_addr)) < 0 ||
	    listen(listen_fd, 4) < 0 ||
	    getsockname(listen_fd, (struct sockaddr *)&listen_addr, &len) < 0)
		fuzz_die("listen on 127.0.0.1");
	last_changes = fuzz_sessions_ready(null_fd);
	return 0;
}

/* A loopback connection from source (127.0.0.x) carrying the input; the
 * server side is returned, the client in *client. */
static int connect_with(const char *source, const uint8_t *data, size_t len, int *client)
{
	struct sockaddr_in from;
	int c, s, big = 1 << 18;
	size_t off = 0;

	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0)
		fuzz_die("socket");
	setsockopt(c, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	memset(&from, 0, sizeof(from));
	from.sin_family = AF_INET;
	inet_pton(AF_INET, source, &from.sin_addr);
	if (bind(c, (struct sockaddr *)&from, sizeof(from)) < 0)
		fuzz_die("bind to loopback");
	/* libFuzzer's timeout timer (SIGALRM) may interrupt: the connection
	 * then completes on its own */
	if (connect(c, (struct sockaddr *)&listen_addr, sizeof(listen_addr)) < 0) {
		struct pollfd p = { .fd = c, .events = POLLOUT };
		int err = 0;
		socklen_t elen = sizeof(err);

		if (errno != EINTR && errno != EINPROGRESS)
			fuzz_die("connect over loopback");
		while (poll(&p, 1, 5000) < 0 && errno == EINTR)
			;
		if (getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &elen) < 0 || err != 0)
			fuzz_die("connect over loopback");
	}
	while ((s = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC)) < 0)
		if (errno != EINTR)
			fuzz_die("accept");
	while (off < len) {
		ssize_t n = write(c, data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			fuzz_die("write to loopback");
		off += (size_t)n;
	}
	shutdown(c, SHUT_WR);
	*client = c;
	return s;
}

static void show_reply(const char *what, const char *p, size_t len)
{
	fuzz_broken("fuzz-smtp-session", what, p, len);
}

/* Every reply line: Reply-code [ ("-" / SP) textstring ] CRLF, at most
 * 512 octets, text of TAB, printable ASCII or (SMTPUTF8, RFC 6531) UTF-8
 * octets; the lines of a multi-line reply share their code and the last
 * has SP. */
static void check_replies(void)
{
	static char buf[1 << 20];
	off_t end = lseek(replyfd, 0, SEEK_CUR);
	ssize_t len;
	size_t off = 0;
	char open_code[4] = "";

	if (end <= 0)
		return;
	len = pread(replyfd, buf, sizeof(buf), 0);
	if (len < 0)
		fuzz_die("pread replies");
	while (off < (size_t)len) {
		const char *p = buf + off;
		const char *lf = memchr(p, '\n', (size_t)len - off);
		size_t l;

		if (!lf)
			show_reply("reply without CRLF", p, (size_t)len - off);
		l = (size_t)(lf - p) + 1;
		if (l < 5 || p[l - 2] != '\r')
			show_reply("reply line without CRLF", p, l);
		if (l > 512)
			show_reply("reply line over 512 octets", p, l);
		if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' ||
		    (p[3] != ' ' && p[3] != '-' && p[3] != '\r'))
			show_reply("malformed reply code", p, l);
		for (size_t i = 4; i < l - 2; i++) {
			unsigned char c = (unsigned char)p[i];
			if ((c < 0x20 && c != '\t') || c == 0x7f)
				show_reply("control character in a reply", p, l);
		}
		if (open_code[0] && memcmp(open_code, p, 3) != 0)
			show_reply("multi-line reply changes its code", p, l);
		if (p[3] == '-')
			memcpy(open_code, p, 3);
		else
			open_code[0] = '\0';
		off += l;
	}
	if (open_code[0])
		show_reply("multi-line reply left open", buf, (size_t)len);
}

static void broken_file(const char *what, const char *dir, const char *name)
{
	fprintf(stderr, "fuzz-smtp-session: %s: %s/%s\n", what, dir, name);
	abort();
}

/* Size and LF count of a file. */
static void measure(const char *path, unsigned long long *size, unsigned long long *lfs)
{
	static char buf[65536];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	*size = *lfs = 0;
	if (fd < 0)
		fuzz_die(path);
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		*size += (unsigned long long)n;
		for (ssize_t i = 0; i < n; i++)
			*lfs += buf[i] == '\n';
	}
	close(fd);
}

static int queued_size(const char *id, long long *size)
{
	sqlite3_stmt *st;
	int found = 0;

	if (sqlite3_prepare_v2(db_handle(), "SELECT size FROM queue_messages WHERE id = ?1", -1, &st,
			       NULL) != SQLITE_OK)
		fuzz_die("prepare");
	sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		*size = sqlite3_column_int64(st, 0);
		found = 1;
	}
	sqlite3_finalize(st);
	return found;
}

/* Checks the files in dir with check(dir, name); a missing dir is empty. */
static void each_file(const char *dir, void (*check)(const char *dir, const char *name))
{
	DIR *d = opendir(dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			check(dir, e->d_name);
	closedir(d);
}

static void no_file_here(const char *dir, const char *name)
{
	broken_file("left behind", dir, name);
}

static void delivered_file(const char *dir, const char *name)
{
	char path[2400];
	unsigned long long size, lfs, s = 0, w = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	measure(path, &size, &lfs);
	if (!maildir_name_size(name, 'S', &s) || !maildir_name_size(name, 'W', &w))
		broken_file("delivered without ,S= and ,W=", dir, name);
	if (s != size)
		broken_file("size is not ,S=", dir, name);
	if (w != size + lfs)
		broken_file("size plus LFs is not ,W=", dir, name);
}

static void queued_file(const char *dir, const char *name)
{
	char path[2400];
	unsigned long long size, lfs;
	long long row;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (!queued_size(name, &row))
		broken_file("queue file without a queue_messages row", dir, name);
	measure(path, &size, &lfs);
	if ((unsigned long long)row != size)
		broken_file("queue file of another size than its row", dir, name);
}

static void mailbox_dir(const char *root, const char *login)
{
	char dir[2400];

	snprintf(dir, sizeof(dir), "%s/%s/new", root, login);
	each_file(dir, delivered_file);
	snprintf(dir, sizeof(dir), "%s/%s/tmp", root, login);
	each_file(dir, no_file_here);
}

/* What the session wrote is whole and consistent. */
static void check_disk(void)
{
	char dir[1200];
	sqlite3_stmt *st;

	snprintf(dir, sizeof(dir), "%s/mail", workdir);
	each_file(dir, mailbox_dir);
	snprintf(dir, sizeof(dir), "%s/spool/tmp", workdir);
	each_file(dir, no_file_here);
	snprintf(dir, sizeof(dir), "%s/spool/queue", workdir);
	each_file(dir, queued_file);
	/* and each row has its file */
	if (sqlite3_prepare_v2(db_handle(), "SELECT id FROM queue_messages", -1, &st, NULL) != SQLITE_OK)
		fuzz_die("prepare");
	while (sqlite3_step(st) == SQLITE_ROW) {
		char path[1400];
		struct stat sb;

		snprintf(path, sizeof(path), "%s/%s", dir, (const char *)sqlite3_column_text(st, 0));
		if (stat(path, &sb) < 0)
			broken_file("queue_messages row without its file", dir,
				    (const char *)sqlite3_column_text(st, 0));
	}
	sqlite3_finalize(st);
}

/* Puts the world back as it was before the session (which began with
 * fd_before as the lowest free descriptor). */
static void after_session(int fd_before)
{
	sqlite3 *db = db_handle();
	char dir[1200];
	int probe;

	if (db) {
		/* a session must never end inside a transaction */
		FUZZ_ASSERT(sqlite3_get_autocommit(db));
		check_disk();
		if (sqlite3_total_changes(db) != last_changes) {
			fuzz_exec_sql(db, "DELETE FROM queue_recipients; DELETE FROM queue_messages;"
					  "DELETE FROM auth_failures; DELETE FROM send_counts;");
			last_changes = sqlite3_total_changes(db);
		}
	}
	snprintf(dir, sizeof(dir), "%s/mail", workdir);
	nftw(dir, remove_file, 16, FTW_PHYS);
	snprintf(dir, sizeof(dir), "%s/spool", workdir);
	nftw(dir, remove_file, 16, FTW_PHYS);

	probe = fuzz_lowest_free_fd(null_fd);
	if (probe != fd_before) {
		fprintf(stderr, "fuzz-smtp-session: file descriptor leaked (next free fd %d, was %d)\n",
			probe, fd_before);
		for (int fd = fd_before; fd < probe; fd++) {
			char link[64], target[512];
			ssize_t n;

			snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
			n = readlink(link, target, sizeof(target) - 1);
			target[n > 0 ? n : 0] = '\0';
			fprintf(stderr, "  fd %d: %s\n", fd, target);
		}
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int scenario, client = -1, server = -1, fd_before;

	if (size < 1 || size > 65536)
		return 0;
	fd_before = fuzz_lowest_free_fd(null_fd);
	scenario = data[0] >= '0' && data[0] <= '4' ? data[0] - '0' : data[0] % 5;
	data++;
	size--;
	if (size > SOCKET_INPUT_MAX)
		scenario = 0;

	if (scenario == 0) {
		if (ftruncate(memfd, 0) < 0 || pwrite(memfd, data, size, 0) != (ssize_t)size ||
		    lseek(memfd, 0, SEEK_SET) < 0 || dup2(memfd, 0) < 0)
			fuzz_die("memfd");
	} else {
		static const char *const sources[] = { "", "127.0.0.1", "127.0.0.1", "127.0.0.2",
							"192.0.2.1" };

		server = connect_with(sources[scenario], data, size, &client);
		if (dup2(server, 0) < 0)
			fuzz_die("dup2");
	}

	if (ftruncate(replyfd, 0) < 0 || lseek(replyfd, 0, SEEK_SET) < 0 || dup2(replyfd, 1) < 0)
		fuzz_die("reply memfd");

	memset(&session, 0, sizeof(session));
	session.mode = scenario == 2 ? MODE_SUBMISSION : MODE_MX;
	session_run(&session);

	dup2(null_fd, 0);
	dup2(null_fd, 1);
	check_replies();
	if (server >= 0)
		close(server);
	if (client >= 0)
		close(client);
	after_session(fd_before);
	return 0;
}
