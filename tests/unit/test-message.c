/* shared/message.c: the DATA reader (RFC 5321 4.1.1.4, 4.5.2; SMTP
 * smuggling: only <CRLF>.<CRLF> ends the data, bare CR and LF are
 * flagged), wire_encode, command_split and esmtp_params. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "limits.h"
#include "message.h"

#define S(lit) lit, sizeof(lit) - 1

/* Chunks as io_read_chunk makes them: up to and including the next LF, or
 * cap bytes when no LF comes first. */
struct feed_result {
	struct data_reader r;
	char out[8192];
	size_t outlen;
	size_t consumed; /* wire bytes read, terminator included */
};

static void feed(const char *wire, size_t len, size_t cap, struct feed_result *res)
{
	size_t off = 0;

	data_reader_init(&res->r);
	res->outlen = 0;
	while (off < len && !res->r.ended) {
		const char *lf = memchr(wire + off, '\n', len - off);
		size_t take = lf ? (size_t)(lf - (wire + off)) + 1 : len - off;

		if (take > cap)
			take = cap;
		REQUIRE(res->outlen + take <= sizeof(res->out));
		res->outlen += data_feed(&res->r, wire + off, take, res->out + res->outlen);
		off += take;
	}
	res->consumed = off;
}

static size_t count_lf(const char *s, size_t len)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		n += s[i] == '\n';
	return n;
}

struct data_case {
	const char *wire;
	size_t len;
	const char *want; /* LF form; NULL: not checked (refused anyway) */
	size_t want_len;
	int ended, bare, received, has_nul, eight_bit;
	size_t consumed; /* 0: all of it */
};

#define OUT(lit) lit, sizeof(lit) - 1
#define NOOUT NULL, 0

