/* The DSN writer (queue/dsn.c): the bounce and delay warning built from
 * the sender, the original message's headers and each recipient's
 * result. queue/dsn.c is included here (compose and notice_recipient are
 * static); the target links its own copy of it.
 *
 * The input: one flags byte (bit 0 delay warning, bit 1 expired, bits 2-7
 * the command that failed), then NUL-separated fields: the envelope
 * sender, the original message (written as the queue file the bounce
 * quotes), then per recipient (up to 8): address, original recipient,
 * status, reply text, remote MTA. Each goes through what stands before
 * the writer in the queue runner: the sender through notice_recipient
 * (address parsing, SRS reversal); recipients must parse as addresses (the
 * SMTP handler accepted them); the reply text and MTA are kept to
 * printable ASCII and their fields' sizes, as client.c records them; a
 * status not of the form d.ddd.ddd is dropped (dsn.c then says 5.0.0).
 *
 * The notice is composed into a memfd and must be a well-formed
 * multipart/report (RFC 3464, RFC 6522): a header section of "Name: value"
 * lines and folds naming the boundary, the three parts each opened by the
 * delimiter line and the close delimiter last; no CR, no NUL, no line over
 * 998 octets, except inside the copied headers, which must be the
 * original's header section exactly; and the counters it keeps (bytes,
 * LFs, 8-bit) must match what was written. */
#include "fuzz.h"

#include "../../queue/dsn.c"

#include <ctype.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "db.h"

#define RCPTS_MAX 8
#define ORIG_ID "0000000000FUZZ01"

static int memfd = -1;

/* The settings (an SRS secret for the reversal), the domain, and the
 * spool's queue/ for the original message. */
static void make_world(void)
{
	char path[1200];
	const char *workdir =
		fuzz_world("INSERT INTO settings VALUES ('hostname', 'mx.fuzz.example'),"
			   " ('srs_secret', 'fuzz-secret-0123456789');"
			   "INSERT INTO domains VALUES ('example.org');");

	snprintf(path, sizeof(path), "%s/spool", workdir);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/spool/queue", workdir);
	mkdir(path, 0700);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	make_world();
	signal(SIGPIPE, SIG_IGN);
	log_init("postage-dsn-fuzz");
	memfd = memfd_create("dsn", MFD_CLOEXEC);
	if (memfd < 0)
		fuzz_die("memfd");
	if (db_open() != DB_OK)
		fuzz_die("database");
	return 0;
}

/* ---- the input ----------------------------------------------------------- */

struct fields {
	const char *p, *end;
};

/* The next NUL-terminated field (a copy in buf of cap), or NULL at the end. */
static const char *field(struct fields *f, char *buf, size_t cap, size_t *len)
{
	const char *nul;
	size_t n;

	if (f->p >= f->end)
		return NULL;
	nul = memchr(f->p, '\0', (size_t)(f->end - f->p));
	n = nul ? (size_t)(nul - f->p) : (size_t)(f->end - f->p);
	if (len)
		*len = n;
	if (n >= cap)
		n = cap - 1;
	memcpy(buf, f->p, n);
	buf[n] = '\0';
	f->p = nul ? nul + 1 : f->end;
	return buf;
}

/* As client.c keeps reply text: printable ASCII, '?' for the rest. */
static void printable(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
			*s = '?';
}

static int status_ok(const char *s)
{
	unsigned a, b, c;
	int used = 0;

	return sscanf(s, "%1u.%3u.%3u%n", &a, &b, &c, &used) == 3 && s[used] == '\0' &&
	       (a == 2 || a == 4 || a == 5) && isdigit((unsigned char)s[0]) &&
	       strspn(s, "0123456789.") == strlen(s);
}

/* ---- checking the notice --------------------------------------------------- */

static void broken(const char *what, const char *p, size_t len)
{
	fuzz_broken("fuzz-dsn", what, p, len);
}

