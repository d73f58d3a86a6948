/* The whole POP3 session, fed from the fuzz input: the pop3-handler's
 * sources (all but main.c) are built into this target, and each input is
 * one connection from a local peer (fd 0 a memfd holding the input, fd 1
 * another memfd taking the replies).
 *
 * Before each input the mailbox "alice" (password "secret", sha512-crypt
 * at its least rounds so that a login is cheap) gets a fresh Maildir with
 * MESSAGES messages in new/ (one with dot-led lines, one without a final
 * LF, one with a long line). After it these must hold:
 *   - every reply is a well-formed line: "+OK" or "-ERR" (or "+ " for a
 *     SASL continuation), CRLF, no bare LF; no bare CR and at most 512
 *     octets except inside a message (whose own CRs pass); each multi-line reply (CAPA, LIST and UIDL
 *     without argument, RETR, TOP, AUTH without argument) is dot-stuffed
 *     and ends with ".". The replies are matched to the input's command
 *     lines as the session reads them, one reply per line;
 *   - the number of messages left in the Maildir is MESSAGES minus the
 *     DELEs answered +OK (cleared by RSET) when QUIT in the TRANSACTION
 *     state was answered +OK, else MESSAGES: nothing else deletes;
 *   - the maildrop's lock is free again, no database transaction is
 *     open, no file descriptor leaked.
 *
 * Each input runs in this process (libFuzzer sees only its own coverage),
 * so what a session leaves (auth_failures rows, the Maildir) is reset.
 * Files go under $POSTAGE_FUZZ_DIR, else /dev/shm, else $TMPDIR. */
#include "fuzz.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "../../pop3-handler/session.h"

#define MESSAGES 4

static struct session session; /* large: keep it off the stack */
static char maildir[1200];
static int memfd = -1, replyfd = -1, null_fd = -1;
static int last_changes;

/* The settings, the domain and the mailboxes (password "secret"; carol
 * disabled), and an empty mail_root. */
static void make_world(void)
{
	char path[1200], sql[4096];
	const char *workdir, *hash = fuzz_password_hash("secret");

	snprintf(sql, sizeof(sql),
		 "INSERT INTO settings VALUES ('hostname', 'pop.fuzz.example'),"
		 " ('auth_failure_delay_ms', '0');"
		 "INSERT INTO domains VALUES ('example.org');"
		 "INSERT INTO mailboxes (login, password, quota_bytes, enabled) VALUES"
		 " ('alice', '%s', NULL, 1), ('carol', '%s', NULL, 0);"
		 "INSERT INTO addresses VALUES ('alice@example.org', 'alice'),"
		 " ('carol@example.org', 'carol');",
		 hash, hash);
	workdir = fuzz_world(sql);
	snprintf(path, sizeof(path), "%s/mail", workdir);
	if (mkdir(path, 0700) < 0)
		fuzz_die(path);
	snprintf(maildir, sizeof(maildir), "%s/mail/alice", workdir);
}

static void write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		fuzz_die(path);
	close(fd);
}

/* A fresh Maildir: MESSAGES messages in new/, nothing in cur/ or tmp/. */
static void make_maildir(void)
{
	static const char *const bodies[MESSAGES] = {
		"From: bob@example.org\nSubject: one\n\nHello.\n",
		"From: bob@example.org\nSubject: dots\n\n.\n..\n.leading dot\nend\n.",
		"Subject: no final newline\n\nline one\nline two",
		"Subject: long\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
		"\r\nbody with a CR\rin it\n\n\n",
	};
	char path[1400];

	fuzz_remove_tree(maildir);
	mkdir(maildir, 0700);
	for (const char *const *sub = (const char *const[]){ "new", "cur", "tmp", NULL }; *sub; sub++) {
		snprintf(path, sizeof(path), "%s/%s", maildir, *sub);
		if (mkdir(path, 0700) < 0)
			fuzz_die(path);
	}
	for (int i = 0; i < MESSAGES; i++) {
		/* ,S= and ,W= on two of them; the others are measured */
		if (i % 2 == 0) {
			size_t len = strlen(bodies[i]), lfs = 0;
			for (size_t k = 0; k < len; k++)
				lfs += bodies[i][k] == '\n';
			snprintf(path, sizeof(path), "%s/new/170000000%d.M%dP1.fuzz,S=%zu,W=%zu", maildir,
				 i, i, len, len + lfs);
		} else {
			snprintf(path, sizeof(path), "%s/new/170000000%d.M%dP1.fuzz", maildir, i, i);
		}
		write_file(path, bodies[i]);
	}
}