static const struct data_case data_cases[] = {
	/* the plain case: CRLF becomes LF, the terminator is not stored */
	{ S("Subject: x\r\n\r\nbody\r\n.\r\n"), OUT("Subject: x\n\nbody\n"), 1, 0, 0, 0, 0, 0 },
	{ S(".\r\n"), OUT(""), 1, 0, 0, 0, 0, 0 },
	{ S("\r\n.\r\n"), OUT("\n"), 1, 0, 0, 0, 0, 0 },
	{ S("a\r\n\r\n\r\n.\r\n"), OUT("a\n\n\n"), 1, 0, 0, 0, 0, 0 },
	/* the data ends at the terminator; what follows is the next command */
	{ S("x\r\n.\r\nQUIT\r\n"), OUT("x\n"), 1, 0, 0, 0, 0, 6 },
	/* no terminator: not ended */
	{ S("x\r\n"), OUT("x\n"), 0, 0, 0, 0, 0, 0 },
	{ S("x\r\n."), OUT("x\n"), 0, 0, 0, 0, 0, 0 },
	{ S("x\r\n.\r"), OUT("x\n"), 0, 0, 0, 0, 0, 0 },
	{ S("x\r\n. \r\n"), OUT("x\n \n"), 0, 0, 0, 0, 0, 0 },

	/* dot-unstuffing (RFC 5321 4.5.2) */
	{ S("..\r\n.\r\n"), OUT(".\n"), 1, 0, 0, 0, 0, 0 },
	{ S("..x\r\n.\r\n"), OUT(".x\n"), 1, 0, 0, 0, 0, 0 },
	{ S("...\r\n.\r\n"), OUT("..\n"), 1, 0, 0, 0, 0, 0 },
	{ S("a\r\n..\r\nb\r\n.\r\n"), OUT("a\n.\nb\n"), 1, 0, 0, 0, 0, 0 },
	{ S("a.\r\n.b\r\n.\r\n"), OUT("a.\nb\n"), 1, 0, 0, 0, 0, 0 },
	{ S("a\r\n.\r\n.\r\n"), OUT("a\n"), 1, 0, 0, 0, 0, 6 },

	/* SMTP smuggling: none of these ends the data, all are flagged */
	{ S("a\n.\nb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	{ S("a\r\n.\nb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	{ S("a\n.\r\nb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	{ S("a\r.\rb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	{ S("a\r.\r\nb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	{ S("a\r\n.\r\r\nb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	/* ... but a real CRLF.CRLF after a bare CR or LF does end it */
	{ S("a\r\r\n.\r\nb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 7 },
	{ S("a\r\n\r.\r\nb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	{ S("a\n\r\n.\r\nb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 7 },
	{ S("\n.\n"), NOOUT, 0, 1, 0, 0, 0, 0 },
	{ S("\n.\r\n"), NOOUT, 0, 1, 0, 0, 0, 0 },
	{ S("a\n.\n"), NOOUT, 0, 1, 0, 0, 0, 0 },
	{ S("a\r\n.\n"), NOOUT, 0, 1, 0, 0, 0, 0 },
	{ S("a\n.\r\n"), NOOUT, 0, 1, 0, 0, 0, 0 },
	{ S("a\r.\r"), NOOUT, 0, 1, 0, 0, 0, 0 },
	/* bare CR, bare LF */
	{ S("a\rb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	{ S("a\nb\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	{ S("\r\r\n.\r\n"), NOOUT, 1, 1, 0, 0, 0, 0 },
	{ S("a\r\n\n.\r\n"), NOOUT, 0, 1, 0, 0, 0, 0 },

	/* Received headers are counted in the header section only */
	{ S("Received: a\r\nReceived: b\r\n\tcontinued\r\nX: y\r\n\r\nReceived: body\r\n.\r\n"),
	  NOOUT, 1, 0, 2, 0, 0, 0 },
	{ S("received: a\r\nRECEIVED: b\r\nX-Received: c\r\nReceived : d\r\n.\r\n"), NOOUT, 1, 0, 2, 0, 0, 0 },
	{ S("Received: a\r\nnot a header\r\nReceived: b\r\n.\r\n"), NOOUT, 1, 0, 1, 0, 0, 0 },
	{ S("Received: a\r\n\r\nReceived: b\r\n.\r\n"), NOOUT, 1, 0, 1, 0, 0, 0 },
	{ S("Received:\r\n Received: folded\r\n.\r\n"), NOOUT, 1, 0, 1, 0, 0, 0 },
	{ S("\r\nReceived: a\r\n.\r\n"), NOOUT, 1, 0, 0, 0, 0, 0 },
	/* a stuffed line counts as what it is once unstuffed */
	{ S(".Received: a\r\nReceived: b\r\n.\r\n"), OUT("Received: a\nReceived: b\n"), 1, 0, 2, 0, 0, 0 },
	{ S("..Received: a\r\nReceived: b\r\n.\r\n"), OUT(".Received: a\nReceived: b\n"), 1, 0, 1, 0, 0, 0 },

	/* NUL and 8-bit bytes are stored and flagged */
	{ S("a\0b\r\n.\r\n"), OUT("a\0b\n"), 1, 0, 0, 1, 0, 0 },
	{ S("caf\xc3\xa9\r\n.\r\n"), OUT("caf\xc3\xa9\n"), 1, 0, 0, 0, 1, 0 },
	{ S("\xff\r\n.\r\n"), OUT("\xff\n"), 1, 0, 0, 0, 1, 0 },
};

/* Chunk caps: the real one, and small ones that split lines and put a CR
 * at the end of a chunk with its LF in the next. 3 is the smallest that
 * can hold the terminator, which io_read_chunk always delivers whole at a
 * line start since SMTP_DATA_CHUNK_MAX is far larger. */
static const size_t caps[] = { SMTP_DATA_CHUNK_MAX, 3, 4, 5, 6, 7, 11, 64 };

static void test_data_table(void)
{
	for (size_t i = 0; i < sizeof(data_cases) / sizeof(data_cases[0]); i++) {
		const struct data_case *c = &data_cases[i];

		for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
			struct feed_result res;
			char given[64];
			size_t consumed = c->consumed ? c->consumed : c->len;

			feed(c->wire, c->len, caps[k], &res);
			snprintf(given, sizeof(given), "case %zu, chunk cap %zu", i, caps[k]);
			if (!CHECK_INT_N(c->wire, c->len, c->ended, res.r.ended))
				fprintf(stderr, "  (%s)\n", given);
			CHECK_INT_N(c->wire, c->len, c->bare, res.r.bare);
			CHECK_INT_N(c->wire, c->len, consumed, res.consumed);
			/* the header scan sees a line's start in one chunk:
			 * true for every line here once the cap is 64 */
			if (caps[k] >= 64)
				CHECK_INT_N(c->wire, c->len, c->received, res.r.received);
			CHECK_INT_N(c->wire, c->len, c->has_nul, res.r.has_nul);
			CHECK_INT_N(c->wire, c->len, c->eight_bit, res.r.eight_bit);
			if (c->want && !CHECK_MEM_N(c->wire, c->len, c->want, c->want_len, res.out, res.outlen))
				fprintf(stderr, "  (%s)\n", given);
			if (!c->bare && c->ended) {
				/* each LF stands for a CRLF on the wire; the
				 * stuffed dots and the terminator are not counted */
				CHECK_INT_N(c->wire, c->len, count_lf(res.out, res.outlen), res.r.lf_count);
				CHECK_INT_N(c->wire, c->len, res.outlen + res.r.lf_count, res.r.wire_bytes);
			}
		}
	}
}

static void test_data_counts(void)
{
	struct feed_result res;
	static char wire[3 * SMTP_DATA_CHUNK_MAX];
	size_t o = 0;

	/* wire_bytes counts the message as sent, unstuffed, without the
	 * terminator; lf_count the LFs written */
	feed(S("Subject: x\r\n\r\nbody\r\n..\r\n.\r\n"), 64, &res);
	CHECK_INT("Subject: x CRLF CRLF body CRLF .. CRLF", 23, res.r.wire_bytes);
	CHECK_INT("Subject: x CRLF CRLF body CRLF .. CRLF", 4, res.r.lf_count);

	/* a line longer than the chunk, with CRLF straddling two chunks */
	memset(wire, 'x', SMTP_DATA_CHUNK_MAX - 1);
	o = SMTP_DATA_CHUNK_MAX - 1;
	memcpy(wire + o, "\r\n.\r\n", 5);
	o += 5;
	feed(wire, o, SMTP_DATA_CHUNK_MAX, &res);
	CHECK_INT("4095 x, CRLF across the chunk end", 1, res.r.ended);
	CHECK_INT("4095 x, CRLF across the chunk end", 0, res.r.bare);
	CHECK_INT("4095 x, CRLF across the chunk end", SMTP_DATA_CHUNK_MAX, res.outlen);
	CHECK_INT("4095 x, CRLF across the chunk end", '\n', res.out[res.outlen - 1]);
	CHECK_INT("4095 x, CRLF across the chunk end", SMTP_DATA_CHUNK_MAX + 1, res.r.wire_bytes);

	/* a CR ending a chunk followed by something else than LF is bare */
	memcpy(wire + SMTP_DATA_CHUNK_MAX - 1, "\rx\r\n.\r\n", 7);
	feed(wire, SMTP_DATA_CHUNK_MAX + 6, SMTP_DATA_CHUNK_MAX, &res);
	CHECK_INT("4095 x, CR at the chunk end, then x", 1, res.r.bare);
	CHECK_INT("4095 x, CR at the chunk end, then x", 1, res.r.ended);

	/* ... and a CR at the chunk end then ".\r\n" does not end the data:
	 * the line was "xxx\r.\r\n" */
	memcpy(wire + SMTP_DATA_CHUNK_MAX - 1, "\r.\r\n", 4);
	feed(wire, SMTP_DATA_CHUNK_MAX + 3, SMTP_DATA_CHUNK_MAX, &res);
	CHECK_INT("4095 x, CR at the chunk end, then .CRLF", 0, res.r.ended);
	CHECK_INT("4095 x, CR at the chunk end, then .CRLF", 1, res.r.bare);

	/* a header line longer than a chunk: "Received:" in its middle is not
	 * a header */
	feed(S("Subject: Received: x\r\nReceived: y\r\n.\r\n"), 9, &res);
	CHECK_INT("Subject: Received: x, chunk cap 9", 1, res.r.received);

	/* many Received headers: the count goes past the loop limit */
	o = 0;
	for (int i = 0; i < SMTP_RECEIVED_MAX + 1; i++) {
		memcpy(wire + o, "Received: from x\r\n", 18);
		o += 18;
	}
	memcpy(wire + o, "\r\nbody\r\n.\r\n", 11);
	o += 11;
	feed(wire, o, SMTP_DATA_CHUNK_MAX, &res);
	CHECK_INT("101 Received headers", SMTP_RECEIVED_MAX + 1, res.r.received);

	/* nothing more is taken after the end */
	{
		struct data_reader r;
		char out[16];

		data_reader_init(&r);
		CHECK_INT(".CRLF", 0, data_feed(&r, ".\r\n", 3, out));
		CHECK_INT(".CRLF", 1, r.ended);
		CHECK_INT("after the end: abc CRLF", 0, data_feed(&r, "abc\r\n", 5, out));
		CHECK_INT("after the end: abc CRLF", 0, r.wire_bytes);
		CHECK_INT("empty chunk", 0, data_feed(&r, "", 0, out));
	}
}

static void test_wire_encode(void)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "", "" },
		{ "a\nb\n", "a\r\nb\r\n" },
		{ ".\n", "..\r\n" },
		{ ".x\n", "..x\r\n" },
		{ "a\n.\n..\nb.\n", "a\r\n..\r\n...\r\nb.\r\n" },
		{ "\n\n", "\r\n\r\n" },
		{ "no newline", "no newline" },
		{ ".", ".." },
		/* a file that already holds CRLF keeps it */
		{ "a\r\n.b\r\n", "a\r\n..b\r\n" },
		{ "bare\rcr\n", "bare\rcr\r\n" },
	};
	char out[256];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int at = 1;
		size_t n = wire_encode(&at, cases[i].in, strlen(cases[i].in), out);

		CHECK_MEM_N(cases[i].in, strlen(cases[i].in), cases[i].want, strlen(cases[i].want), out, n);
	}

	/* the line-start state carries across calls */
	{
		int at = 1;
		size_t n = wire_encode(&at, "a\n", 2, out);

		n += wire_encode(&at, ".b", 2, out + n);
		n += wire_encode(&at, ".c\n", 3, out + n);
		n += wire_encode(&at, ".", 1, out + n);
		CHECK_MEM_N("a\n, .b, .c\n, .", 14, "a\r\n..b.c\r\n..", 12, out, n);
	}
	/* a CRLF split between two calls */
	{
		int at = 1;
		size_t n = wire_encode(&at, "x\r", 2, out);

		n += wire_encode(&at, "\n.y\n", 4, out + n);
		CHECK_MEM_N("x\r, \n.y\n", 9, "x\r\n..y\r\n", 8, out, n);
	}

	/* LF form -> wire_encode -> data_feed gives back the LF form */
	{
		static const struct {
			const char *text;
			size_t len;
		} texts[] = {
			{ S("Subject: t\n\nline\n.\n..\n...x\n\n.\nend\n") },
			{ S(".\n") },
			{ S("a\0b\n") },
			{ S("\n") },
			{ S("") },
		};

		for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
			const char *t = texts[i].text;
			size_t len = texts[i].len;
			char wire[256];
			struct feed_result res;
			int at = 1;
			size_t n = wire_encode(&at, t, len, wire);

			memcpy(wire + n, ".\r\n", 3);
			for (size_t k = 0; k < sizeof(caps) / sizeof(caps[0]); k++) {
				feed(wire, n + 3, caps[k], &res);
				CHECK_INT_N(t, len, 1, res.r.ended);
				CHECK_INT_N(t, len, 0, res.r.bare);
				CHECK_MEM_N(t, len, t, len, res.out, res.outlen);
				CHECK_INT_N(t, len, len + res.r.lf_count, res.r.wire_bytes);
			}
		}
	}
}

static void test_command_split(void)
{
	static const struct {
		const char *line;
		int ret;
		const char *verb, *arg;
	} cases[] = {
		{ "MAIL FROM:<a@b.example>", 0, "MAIL", "FROM:<a@b.example>" },
		{ "ehlo client.example", 0, "EHLO", "client.example" },
		{ "Rcpt TO:<x@y>", 0, "RCPT", "TO:<x@y>" },
		{ "QUIT", 0, "QUIT", "" },
		{ "NOOP ", 0, "NOOP", "" },
		{ "NOOP  x", 0, "NOOP", " x" },
		{ "STARTTLS", 0, "STARTTLS", "" },
		{ "AUTH PLAIN AGFsaWNlAHNlY3JldA==", 0, "AUTH", "PLAIN AGFsaWNlAHNlY3JldA==" },
		{ "MAIL\tFROM:<a@b>", 0, "MAIL\tFROM:<A@B>", "" },
		{ "123456789012345", 0, "123456789012345", "" },
		{ "1234567890123456", -1, NULL, NULL },
		{ "1234567890123456 x", -1, NULL, NULL },
		{ "", -1, NULL, NULL },
		{ " QUIT", -1, NULL, NULL },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char verb[16];
		const char *arg = NULL;
		int r = command_split(cases[i].line, verb, sizeof(verb), &arg);

		if (!CHECK_INT(cases[i].line, cases[i].ret, r) || r != 0)
			continue;
		CHECK_STR(cases[i].line, cases[i].verb, verb);
		CHECK_STR(cases[i].line, cases[i].arg, arg);
	}
}

struct params_log {
	char text[2048];
};

static int record_param(void *ctx, const char *key, const char *value)
{
	struct params_log *log = ctx;
	size_t o = strlen(log->text);

	snprintf(log->text + o, sizeof(log->text) - o, "%s%s%s;", key, value ? "=" : "",
		 value ? value : "");
	return strcmp(key, "STOP") == 0 ? 7 : 0;
}

static void test_esmtp_params(void)
{
	static const struct {
		const char *in;
		int ret;
		const char *calls;
	} cases[] = {
		{ "", 0, "" },
		{ "   ", 0, "" },
		{ " SIZE=1000 BODY=8BITMIME", 0, "SIZE=1000;BODY=8BITMIME;" },
		{ "size=10 smtputf8", 0, "SIZE=10;SMTPUTF8;" },
		{ "  A=1   B  ", 0, "A=1;B;" },
		{ "X-FOO=bar", 0, "X-FOO=bar;" },
		{ "1X=2", 0, "1X=2;" },
		{ "ENVID=a+2Bb", 0, "ENVID=a+2Bb;" },
		{ "A=\xc3\xa9", 0, "A=\xc3\xa9;" },
		{ "A=!\"#<>~", 0, "A=!\"#<>~;" },
		{ "A=1 STOP B=2", 7, "A=1;STOP;" },
		{ "=x", -1, "" },
		{ "-X", -1, "" },
		{ "A_B=1", -1, "" },
		{ "A.B", -1, "" },
		{ "A=", -1, "" },
		{ "A= B", -1, "" },
		{ "A==1", -1, "" },
		{ "A=b=c", -1, "" },
		{ "A=\x7f", -1, "" },
		{ "A=\x01", -1, "" },
		{ "A\t=1", -1, "" },
		{ "A=b\tc", -1, "" },
		{ "\xc3\xa9=1", -1, "" },
		{ "A=1 =", -1, "A=1;" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct params_log log = { "" };

		CHECK_INT(cases[i].in, cases[i].ret, esmtp_params(cases[i].in, record_param, &log));
		CHECK_STR(cases[i].in, cases[i].calls, log.text);
	}

	/* the bounds: keyword 63 octets, value 511 */
	{
		char in[1200], want[1200];
		struct params_log log = { "" };

		memset(in, 'K', 63);
		in[63] = '\0';
		snprintf(want, sizeof(want), "%s;", in);
		CHECK_INT("keyword of 63 octets", 0, esmtp_params(in, record_param, &log));
		CHECK_STR("keyword of 63 octets", want, log.text);
		memset(in, 'K', 64);
		in[64] = '\0';
		CHECK_INT("keyword of 64 octets", -1, esmtp_params(in, record_param, &log));

		memcpy(in, "V=", 2);
		memset(in + 2, 'v', 511);
		in[513] = '\0';
		CHECK_INT("value of 511 octets", 0, esmtp_params(in, record_param, &log));
		memset(in + 2, 'v', 512);
		in[514] = '\0';
		CHECK_INT("value of 512 octets", -1, esmtp_params(in, record_param, &log));
	}
}

int main(void)
{
	test_data_table();
	test_data_counts();
	test_wire_encode();
	test_command_split();
	test_esmtp_params();
	return check_finish("message");
}