/* The original's header section as copy_headers should quote it. */
static size_t header_section(const char *msg, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (msg[i] == '\n' && (i == 0 || msg[i - 1] == '\n'))
			return i;
	/* no empty line: up to the last whole line */
	for (size_t i = len; i > 0; i--)
		if (msg[i - 1] == '\n')
			return i;
	return 0;
}

static void check_notice(const char *out, size_t len, const char *id, const char *orig,
			 size_t orig_len)
{
	char delim[128], close_delim[128];
	const char *p = out, *end = out + len, *bnd;
	size_t dl, cl, quoted = header_section(orig, orig_len > DSN_HEADERS_MAX ? DSN_HEADERS_MAX :
								      orig_len);
	int parts = 0, in_headers = 1, closed = 0;

	snprintf(delim, sizeof(delim), "--=_postage_dsn_%s", id);
	snprintf(close_delim, sizeof(close_delim), "%s--", delim);
	dl = strlen(delim);
	cl = strlen(close_delim);
	if (len == 0 || out[len - 1] != '\n')
		broken("does not end with LF", out, len);

	/* in the message's own header section, after Content-Type */
	bnd = memmem(out, len, "\nContent-Type: multipart/report;", 32);
	if (bnd) {
		const char *hend = memmem(out, len, "\n\n", 2);
		bnd = memmem(bnd, (size_t)(end - bnd), "boundary=\"", 10);
		if (bnd && hend && bnd > hend)
			bnd = NULL;
	}
	if (!bnd || (size_t)(end - bnd) < 10 + dl - 2 || memcmp(bnd + 10, delim + 2, dl - 2) != 0 ||
	    bnd[10 + dl - 2] != '"')
		broken("no boundary parameter naming the delimiter", out, len);

	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		size_t l = (size_t)(lf - p);

		if (closed)
			broken("text after the close delimiter", p, l);
		if (parts == 3 && !in_headers) {
			/* part 3's body: the original's header section */
			if (quoted > 0) {
				if ((size_t)(end - p) < quoted || memcmp(p, orig, quoted) != 0)
					broken("quoted headers differ from the original", p,
					       (size_t)(end - p));
				p += quoted;
				/* then the empty line before the close delimiter */
				if (p >= end || *p != '\n')
					broken("no empty line after the quoted headers", p,
					       (size_t)(end - p));
				p++;
				quoted = 0;
				continue;
			}
		}
		if (memchr(p, '\r', l))
			broken("CR in a line", p, l);
		if (memchr(p, '\0', l))
			broken("NUL in a line", p, l);
		if (l > 998)
			broken("line over 998 octets", p, l);
		if (in_headers) {
			if (l == 0) {
				in_headers = 0;
			} else if (p[0] != ' ' && p[0] != '\t') {
				const char *colon = memchr(p, ':', l);
				if (!colon || colon == p)
					broken("header line without a name", p, l);
				for (const char *c = p; c < colon; c++)
					if (*c <= 0x20 || *c >= 0x7f)
						broken("bad header name", p, l);
			} else if (parts == 0 && p == out) {
				broken("fold before the first header", p, l);
			}
		} else if (l == dl && memcmp(p, delim, dl) == 0) {
			parts++;
			in_headers = 1;
		} else if (l == cl && memcmp(p, close_delim, cl) == 0) {
			closed = 1;
		} else if (l >= dl && memcmp(p, delim, dl) == 0) {
			broken("a line that starts with the delimiter", p, l);
		}
		p = lf + 1;
	}
	if (parts != 3 || !closed) {
		fprintf(stderr, "fuzz-dsn: %d parts, close delimiter %s\n", parts,
			closed ? "present" : "missing");
		abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char sender[2048], msg[DSN_HEADERS_MAX + 4096], to_text[ADDRESS_PATH_MAX + 1];
	static char rcpt[RCPTS_MAX][1024], orig[RCPTS_MAX][1024], status[RCPTS_MAX][32];
	static char text[RCPTS_MAX][CLIENT_REPLY_TEXT_MAX + 1];
	static char mta[RCPTS_MAX][ADDRESS_DOMAIN_MAX + 72];
	static char result[1 << 20];
	static const char *const commands[] = { "", "RCPT TO", "MAIL FROM", "end of DATA", "DATA",
						"EHLO", "the greeting" };
	static struct msg_out o;
	struct dsn_rcpt rcpts[RCPTS_MAX];
	struct dsn_message m;
	struct address to, parsed;
	struct fields f;
	char id[QUEUE_ID_LEN + 8], path[PATH_MAX_POSTAGE];
	size_t msg_len = 0, n = 0;
	ssize_t got;
	uint8_t flags;
	enum dsn_kind kind;
	int fd;

	if (size < 1 || size > 200000)
		return 0;
	flags = data[0];
	kind = (flags & 1) ? DSN_DELAYED : DSN_FAILED;
	f.p = (const char *)data + 1;
	f.end = (const char *)data + size;
	if (!field(&f, sender, sizeof(sender), NULL))
		return 0;
	if (!field(&f, msg, sizeof(msg), &msg_len))
		msg[0] = '\0';
	if (msg_len >= sizeof(msg))
		msg_len = sizeof(msg) - 1;
	while (n < RCPTS_MAX && field(&f, rcpt[n], sizeof(rcpt[n]), NULL)) {
		struct dsn_rcpt *r = &rcpts[n];

		if (!field(&f, orig[n], sizeof(orig[n]), NULL))
			orig[n][0] = '\0';
		if (!field(&f, status[n], sizeof(status[n]), NULL) || !status_ok(status[n]))
			status[n][0] = '\0';
		if (!field(&f, text[n], sizeof(text[n]), NULL))
			text[n][0] = '\0';
		printable(text[n]);
		if (!field(&f, mta[n], sizeof(mta[n]), NULL))
			mta[n][0] = '\0';
		printable(mta[n]);
		/* the SMTP handler accepted them as addresses */
		if (address_parse_plain(rcpt[n], 1, &parsed) != ADDRESS_OK)
			continue;
		if (orig[n][0] && address_parse_plain(orig[n], 1, &parsed) != ADDRESS_OK)
			orig[n][0] = '\0';
		r->recipient = rcpt[n];
		r->orig_rcpt = orig[n][0] ? orig[n] : NULL;
		r->status = status[n];
		r->text = text[n][0] ? text[n] : "delivery failed";
		r->command = commands[((flags >> 2) + n) % (sizeof(commands) / sizeof(commands[0]))];
		r->mta = mta[n];
		r->expired = (flags >> 1) & 1;
		n++;
	}
	if (n == 0)
		return 0;

	memset(&m, 0, sizeof(m));
	m.id = ORIG_ID;
	m.sender = sender;
	m.created_at = 1700000000;
	m.give_up_at = 1700000000 + 5 * 86400;
	m.lifetime_hours = 120;
	if (!sender[0] || notice_recipient(&m, "bounce", &to, to_text, sizeof(to_text)) <= 0)
		return 0;

	/* the original, as the queue file */
	queue_path(ORIG_ID, path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, msg, msg_len) != (ssize_t)msg_len)
		fuzz_die(path);
	close(fd);

	queue_new_id(id, sizeof(id));
	if (ftruncate(memfd, 0) < 0 || lseek(memfd, 0, SEEK_SET) < 0)
		fuzz_die("memfd");
	msg_out_init(&o, memfd, 0);
	compose(&o, kind, &m, to_text, rcpts, n, id);
	msg_out_flush(&o);
	FUZZ_ASSERT(o.error == 0);

	got = pread(memfd, result, sizeof(result), 0);
	if (got < 0)
		fuzz_die("pread");
	FUZZ_ASSERT((unsigned long long)got == o.total);
	{
		unsigned long long lfs = 0;
		int eight = 0;
		for (ssize_t i = 0; i < got; i++) {
			lfs += result[i] == '\n';
			eight |= (unsigned char)result[i] >= 0x80;
		}
		FUZZ_ASSERT(lfs == o.lfs);
		FUZZ_ASSERT(eight == o.eight_bit);
	}
	check_notice(result, (size_t)got, id, msg, msg_len);
	return 0;
}