static size_t count_dir(const char *sub)
{
	char path[1400];
	DIR *d;
	struct dirent *e;
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/%s", maildir, sub);
	d = opendir(path);
	if (!d)
		return 0;
	while ((e = readdir(d)) != NULL)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	make_world();
	signal(SIGPIPE, SIG_IGN);
	log_init("postage-pop3-fuzz");

	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	memfd = memfd_create("pop3-input", MFD_CLOEXEC);
	replyfd = memfd_create("pop3-replies", MFD_CLOEXEC);
	if (null_fd < 0 || memfd < 0 || replyfd < 0)
		fuzz_die("open");
	last_changes = fuzz_sessions_ready(null_fd);
	return 0;
}

/* ---- checking the replies against the commands ----------------------- */

struct cursor {
	const char *p, *end;
};

static void broken(const char *what, const char *p, size_t len)
{
	fuzz_broken("fuzz-pop3-session", what, p, len);
}

/* The next reply line (with its CRLF) in *line, *len; 0 at the end. */
static int next_reply_line(struct cursor *r, const char **line, size_t *len, int in_message)
{
	const char *lf;

	if (r->p >= r->end)
		return 0;
	lf = memchr(r->p, '\n', (size_t)(r->end - r->p));
	if (!lf)
		broken("reply without CRLF", r->p, (size_t)(r->end - r->p));
	*line = r->p;
	*len = (size_t)(lf - r->p) + 1;
	r->p = lf + 1;
	if (*len < 2 || (*line)[*len - 2] != '\r')
		broken("reply line without CRLF", *line, *len);
	/* a message's own CRs pass as they are: only outside one is a bare
	 * CR wrong */
	if (!in_message) {
		if (memchr(*line, '\r', *len - 2))
			broken("bare CR in a reply line", *line, *len);
		if (*len > 512)
			broken("reply line over 512 octets", *line, *len);
		for (size_t i = 0; i < *len - 2; i++) {
			unsigned char c = (unsigned char)(*line)[i];
			if (c < 0x20 || c == 0x7f)
				broken("control character in a reply", *line, *len);
		}
	}
	return 1;
}

/* The body of a multi-line reply, up to and with its ".". */
static void multi_line_body(struct cursor *r, int is_message)
{
	const char *line;
	size_t len;

	while (next_reply_line(r, &line, &len, is_message)) {
		if (line[0] != '.')
			continue;
		if (len == 3)
			return; /* ".\r\n" */
		if (line[1] != '.')
			broken("a line starting with '.' is not dot-stuffed", line, len);
	}
	broken("multi-line reply without its final '.'", "", 0);
}

/* The input's next command line as io_read_line (into a buffer of cap
 * octets) splits it: *toolong set for a line it refuses. 0 at the end. */
static int next_command(struct cursor *in, char *line, size_t cap, int *toolong)
{
	const char *start = in->p, *lf;
	size_t len;

	if (in->p >= in->end)
		return 0;
	lf = memchr(start, '\n', (size_t)(in->end - start));
	if (!lf)
		return 0; /* the session reads no line without its LF */
	len = (size_t)(lf - start);
	in->p = lf + 1;
	/* io_read_line takes cap - 1 octets with the CR and LF */
	*toolong = len + 1 > cap - 1;
	if (len > 0 && start[len - 1] == '\r')
		len--;
	if (*toolong)
		len = 0;
	memcpy(line, start, len);
	line[len] = '\0';
	return 1;
}

static int arg_empty(const char *arg)
{
	while (*arg == ' ')
		arg++;
	return *arg == '\0';
}

struct outcome {
	int logged_in;
	int dele_ok;
	int quit_commit; /* QUIT in TRANSACTION answered +OK */
};

