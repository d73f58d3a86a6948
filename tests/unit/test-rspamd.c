/* shared/rspamd.c: the JSON reader of /checkv2 replies (a table of good
 * and bad replies: rspamd's own, escapes, nesting, types, limits), the
 * HTTP response parser (lengths, cut replies, what we refuse), the
 * setting's endpoint forms, the Subject field (folding, encoded words,
 * controls) and the reply text. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "rspamd.h"

/* A reply of rspamd 3.4 to GTUBE, as it is sent. */
static const char gtube_reply[] =
	"{\"is_skipped\": false, \"score\": 15.0, \"required_score\": 15.0, \"action\": \"reject\", "
	"\"thresholds\": {\"reject\": 15.0, \"add header\": 6.0, \"greylist\": 4.0}, "
	"\"symbols\": {\"GTUBE\": {\"name\": \"GTUBE\", \"score\": 0.0, \"metric_score\": 0.0, "
	"\"options\": [\"0\"]}}, \"messages\": {\"smtp_message\": \"Gtube pattern\"}, "
	"\"message-id\": \"undef\", \"time_real\": 0.000426, \"milter\": {\"add_headers\": "
	"{\"X-Spam-Status\": {\"order\": -1, \"value\": \"Yes, score=15.00\"}}, \"remove_headers\": "
	"{\"X-Spam-Status\": 0, \"X-Spam\": 0}}}";

static const struct {
	const char *json;
	int ok;
	enum rspamd_action action;
	double score;             /* checked when has_score */
	const char *subject;      /* NULL: not checked */
	const char *message;      /* NULL: not checked */
} replies[] = {
	{ gtube_reply, 0, RSPAMD_REJECT, 15.0, "", "Gtube pattern" },
	{ "{\"action\":\"no action\",\"score\":-1.5e0}", 0, RSPAMD_NO_ACTION, -1.5, "", "" },
	{ "{\"action\":\"add header\",\"score\":6}", 0, RSPAMD_ADD_HEADER, 6, NULL, NULL },
	{ "{\"action\":\"quarantine\"}", 0, RSPAMD_ADD_HEADER, 0, NULL, NULL },
	{ "{\"action\":\"greylist\"}", 0, RSPAMD_GREYLIST, 0, NULL, NULL },
	{ "{\"action\":\"soft reject\",\"messages\":{\"smtp_message\":\"later\"}}", 0, RSPAMD_SOFT_REJECT, 0,
	  NULL, "later" },
	{ "{\"action\":\"discard\"}", 0, RSPAMD_REJECT, 0, NULL, NULL },
	{ " \r\n\t{ \"subject\" : \"[SPAM] hi\" , \"action\" : \"rewrite subject\" } \n", 0,
	  RSPAMD_REWRITE_SUBJECT, 0, "[SPAM] hi", NULL },
	/* escapes: \uXXXX to UTF-8, surrogate pairs, a lone one, NUL */
	{ "{\"action\":\"rewrite subject\",\"subject\":\"\\u00fc\\u65e5\\ud83d\\ude00\\ud800x\\u0000\\\"\\\\\\/\\b\\f\\n\\r\\t\"}",
	  0, RSPAMD_REWRITE_SUBJECT, 0, "\xc3\xbc\xe6\x97\xa5\xf0\x9f\x98\x80\xef\xbf\xbdx?\"\\/\b\f\n\r\t", NULL },
	/* raw UTF-8 passes as it is */
	{ "{\"action\":\"rewrite subject\",\"subject\":\"Gr\xc3\xbc\xc3\x9f\x65\"}", 0,
	  RSPAMD_REWRITE_SUBJECT, 0, "Gr\xc3\xbc\xc3\x9f\x65", NULL },
	/* the last of a duplicated member counts */
	{ "{\"action\":\"reject\",\"action\":\"no action\"}", 0, RSPAMD_NO_ACTION, 0, NULL, NULL },
	/* messages that is not an object, unknown members of every type */
	{ "{\"messages\":[1,2,{\"a\":null}],\"x\":true,\"y\":false,\"z\":null,\"action\":\"reject\"}", 0,
	  RSPAMD_REJECT, 0, NULL, "" },
	{ "{\"action\":\"reject\",\"messages\":{\"other\":\"x\",\"smtp_message\":\"go away\"}}", 0,
	  RSPAMD_REJECT, 0, NULL, "go away" },
	/* RSPAMD_JSON_DEPTH_MAX containers, the top object included, are
	 * walked over */
	{ "{\"action\":\"reject\",\"d\":[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]}", 0, RSPAMD_REJECT, 0, NULL, NULL },

	/* bad: not JSON, not an object, no or unknown action */
	{ "", -1, 0, 0, NULL, NULL },
	{ "[]", -1, 0, 0, NULL, NULL },
	{ "{}", -1, 0, 0, NULL, NULL },
	{ "{\"score\":1}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"explode\"}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"REJECT\"}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":1}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\"} x", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\"}{}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\"", -1, 0, 0, NULL, NULL },
	{ "{\"action\" \"reject\"}", -1, 0, 0, NULL, NULL },
	{ "{'action':'reject'}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"rej\nect\"}", -1, 0, 0, NULL, NULL },         /* raw control */
	{ "{\"action\":\"reject\",\"s\":\"\\x\"}", -1, 0, 0, NULL, NULL }, /* bad escape */
	{ "{\"action\":\"reject\",\"s\":\"\\u12g4\"}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"s\":\"\\u12\"}", -1, 0, 0, NULL, NULL },
	/* numbers: JSON's grammar, finite, in range */
	{ "{\"action\":\"reject\",\"score\":01}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":1.}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":.5}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":+1}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":1e}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":-}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":1e400}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":1e10}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":NaN}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":\"5\"}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"score\":0000000000000000000000000000000000000000000000000000000000000001}",
	  -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"x\":tru}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"x\":[1,]}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"x\":[1 2]}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"subject\":5}", -1, 0, 0, NULL, NULL },
	{ "{\"action\":\"reject\",\"messages\":{\"smtp_message\":5}}", -1, 0, 0, NULL, NULL },
	/* one level past the limit */
	{ "{\"action\":\"reject\",\"d\":[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]}", -1, 0, 0, NULL, NULL },
};

