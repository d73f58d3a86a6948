/* The queue runner's SMTP client reading what a remote server says: the
 * input is the server's side of the conversation, read through a pipe.
 * queue/client.c is included here (its reply reader, read_reply, and the
 * EHLO parser are static), so the target links its own copy of it.
 *
 * The first byte picks the run (other bytes are taken modulo 2):
 *   '0'  read_reply over and over until the input is used up: every reply
 *        has a code of 200 to 599, at most CLIENT_REPLY_LINES_MAX lines of
 *        less than CLIENT_REPLY_LINE_MAX octets each, and a text of
 *        printable ASCII within CLIENT_REPLY_TEXT_MAX octets starting with
 *        the code;
 *   '1'  a whole delivery: greeting, EHLO (HELO when refused), then one
 *        or two transactions of one to three recipients (MAIL, RCPT, DATA,
 *        with PIPELINING when the EHLO reply offers it) and QUIT; the
 *        second byte's bits (not part of the conversation) pick the recipients and the message's flags.
 *        Each recipient's result is filled, its RFC 3463 status of the
 *        class its outcome says (2 sent, 4 deferred, 5 failed), its text
 *        printable.
 * No descriptor may leak. */
#include "address.h"
#include "fuzz.h"

#include "../../queue/client.c"

#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>

static int null_fd = -1, msg_fd = -1;

static void die(const char *what)
{
	fprintf(stderr, "fuzz-queue-reply: %s: %s\n", what, strerror(errno));
	exit(1);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char msg[] = "From: a@example.org\nSubject: x\n\n.leading dot\nbody\n\xc3\xa9t\xc3\xa9\n";

	(void)argc;
	(void)argv;
	setenv("POSTAGE_LOG_FILE", "/dev/null", 0);
	signal(SIGPIPE, SIG_IGN);
	log_init("postage-queue-fuzz");
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	msg_fd = memfd_create("queue-message", MFD_CLOEXEC);
	if (null_fd < 0 || msg_fd < 0 || write(msg_fd, msg, sizeof(msg) - 1) != sizeof(msg) - 1)
		die("open");
	return 0;
}

static void check_printable(const char *what, const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);

	if (n >= cap) {
		fprintf(stderr, "fuzz-queue-reply: %s not terminated within %zu octets\n", what, cap);
		abort();
	}
	/* Printable ASCII, and well-formed UTF-8 (a server's words in its
	 * own language go into a bounce's global delivery status whole):
	 * never a control byte or a broken sequence. */
	for (size_t i = 0; i < n;) {
		const unsigned char *u = (const unsigned char *)s + i;
		size_t k = *u >= 0x80 ? utf8_seq(u, n - i) : (*u >= 0x20 && *u < 0x7f);

		if (k == 0) {
			fprintf(stderr, "fuzz-queue-reply: %s has octet 0x%02x: \"%s\"\n", what, *u, s);
			abort();
		}
		i += k;
	}
}

static int lines_seen;

static void count_line(struct smtp_client *c, int index, const char *text)
{
	(void)c;
	FUZZ_ASSERT(index == lines_seen);
	FUZZ_ASSERT(index < CLIENT_REPLY_LINES_MAX);
	FUZZ_ASSERT(strlen(text) < CLIENT_REPLY_LINE_MAX);
	lines_seen++;
}

static void check_reply(const struct reply *r)
{
	char code[8];

	FUZZ_ASSERT(r->code >= 200 && r->code <= 599);
	check_printable("reply text", r->text, sizeof(r->text));
	snprintf(code, sizeof(code), "%d", r->code);
	FUZZ_ASSERT(strncmp(r->text, code, 3) == 0 && (r->text[3] == '\0' || r->text[3] == ' '));
}