static void check_session(const uint8_t *data, size_t size, struct outcome *o)
{
	static char buf[1 << 20];
	char line[POP3_AUTH_LINE_MAX + 2];
	struct cursor r, in = { (const char *)data, (const char *)data + size };
	ssize_t n = pread(replyfd, buf, sizeof(buf), 0);
	const char *rl;
	size_t rlen;
	int toolong;

	if (n < 0)
		fuzz_die("pread replies");
	r.p = buf;
	r.end = buf + n;
	if (!next_reply_line(&r, &rl, &rlen, 0) || strncmp(rl, "+OK ", 4) != 0)
		broken("no +OK greeting", buf, (size_t)n);
	while (next_reply_line(&r, &rl, &rlen, 0)) {
		char verb[8] = "";
		const char *arg = "";
		size_t v = 0;
		int ok, multi = 0, message = 0;

		if (!next_command(&in, line, POP3_COMMAND_LINE_MAX + 1, &toolong)) {
			/* replies after the input ran out: only the bad-command
			 * limit's, and only once */
			if (strncmp(rl, "-ERR ", 5) != 0 || r.p != r.end)
				broken("reply with no command for it", rl, rlen);
			break;
		}
		if (!toolong) {
			while (line[v] && line[v] != ' ' && v + 1 < sizeof(verb)) {
				verb[v] = (char)toupper((unsigned char)line[v]);
				v++;
			}
			verb[v] = '\0';
			arg = line[v] == ' ' ? line + v + 1 : line + v;
		}
		if (strncmp(rl, "+ ", 2) == 0 && rlen == 4 && strcmp(verb, "AUTH") == 0) {
			/* SASL continuation: the next line is the response */
			if (!next_command(&in, line, POP3_AUTH_LINE_MAX + 1, &toolong) ||
			    !next_reply_line(&r, &rl, &rlen, 0))
				break;
		}
		ok = strncmp(rl, "+OK", 3) == 0 && (rlen == 5 || rl[3] == ' ');
		if (!ok && strncmp(rl, "-ERR", 4) != 0)
			broken("reply neither +OK nor -ERR", rl, rlen);
		if (!ok && rlen > 6 && rl[4] != ' ')
			broken("-ERR without a space", rl, rlen);
		if (ok) {
			if (strcmp(verb, "CAPA") == 0 || strcmp(verb, "AUTH") == 0 ||
			    ((strcmp(verb, "LIST") == 0 || strcmp(verb, "UIDL") == 0) && arg_empty(arg)))
				multi = 1;
			if (strcmp(verb, "RETR") == 0 || strcmp(verb, "TOP") == 0)
				multi = message = 1;
			if (strcmp(verb, "PASS") == 0)
				o->logged_in = 1;
			if (o->logged_in && strcmp(verb, "DELE") == 0)
				o->dele_ok++;
			if (o->logged_in && strcmp(verb, "RSET") == 0)
				o->dele_ok = 0;
			if (o->logged_in && strcmp(verb, "QUIT") == 0)
				o->quit_commit = 1;
		}
		if (multi)
			multi_line_body(&r, message);
	}
}

/* ---- one session -------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct outcome o = { 0, 0, 0 };
	char path[1400];
	size_t left, expect;
	int fd_before, lock;
	sqlite3 *db = db_handle();

	if (size > 65536)
		return 0;
	make_maildir();
	fd_before = fuzz_lowest_free_fd(null_fd);

	if (ftruncate(memfd, 0) < 0 || pwrite(memfd, data, size, 0) != (ssize_t)size ||
	    lseek(memfd, 0, SEEK_SET) < 0 || dup2(memfd, 0) < 0)
		fuzz_die("memfd");
	if (ftruncate(replyfd, 0) < 0 || lseek(replyfd, 0, SEEK_SET) < 0 || dup2(replyfd, 1) < 0)
		fuzz_die("reply memfd");

	memset(&session, 0, sizeof(session));
	session_run(&session);
	dup2(null_fd, 0);
	dup2(null_fd, 1);

	check_session(data, size, &o);

	/* only DELE then QUIT deletes */
	left = count_dir("cur") + count_dir("new");
	expect = o.quit_commit ? MESSAGES - (size_t)o.dele_ok : MESSAGES;
	if (left != expect) {
		fprintf(stderr,
			"fuzz-pop3-session: %zu messages left, expected %zu (DELE +OK %d, QUIT +OK "
			"after login %d)\n",
			left, expect, o.dele_ok, o.quit_commit);
		abort();
	}
	FUZZ_ASSERT(count_dir("tmp") == 0);

	/* the lock is free */
	snprintf(path, sizeof(path), "%s/%s", maildir, MAILDROP_LOCK_NAME);
	lock = open(path, O_RDWR | O_CLOEXEC);
	if (lock >= 0) {
		FUZZ_ASSERT(flock(lock, LOCK_EX | LOCK_NB) == 0);
		close(lock);
	}
	FUZZ_ASSERT(session.drop.lock_fd < 0 && session.drop.cur_fd < 0);

	if (db) {
		FUZZ_ASSERT(sqlite3_get_autocommit(db));
		if (sqlite3_total_changes(db) != last_changes) {
			fuzz_exec_sql(db, "DELETE FROM auth_failures; DELETE FROM pop_logins;");
			last_changes = sqlite3_total_changes(db);
		}
	}
	if (fuzz_lowest_free_fd(null_fd) != fd_before) {
		fprintf(stderr, "fuzz-pop3-session: file descriptor leaked (next free fd %d, was %d)\n",
			fuzz_lowest_free_fd(null_fd), fd_before);
		abort();
	}
	return 0;
}