static void test_json(void)
{
	for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
		struct rspamd_verdict v;
		const char *j = replies[i].json;
		int r = rspamd_json_parse(j, strlen(j), &v);

		if (!CHECK_INT(j, replies[i].ok, r) || r < 0)
			continue;
		CHECK_INT(j, replies[i].action, v.action);
		if (v.has_score)
			CHECK_INT(j, (long long)(replies[i].score * 1000), (long long)(v.score * 1000));
		if (replies[i].subject)
			CHECK_STR(j, replies[i].subject, v.subject);
		if (replies[i].message)
			CHECK_STR(j, replies[i].message, v.smtp_message);
	}
	/* GTUBE's reply: both scores */
	{
		struct rspamd_verdict v;

		CHECK_INT("gtube", 0, rspamd_json_parse(gtube_reply, strlen(gtube_reply), &v));
		CHECK_INT("gtube has_required", 1, v.has_required);
		CHECK_INT("gtube required", 15000, (long long)(v.required_score * 1000));
	}
	/* NUL inside the body ends nothing: it is simply not JSON */
	{
		static const char with_nul[] = "{\"action\":\"reject\"\0}";
		struct rspamd_verdict v;

		CHECK_INT("NUL", -1, rspamd_json_parse(with_nul, sizeof(with_nul) - 1, &v));
	}
	/* Long strings: the subject past RSPAMD_SUBJECT_MAX is dropped (and
	 * said so), the message cut to RSPAMD_MESSAGE_MAX, whole characters. */
	{
		static char j[8192];
		struct rspamd_verdict v;
		size_t n = (size_t)snprintf(j, sizeof(j), "{\"action\":\"rewrite subject\",\"subject\":\"");

		for (int i = 0; i < RSPAMD_SUBJECT_MAX + 1; i++)
			j[n++] = 'a';
		n += (size_t)snprintf(j + n, sizeof(j) - n, "\",\"messages\":{\"smtp_message\":\"");
		for (int i = 0; i < RSPAMD_MESSAGE_MAX; i++)
			n += (size_t)snprintf(j + n, sizeof(j) - n, "\\u00fc");
		n += (size_t)snprintf(j + n, sizeof(j) - n, "\"}}");
		CHECK_INT("long", 0, rspamd_json_parse(j, n, &v));
		CHECK_STR("long subject", "", v.subject);
		CHECK_INT("long subject flag", 1, v.subject_too_long);
		CHECK_INT("long message", RSPAMD_MESSAGE_MAX, (long long)strlen(v.smtp_message));
		n = (size_t)snprintf(j, sizeof(j), "{\"action\":\"rewrite subject\",\"subject\":\"");
		for (int i = 0; i < RSPAMD_SUBJECT_MAX; i++)
			j[n++] = 'a';
		n += (size_t)snprintf(j + n, sizeof(j) - n, "\"}");
		CHECK_INT("subject at the limit", 0, rspamd_json_parse(j, n, &v));
		CHECK_INT("subject at the limit", RSPAMD_SUBJECT_MAX, (long long)strlen(v.subject));
		CHECK_INT("subject at the limit flag", 0, v.subject_too_long);
	}
	/* Deep nesting is refused before it costs stack. */
	{
		static char j[200000];
		struct rspamd_verdict v;
		size_t n = (size_t)snprintf(j, sizeof(j), "{\"action\":\"reject\",\"d\":");

		while (n < sizeof(j) - 2)
			j[n++] = '[';
		CHECK_INT("deep", -1, rspamd_json_parse(j, n, &v));
	}
}