static void check_status(const struct status_text *st)
{
	static const char cls[] = { '2', '4', '5' };
	const char *p = st->status;

	if (st->outcome != OUTCOME_SENT && st->outcome != OUTCOME_TEMP && st->outcome != OUTCOME_PERM) {
		fprintf(stderr, "fuzz-queue-reply: a recipient without a result\n");
		abort();
	}
	check_printable("status", st->status, sizeof(st->status));
	check_printable("status text", st->text, sizeof(st->text));
	check_printable("command", st->command, sizeof(st->command));
	check_printable("mta", st->mta, sizeof(st->mta));
	/* class "." 1*3digit "." 1*3digit (RFC 3463 2) */
	if (p[0] != cls[st->outcome] || p[1] != '.' || !isdigit((unsigned char)p[2])) {
		fprintf(stderr, "fuzz-queue-reply: status %s for outcome %d (\"%s\")\n", p, st->outcome,
			st->text);
		abort();
	}
	p += 2;
	for (int part = 0; part < 2; part++) {
		int digits = 0;
		while (isdigit((unsigned char)*p)) {
			p++;
			digits++;
		}
		FUZZ_ASSERT(digits >= 1 && digits <= 3);
		FUZZ_ASSERT(*p == (part == 0 ? '.' : '\0'));
		p++;
	}
	FUZZ_ASSERT(st->text[0] != '\0');
}

static void conversation(struct smtp_client *c, uint8_t flags)
{
	static const char *const all[] = { "bob@remote.example", "j\xc3\xb6rg@remote.example",
					   "carol@remote.example" };
	struct status_text result[3], why;
	struct reply r;
	const char *rcpts[3];
	struct outbound m = {
		.id = "fuzzid",
		.sender = (flags & 1) ? "al\xc3\xaf" "ce@example.org" : "alice@example.org",
		.fd = msg_fd,
		.body_8bit = (flags & 2) != 0,
		.smtputf8 = (flags & 4) != 0,
	};
	size_t n = 1 + (size_t)((flags >> 3) & 1) + (size_t)((flags >> 4) & 1);
	struct stat sb;

	if (fstat(msg_fd, &sb) < 0)
		die("fstat");
	m.size = (unsigned long long)sb.st_size;
	m.wire_size = m.size + 8;
	for (size_t i = 0; i < n; i++)
		rcpts[i] = all[(i + (flags >> 5)) % 3];

	if (read_reply(c, CLIENT_GREETING_TIMEOUT_MS, &r, NULL) != REPLY_OK || r.code != 220)
		return;
	check_reply(&r);
	memset(&why, 0, sizeof(why));
	if (greet(c, &why) < 0) {
		check_status(&why);
		return;
	}
	for (int t = 0; t < 1 + ((flags >> 7) & 1) && !c->broken; t++) {
		memset(result, 0, sizeof(result));
		for (size_t i = 0; i < n; i++)
			result[i].outcome = (enum outcome)99;
		client_transaction(c, &m, rcpts, n, result);
		for (size_t i = 0; i < n; i++)
			check_status(&result[i]);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct smtp_client c;
	int p[2], fd_before, mode;
	size_t skip;

	if (size < 2 || size > 60000)
		return 0;
	mode = (data[0] - '0') & 1;
	skip = mode == 0 ? 1 : 2;
	fd_before = dup(null_fd);
	close(fd_before);
	if (pipe2(p, O_CLOEXEC) < 0)
		die("pipe");
	fcntl(p[1], F_SETPIPE_SZ, 1 << 16);
	if (write(p[1], data + skip, size - skip) != (ssize_t)(size - skip))
		die("write to the pipe");
	close(p[1]);

	memset(&c, 0, sizeof(c));
	c.fd = p[0];
	snprintf(c.host, sizeof(c.host), "mx.remote.example");
	snprintf(c.ip, sizeof(c.ip), "192.0.2.25");
	c.port = 25;
	/* what the client writes goes nowhere */
	io_init(&c.io, p[0], null_fd, CLIENT_GREETING_TIMEOUT_MS);

	if (mode == 0) {
		for (;;) {
			struct reply r;
			enum reply_error e;

			lines_seen = 0;
			e = read_reply(&c, 1000, &r, count_line);
			if (e != REPLY_OK)
				break;
			check_reply(&r);
		}
		close(p[0]);
	} else {
		conversation(&c, data[1]);
		client_close(&c);
		if (c.fd >= 0)
			close(c.fd);
	}
	{
		int fd = dup(null_fd);
		close(fd);
		FUZZ_ASSERT(fd == fd_before);
	}
	return 0;
}