static const struct {
	const char *reply;
	int eof;
	int want;      /* 1 complete, 0 more, -1 bad */
	int status;
	const char *body;
} http[] = {
	{ "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 0, 1, 200, "{}" },
	{ "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}extra", 0, 1, 200, "{}" },
	{ "HTTP/1.1 200 OK\nContent-Length:2\n\n{}", 0, 1, 200, "{}" },
	{ "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}", 0, 0, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n{}", 1, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nServer: rspamd/3.4\r\n\r\n{\"a\":1}", 0, 0, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nServer: rspamd/3.4\r\n\r\n{\"a\":1}", 1, 1, 200, "{\"a\":1}" },
	{ "HTTP/1.1 500 Internal error\r\nContent-Length: 0\r\n\r\n", 0, 1, 500, "" },
	{ "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", 0, 1, 200, "" },
	{ "HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Length: 0\r\n\r\n", 0, 1, 200, "" },
	{ "HTTP/1.1 200 OK\r\nContent-Le", 0, 0, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nContent-Le", 1, -1, 0, NULL },
	{ "", 0, 0, 0, NULL },
	{ "", 1, -1, 0, NULL },
	{ "HTTP/2 200 OK\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 20 OK\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 2000 OK\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 600 OK\r\n\r\n", 0, -1, 0, NULL },
	{ "http/1.1 200 OK\r\n\r\n", 0, -1, 0, NULL },
	{ "garbage\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nContent-Length: 262145\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nCompression: zstd\r\nContent-Length: 0\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\n folded: no\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\nno colon\r\n\r\n", 0, -1, 0, NULL },
	{ "HTTP/1.1 200 OK\r\n: empty name\r\n\r\n", 0, -1, 0, NULL },
};

static void test_http(void)
{
	for (size_t i = 0; i < sizeof(http) / sizeof(http[0]); i++) {
		const char *r = http[i].reply;
		int status = 0, got;
		size_t off = 0, len = 0;

		got = rspamd_http_parse(r, strlen(r), http[i].eof, &status, &off, &len);
		if (!CHECK_INT(r, http[i].want, got) || got != 1)
			continue;
		CHECK_INT(r, http[i].status, status);
		CHECK_MEM_N(r, strlen(r), http[i].body, strlen(http[i].body), r + off, len);
	}
	/* A head that never ends is refused once past its limit. */
	{
		static char big[RSPAMD_HTTP_HEAD_MAX + 200];
		size_t n = (size_t)snprintf(big, sizeof(big), "HTTP/1.1 200 OK\r\n");
		int status;
		size_t off, len;

		while (n + 12 < sizeof(big))
			n += (size_t)snprintf(big + n, sizeof(big) - n, "X-Pad: 1\r\n");
		CHECK_INT("long head", -1, rspamd_http_parse(big, n, 0, &status, &off, &len));
	}
}

static const struct {
	const char *where;
	int ok;
	const char *host, *port;
	int is_unix;
} endpoints[] = {
	{ "/run/rspamd/rspamd.sock", 0, "/run/rspamd/rspamd.sock", "", 1 },
	{ "127.0.0.1:11333", 0, "127.0.0.1", "11333", 0 },
	{ "localhost", 0, "localhost", "11333", 0 },
	{ "[::1]:11333", 0, "::1", "11333", 0 },
	{ "[::1]", 0, "::1", "11333", 0 },
	{ "rspamd.internal:1", 0, "rspamd.internal", "1", 0 },
	{ "", -1, NULL, NULL, 0 },
	{ "::1", -1, NULL, NULL, 0 },
	{ "127.0.0.1:", -1, NULL, NULL, 0 },
	{ "127.0.0.1:0", -1, NULL, NULL, 0 },
	{ "127.0.0.1:65536", -1, NULL, NULL, 0 },
	{ "127.0.0.1:1x", -1, NULL, NULL, 0 },
	{ "127.0.0.1:-1", -1, NULL, NULL, 0 },
	{ ":11333", -1, NULL, NULL, 0 },
	{ "[]:1", -1, NULL, NULL, 0 },
	{ "[::1]x", -1, NULL, NULL, 0 },
	{ "[::1", -1, NULL, NULL, 0 },
	{ "host name:1", -1, NULL, NULL, 0 },
	{ "relative/path.sock", -1, NULL, NULL, 0 },
	{ "/a/path/longer/than/a/unix/socket/can/name/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	  -1, NULL, NULL, 0 },
};

static void test_endpoints(void)
{
	for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
		char host[256], port[8];
		int is_unix = -1;
		const char *w = endpoints[i].where;
		int r = rspamd_endpoint_parse(w, host, sizeof(host), port, sizeof(port), &is_unix);

		if (!CHECK_INT(w, endpoints[i].ok, r) || r < 0)
			continue;
		CHECK_STR(w, endpoints[i].host, host);
		CHECK_STR(w, endpoints[i].port, port);
		CHECK_INT(w, endpoints[i].is_unix, is_unix);
	}
}

static const struct {
	const char *text;
	const char *field;
} subjects[] = {
	{ "[SPAM] hello", "Subject: [SPAM] hello\n" },
	{ "", "Subject:\n" },
	{ "  lead  and trail  ", "Subject: lead  and trail\n" },
	{ "line\r\nbreak\tand\x01 controls", "Subject: line  break and  controls\n" },
	/* folded before the word that would pass 78 columns */
	{ "*** SPAM *** aaaaaaaaaa bbbbbbbbbb cccccccccc dddddddddd eeeeeeeeee ffffffffff gggggggggg",
	  "Subject: *** SPAM *** aaaaaaaaaa bbbbbbbbbb cccccccccc dddddddddd eeeeeeeeee\n"
	  " ffffffffff gggggggggg\n" },
	/* a word longer than a line stays whole */
	{ "x yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy z",
	  "Subject: x\n yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy\n z\n" },
	/* not ASCII: encoded words of whole characters */
	{ "Gr\xc3\xbc\xc3\x9f\x65", "Subject: =?UTF-8?B?R3LDvMOfZQ==?=\n" },
	{ "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac"
	  "\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\x21",
	  "Subject: =?UTF-8?B?5pel5pys6Kqe5pel5pys6Kqe5pel5pys6Kqe5pel5pys6Kqe5pel5pys6Kqe?=\n"
	  " =?UTF-8?B?IQ==?=\n" },
	{ "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac"
	  "\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\x21\xe6\x97\xa5",
	  "Subject: =?UTF-8?B?5pel5pys6Kqe5pel5pys6Kqe5pel5pys6Kqe5pel5pys6Kqe5pel5pys6Kqe?=\n"
	  " =?UTF-8?B?IeaXpQ==?=\n" },
	/* 44 ASCII octets, then a 3-octet character: the word ends before it */
	{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xe6\x97\xa5",
	  "Subject: =?UTF-8?B?YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=?=\n"
	  " =?UTF-8?B?5pel?=\n" },
};

static void test_subject(void)
{
	for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
		char out[4096];
		long n = rspamd_subject_field(subjects[i].text, strlen(subjects[i].text), out, sizeof(out));

		if (CHECK_TRUE(subjects[i].text, n > 0))
			CHECK_STR(subjects[i].text, subjects[i].field, out);
	}
	/* too small a buffer: -1, never past it */
	{
		char out[16];

		CHECK_INT("small", -1, rspamd_subject_field("a long subject text here", 24, out, sizeof(out)));
	}
	/* the longest subject: lines within 998 octets */
	{
		static char text[RSPAMD_SUBJECT_MAX], out[8192];
		long n;
		size_t col = 0, longest = 0;

		memset(text, 'w', sizeof(text));
		n = rspamd_subject_field(text, sizeof(text), out, sizeof(out));
		CHECK_TRUE("longest", n > 0);
		for (long i = 0; i < n; i++) {
			col = out[i] == '\n' ? 0 : col + 1;
			if (col > longest)
				longest = col;
		}
		CHECK_TRUE("longest line", longest <= 998);
	}
}

static void test_reply_text(void)
{
	char out[RSPAMD_MESSAGE_SHOWN + 1];
	static char longer[RSPAMD_MESSAGE_MAX];

	rspamd_reply_text("Gtube pattern", out, sizeof(out));
	CHECK_STR("plain", "Gtube pattern", out);
	rspamd_reply_text("a\r\nb\xc3\xbc", out, sizeof(out));
	CHECK_STR("controls", "a??b??", out);
	memset(longer, 'm', sizeof(longer) - 1);
	rspamd_reply_text(longer, out, sizeof(out));
	CHECK_INT("cut", RSPAMD_MESSAGE_SHOWN, (long long)strlen(out));
}

int main(void)
{
	test_json();
	test_http();
	test_endpoints();
	test_subject();
	test_reply_text();
	return check_finish("rspamd");
}
