/* rspamd's /checkv2 over HTTP/1.1, and the few fields of its JSON reply
 * that postage acts on (rspamd.h). Every read is bounded in length and
 * time; the JSON walker recurses at most RSPAMD_JSON_DEPTH_MAX deep. */
#include "rspamd.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "limits.h"

/* rspamd's normal worker listens here unless told otherwise. */
#define RSPAMD_DEFAULT_PORT "11333"

/* ---- the JSON reply ----------------------------------------------------- */

struct json {
	const char *p, *end;
};

static void json_ws(struct json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

/* After a member or an element: 1 at the closing bracket (consumed), 0
 * after a comma (consumed), -1 on anything else. */
static int json_next(struct json *j, char close)
{
	json_ws(j);
	if (j->p >= j->end)
		return -1;
	if (*j->p == close) {
		j->p++;
		return 1;
	}
	if (*j->p != ',')
		return -1;
	j->p++;
	return 0;
}

static int hex4(const char *p, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		char c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return -1;
	}
	*out = v;
	return 0;
}

/* Appends byte c to out when it fits (one octet kept for the NUL). */
static void put(char *out, size_t cap, size_t *n, int *cut, char c)
{
	if (!out)
		return;
	if (*n + 1 < cap)
		out[(*n)++] = c;
	else
		*cut = 1;
}

/* Appends code point cp as UTF-8, whole or not at all. */
static void put_utf8(char *out, size_t cap, size_t *n, int *cut, unsigned cp)
{
	char b[4];
	size_t k;

	if (cp < 0x80) {
		b[0] = (char)cp;
		k = 1;
	} else if (cp < 0x800) {
		b[0] = (char)(0xc0 | (cp >> 6));
		b[1] = (char)(0x80 | (cp & 0x3f));
		k = 2;
	} else if (cp < 0x10000) {
		b[0] = (char)(0xe0 | (cp >> 12));
		b[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (char)(0x80 | (cp & 0x3f));
		k = 3;
	} else {
		b[0] = (char)(0xf0 | (cp >> 18));
		b[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (char)(0x80 | (cp & 0x3f));
		k = 4;
	}
	if (!out)
		return;
	if (*n + k < cap) {
		memcpy(out + *n, b, k);
		*n += k;
	} else {
		*cut = 1;
	}
}

/* A string at j->p (the opening quote) into out (NUL-terminated, cap
 * octets; NULL: skipped). Escapes decoded, \u0000 as '?', a lone
 * surrogate as U+FFFD. *cut when it did not fit (out holds the start,
 * cut at a character boundary). 0, or -1 when malformed. */
static int json_string(struct json *j, char *out, size_t cap, int *cut)
{
	size_t n = 0;
	int dummy = 0;

	if (!cut)
		cut = &dummy;
	*cut = 0;
	if (j->p >= j->end || *j->p != '"')
		return -1;
	j->p++;
	while (j->p < j->end) {
		unsigned char c = (unsigned char)*j->p++;
		unsigned cp, lo;

		if (c == '"') {
			if (out && cap)
				out[n] = '\0';
			return 0;
		}
		if (c < 0x20)
			return -1; /* RFC 8259 7: controls must be escaped */
		if (c != '\\') {
			if (!*cut)
				put(out, cap, &n, cut, (char)c);
			continue;
		}
		if (j->p >= j->end)
			return -1;
		c = (unsigned char)*j->p++;
		switch (c) {
		case '"': case '\\': case '/':
			break;
		case 'b': c = '\b'; break;
		case 'f': c = '\f'; break;
		case 'n': c = '\n'; break;
		case 'r': c = '\r'; break;
		case 't': c = '\t'; break;
		case 'u':
			if (j->end - j->p < 4 || hex4(j->p, &cp) < 0)
				return -1;
			j->p += 4;
			if (cp >= 0xd800 && cp < 0xdc00) {
				if (j->end - j->p >= 6 && j->p[0] == '\\' && j->p[1] == 'u' &&
				    hex4(j->p + 2, &lo) == 0 && lo >= 0xdc00 && lo < 0xe000) {
					j->p += 6;
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				} else {
					cp = 0xfffd;
				}
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				cp = 0xfffd;
			} else if (cp == 0) {
				cp = '?';
			}
			if (!*cut)
				put_utf8(out, cap, &n, cut, cp);
			continue;
		default:
			return -1;
		}
		if (!*cut)
			put(out, cap, &n, cut, (char)c);
	}
	return -1;
}

/* RFC 8259 6: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static int json_number(struct json *j, double *out)
{
	const char *s = j->p;
	char buf[64];
	size_t len;
	double v;

	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p >= j->end)
		return -1;
	if (*j->p == '0') {
		j->p++;
	} else if (*j->p >= '1' && *j->p <= '9') {
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	} else {
		return -1;
	}
	if (j->p < j->end && *j->p == '.') {
		j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return -1;
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end || *j->p < '0' || *j->p > '9')
			return -1;
		while (j->p < j->end && *j->p >= '0' && *j->p <= '9')
			j->p++;
	}
	len = (size_t)(j->p - s);
	if (!out)
		return 0;
	if (len >= sizeof(buf))
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	v = strtod(buf, NULL);
	/* NaN fails both; so do huge scores nobody configures. */
	if (!(v > -1e9 && v < 1e9))
		return -1;
	*out = v;
	return 0;
}

static int json_literal(struct json *j, const char *word)
{
	size_t len = strlen(word);

	if ((size_t)(j->end - j->p) < len || memcmp(j->p, word, len) != 0)
		return -1;
	j->p += len;
	return 0;
}

/* Walks over any value; depth counts the containers around it. */
static int json_skip(struct json *j, int depth)
{
	json_ws(j);
	if (j->p >= j->end)
		return -1;
	switch (*j->p) {
	case '"':
		return json_string(j, NULL, 0, NULL);
	case 't':
		return json_literal(j, "true");
	case 'f':
		return json_literal(j, "false");
	case 'n':
		return json_literal(j, "null");
	case '{':
	case '[': {
		char close = *j->p == '{' ? '}' : ']';
		int first = 1, r;

		if (depth + 1 > RSPAMD_JSON_DEPTH_MAX)
			return -1;
		j->p++;
		for (;;) {
			json_ws(j);
			if (j->p < j->end && *j->p == close && first) {
				j->p++;
				return 0;
			}
			if (close == '}') {
				if (json_string(j, NULL, 0, NULL) < 0)
					return -1;
				json_ws(j);
				if (j->p >= j->end || *j->p != ':')
					return -1;
				j->p++;
			}
			if (json_skip(j, depth + 1) < 0)
				return -1;
			r = json_next(j, close);
			if (r != 0)
				return r < 0 ? -1 : 0;
			first = 0;
		}
	}
	default:
		return json_number(j, NULL);
	}
}

/* The members of the object at j->p; for each, member(key, j, v, depth)
 * reads or skips its value. */
typedef int (*json_member_fn)(const char *key, struct json *j, struct rspamd_verdict *v,
			      int depth);

static int json_object(struct json *j, struct rspamd_verdict *v, int depth, json_member_fn member)
{
	char key[64];
	int cut, first = 1, r;

	if (depth + 1 > RSPAMD_JSON_DEPTH_MAX)
		return -1;
	json_ws(j);
	if (j->p >= j->end || *j->p != '{')
		return -1;
	j->p++;
	for (;;) {
		json_ws(j);
		if (first && j->p < j->end && *j->p == '}') {
			j->p++;
			return 0;
		}
		if (json_string(j, key, sizeof(key), &cut) < 0)
			return -1;
		if (cut)
			key[0] = '\0'; /* no key of ours is that long: skip it */
		json_ws(j);
		if (j->p >= j->end || *j->p != ':')
			return -1;
		j->p++;
		json_ws(j);
		if (member(key, j, v, depth + 1) < 0)
			return -1;
		r = json_next(j, '}');
		if (r != 0)
			return r < 0 ? -1 : 0;
		first = 0;
	}
}

static int messages_member(const char *key, struct json *j, struct rspamd_verdict *v, int depth)
{
	int cut;

	if (strcmp(key, "smtp_message") == 0) {
		if (j->p >= j->end || *j->p != '"')
			return -1;
		return json_string(j, v->smtp_message, sizeof(v->smtp_message), &cut);
	}
	return json_skip(j, depth);
}

static const struct {
	const char *name;
	enum rspamd_action action;
} actions[] = {
	{ "no action", RSPAMD_NO_ACTION },
	{ "greylist", RSPAMD_GREYLIST },
	{ "add header", RSPAMD_ADD_HEADER },
	{ "quarantine", RSPAMD_ADD_HEADER },
	{ "rewrite subject", RSPAMD_REWRITE_SUBJECT },
	{ "soft reject", RSPAMD_SOFT_REJECT },
	{ "reject", RSPAMD_REJECT },
	{ "discard", RSPAMD_REJECT },
};

static int top_member(const char *key, struct json *j, struct rspamd_verdict *v, int depth)
{
	int cut;

	if (strcmp(key, "action") == 0) {
		if (j->p >= j->end || *j->p != '"' ||
		    json_string(j, v->action_name, sizeof(v->action_name), &cut) < 0)
			return -1;
		if (cut)
			v->action_name[0] = '\0';
		return 0;
	}
	if (strcmp(key, "score") == 0) {
		v->has_score = 1;
		return json_number(j, &v->score);
	}
	if (strcmp(key, "required_score") == 0) {
		v->has_required = 1;
		return json_number(j, &v->required_score);
	}
	if (strcmp(key, "subject") == 0) {
		if (j->p >= j->end || *j->p != '"' ||
		    json_string(j, v->subject, sizeof(v->subject), &v->subject_too_long) < 0)
			return -1;
		if (v->subject_too_long)
			v->subject[0] = '\0';
		return 0;
	}
	if (strcmp(key, "messages") == 0) {
		if (j->p < j->end && *j->p == '{')
			return json_object(j, v, depth, messages_member);
		return json_skip(j, depth);
	}
	return json_skip(j, depth);
}

int rspamd_json_parse(const char *body, size_t len, struct rspamd_verdict *v)
{
	struct json j = { body, body + len };

	memset(v, 0, sizeof(*v));
	v->action = RSPAMD_NO_ACTION;
	if (json_object(&j, v, 0, top_member) < 0)
		return -1;
	json_ws(&j);
	if (j.p != j.end || !v->action_name[0])
		return -1;
	for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
		if (strcmp(v->action_name, actions[i].name) == 0) {
			v->action = actions[i].action;
			return 0;
		}
	return -1;
}

/* ---- the HTTP response -------------------------------------------------- */

/* The end of the line starting at p (at its LF), or NULL within len. */
static const char *line_end(const char *p, const char *end)
{
	const char *lf = memchr(p, '\n', (size_t)(end - p));
	return lf;
}

int rspamd_http_parse(const char *buf, size_t len, int eof, int *status, size_t *body_off,
		      size_t *body_len)
{
	const char *p = buf, *end = buf + len, *lf;
	long long content_length = -1;
	size_t head;
	int code;

	/* the head: status line, fields, an empty line (CRLF or LF) */
	lf = line_end(p, end);
	if (!lf)
		return len > RSPAMD_HTTP_HEAD_MAX ? -1 : (eof ? -1 : 0);
	if (lf - p < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
	    p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
	    (lf - p > 12 && p[12] != ' ' && p[12] != '\r'))
		return -1;
	code = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	for (p = lf + 1;; p = lf + 1) {
		const char *colon, *v, *ve;
		size_t n;

		if ((size_t)(p - buf) > RSPAMD_HTTP_HEAD_MAX)
			return -1;
		lf = line_end(p, end);
		if (!lf)
			return len > RSPAMD_HTTP_HEAD_MAX ? -1 : (eof ? -1 : 0);
		n = (size_t)(lf - p);
		if (n > 0 && p[n - 1] == '\r')
			n--;
		if (n == 0)
			break;
		colon = memchr(p, ':', n);
		if (!colon || colon == p || *p == ' ' || *p == '\t')
			return -1; /* no obsolete folding (RFC 9112 5.2) */
		for (v = colon + 1; v < p + n && (*v == ' ' || *v == '\t'); v++)
			;
		for (ve = p + n; ve > v && (ve[-1] == ' ' || ve[-1] == '\t'); ve--)
			;
		if ((size_t)(colon - p) == 14 && strncasecmp(p, "Content-Length", 14) == 0) {
			long long cl = 0;

			if (ve == v || content_length >= 0)
				return -1;
			for (const char *d = v; d < ve; d++) {
				if (*d < '0' || *d > '9')
					return -1;
				cl = cl * 10 + (*d - '0');
				if (cl > RSPAMD_REPLY_MAX)
					return -1;
			}
			content_length = cl;
		} else if (((size_t)(colon - p) == 17 && strncasecmp(p, "Transfer-Encoding", 17) == 0) ||
			   ((size_t)(colon - p) == 16 && strncasecmp(p, "Content-Encoding", 16) == 0) ||
			   ((size_t)(colon - p) == 11 && strncasecmp(p, "Compression", 11) == 0)) {
			/* We ask for neither; identity is all we read. */
			if (!(ve - v == 8 && strncasecmp(v, "identity", 8) == 0))
				return -1;
		}
	}
	head = (size_t)(lf + 1 - buf);
	if (content_length >= 0) {
		if (len - head < (size_t)content_length)
			return eof ? -1 : 0;
		*body_len = (size_t)content_length;
	} else {
		if (!eof)
			return len > RSPAMD_REPLY_MAX ? -1 : 0;
		*body_len = len - head;
	}
	if (head + *body_len > RSPAMD_REPLY_MAX)
		return -1;
	*status = code;
	*body_off = head;
	return 1;
}

/* ---- the setting -------------------------------------------------------- */

int rspamd_endpoint_parse(const char *where, char *host, size_t hcap, char *port, size_t pcap,
			  int *is_unix)
{
	const char *colon, *h = where, *hend;
	size_t hl;

	*is_unix = 0;
	if (!where || !*where)
		return -1;
	if (where[0] == '/') {
		if (strlen(where) >= hcap || strlen(where) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return -1;
		snprintf(host, hcap, "%s", where);
		port[0] = '\0';
		*is_unix = 1;
		return 0;
	}
	if (where[0] == '[') {
		hend = strchr(where, ']');
		if (!hend || hend == where + 1)
			return -1;
		h = where + 1;
		colon = hend[1] == ':' ? hend + 1 : NULL;
		if (hend[1] && !colon)
			return -1;
	} else {
		colon = strchr(where, ':');
		if (colon && strchr(colon + 1, ':'))
			return -1; /* a bare IPv6 address: write [addr]:port */
		hend = colon ? colon : where + strlen(where);
	}
	hl = (size_t)(hend - h);
	if (hl == 0 || hl >= hcap)
		return -1;
	for (size_t i = 0; i < hl; i++)
		if (h[i] <= ' ' || h[i] > '~' || h[i] == '/' || h[i] == '[' || h[i] == ']')
			return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (colon) {
		long n = 0;
		const char *d = colon + 1;

		if (!*d || strlen(d) > 5)
			return -1;
		for (; *d; d++) {
			if (*d < '0' || *d > '9')
				return -1;
			n = n * 10 + (*d - '0');
		}
		if (n < 1 || n > 65535)
			return -1;
		snprintf(port, pcap, "%ld", n);
	} else {
		snprintf(port, pcap, "%s", RSPAMD_DEFAULT_PORT);
	}
	return 0;
}

/* ---- texts for the message and the reply -------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Appends s (n octets) to out at *len; -1 when it does not fit. */
static int add(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
	if (*len + n + 1 > cap)
		return -1;
	memcpy(out + *len, s, n);
	*len += n;
	out[*len] = '\0';
	return 0;
}

/* An encoded word holds at most this many octets of text: 60 base64
 * characters, 72 with "=?UTF-8?B?" and "?=" (RFC 2047 2: at most 75). */
#define ENCODED_WORD_TEXT 45
/* RFC 5322 2.1.1: lines should be at most 78 characters. */
#define FIELD_LINE_SHOULD 78

long rspamd_subject_field(const char *text, size_t len, char *out, size_t cap)
{
	char clean[RSPAMD_SUBJECT_MAX + 1];
	size_t n = 0, olen = 0, col;
	int ascii = 1;

	if (len > RSPAMD_SUBJECT_MAX)
		len = RSPAMD_SUBJECT_MAX;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		if (c < 0x20 || c == 0x7f)
			c = ' ';
		if (c >= 0x80)
			ascii = 0;
		clean[n++] = (char)c;
	}
	/* no trailing space before the LF, no leading one after the colon */
	while (n > 0 && clean[n - 1] == ' ')
		n--;
	if (add(out, cap, &olen, "Subject:", 8) < 0)
		return -1;
	col = 8;
	if (ascii) {
		size_t i = 0;
		int first = 1;

		/* Folded before a run of spaces, so unfolding (RFC 5322
		 * 2.2.3: removing the LF) gives the text back. */
		while (i < n) {
			size_t s0 = i, gap, w, wl;

			while (i < n && clean[i] == ' ')
				i++;
			gap = first ? 1 : i - s0;
			w = i;
			while (i < n && clean[i] != ' ')
				i++;
			wl = i - w;
			if (!first && col + gap + wl > FIELD_LINE_SHOULD) {
				if (add(out, cap, &olen, "\n", 1) < 0)
					return -1;
				col = 0;
			}
			for (size_t k = 0; k < gap; k++)
				if (add(out, cap, &olen, " ", 1) < 0)
					return -1;
			if (add(out, cap, &olen, clean + w, wl) < 0)
				return -1;
			col += gap + wl;
			first = 0;
		}
	} else {
		size_t i = 0;

		while (i < n) {
			char word[ENCODED_WORD_TEXT * 4 / 3 + 24];
			size_t take = n - i > ENCODED_WORD_TEXT ? ENCODED_WORD_TEXT : n - i, wl = 0;

			/* whole UTF-8 characters: do not end before a continuation */
			if (i + take < n)
				while (take > 1 && ((unsigned char)clean[i + take] & 0xc0) == 0x80)
					take--;
			memcpy(word, "=?UTF-8?B?", 10);
			wl = 10;
			for (size_t k = 0; k < take; k += 3) {
				unsigned a = (unsigned char)clean[i + k];
				unsigned b = k + 1 < take ? (unsigned char)clean[i + k + 1] : 0;
				unsigned c = k + 2 < take ? (unsigned char)clean[i + k + 2] : 0;

				word[wl++] = b64[a >> 2];
				word[wl++] = b64[((a & 3) << 4) | (b >> 4)];
				word[wl++] = k + 1 < take ? b64[((b & 15) << 2) | (c >> 6)] : '=';
				word[wl++] = k + 2 < take ? b64[c & 63] : '=';
			}
			memcpy(word + wl, "?=", 2);
			wl += 2;
			if (i > 0 && add(out, cap, &olen, "\n", 1) < 0)
				return -1;
			if (add(out, cap, &olen, " ", 1) < 0 || add(out, cap, &olen, word, wl) < 0)
				return -1;
			i += take;
		}
	}
	if (add(out, cap, &olen, "\n", 1) < 0)
		return -1;
	return (long)olen;
}

void rspamd_reply_text(const char *text, char *out, size_t cap)
{
	size_t n = 0;

	if (!cap)
		return;
	for (; text && *text && n + 1 < cap && n < RSPAMD_MESSAGE_SHOWN; text++)
		out[n++] = (*text >= 0x20 && *text < 0x7f) ? *text : '?';
	out[n] = '\0';
}

/* ---- the exchange ------------------------------------------------------- */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, long long deadline)
{
	for (;;) {
		struct pollfd p = { fd, events, 0 };
		long long left = deadline - now_ms();
		int r;

		if (left <= 0)
			return 0;
		r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static int connect_by(int family, const struct sockaddr *sa, socklen_t salen, long long deadline,
		      int *timed_out)
{
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), err = 0;
	socklen_t el = sizeof(err);

	if (fd < 0)
		return -1;
	/* The request goes out as the head, then the message in pieces:
	 * with Nagle's algorithm a piece would wait for the peer's delayed
	 * ACK of the one before (40 ms on loopback). */
	if (family != AF_UNIX) {
		int one = 1;

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	if (connect(fd, sa, salen) == 0)
		return fd;
	if (errno != EINPROGRESS && errno != EAGAIN)
		goto fail;
	switch (wait_fd(fd, POLLOUT, deadline)) {
	case 0:
		*timed_out = 1;
		errno = ETIMEDOUT;
		goto fail;
	case -1:
		goto fail;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
		goto fail;
	if (err) {
		errno = err;
		goto fail;
	}
	return fd;
fail:
	err = errno;
	close(fd);
	errno = err;
	return -1;
}

static int rspamd_connect(const char *where, long long deadline, int *timed_out, char *why,
			  size_t whycap)
{
	char host[256], port[8];
	int is_unix, fd = -1;

	*timed_out = 0;
	if (rspamd_endpoint_parse(where, host, sizeof(host), port, sizeof(port), &is_unix) < 0) {
		snprintf(why, whycap, "the setting rspamd is not a socket path or host:port");
		errno = EINVAL;
		return -1;
	}
	if (is_unix) {
		struct sockaddr_un sun;

		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		memcpy(sun.sun_path, host, strlen(host) + 1);
		fd = connect_by(AF_UNIX, (struct sockaddr *)&sun, sizeof(sun), deadline, timed_out);
	} else {
		struct addrinfo hints, *res = NULL;
		int r;

		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICSERV;
		r = getaddrinfo(host, port, &hints, &res);
		if (r != 0) {
			snprintf(why, whycap, "cannot resolve %s: %s", host, gai_strerror(r));
			errno = EHOSTUNREACH;
			return -1;
		}
		for (struct addrinfo *ai = res; ai && fd < 0 && !*timed_out; ai = ai->ai_next)
			fd = connect_by(ai->ai_family, ai->ai_addr, ai->ai_addrlen, deadline, timed_out);
		freeaddrinfo(res);
	}
	if (fd < 0)
		snprintf(why, whycap, "connect to %s: %s", where, strerror(errno));
	return fd;
}

/* Writes all of buf to the socket by deadline; more: more follows at
 * once (MSG_MORE: the kernel may join it to what comes next). 0, -1
 * (errno; ETIMEDOUT). */
static int send_all(int fd, const char *buf, size_t len, int more, long long deadline)
{
	while (len > 0) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | (more ? MSG_MORE : 0));

		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -1;
		switch (wait_fd(fd, POLLOUT, deadline)) {
		case 0:
			errno = ETIMEDOUT;
			return -1;
		case -1:
			return -1;
		}
	}
	return 0;
}

/* "Name: value\r\n", value's controls made '?' (it came from a client:
 * no field of its own may begin inside ours). */
static int head_field(char *out, size_t cap, size_t *len, const char *name, const char *value)
{
	if (add(out, cap, len, name, strlen(name)) < 0 || add(out, cap, len, ": ", 2) < 0)
		return -1;
	for (const char *v = value; *v; v++) {
		char c = ((unsigned char)*v < 0x20 || *v == 0x7f) ? '?' : *v;

		if (add(out, cap, len, &c, 1) < 0)
			return -1;
	}
	return add(out, cap, len, "\r\n", 2);
}

const char *rspamd_status_name(enum rspamd_status s)
{
	switch (s) {
	case RSPAMD_OK:
		return "ok";
	case RSPAMD_UNREACHABLE:
		return "unreachable";
	case RSPAMD_TIMEOUT:
		return "timeout";
	case RSPAMD_BAD_REPLY:
		return "bad_reply";
	}
	return "?";
}

enum rspamd_status rspamd_check(const char *where, const struct rspamd_request *req, int fd,
				off_t size, long long deadline, struct rspamd_verdict *v, char *why,
				size_t whycap)
{
	/* not re-entered: the JSON walk (json_skip recurses) never calls this */
	static char head[RSPAMD_REQUEST_HEAD_MAX], reply[RSPAMD_REPLY_MAX + 1], chunk[16384];
	char num[32], from[ADDRESS_PATH_MAX + 3];
	size_t hl = 0, rl = 0, body_off = 0, body_len = 0;
	enum rspamd_status st = RSPAMD_BAD_REPLY;
	int sock, timed_out, status = 0, done = 0, eof = 0;
	off_t at = 0;

	memset(v, 0, sizeof(*v));
	why[0] = '\0';
	sock = rspamd_connect(where, deadline, &timed_out, why, whycap);
	if (sock < 0)
		return timed_out ? RSPAMD_TIMEOUT : RSPAMD_UNREACHABLE;

	/* rspamd's protocol: the envelope in fields of the request
	 * (rspamd.com/doc/developers/protocol.html). */
	snprintf(num, sizeof(num), "%lld", (long long)size);
	snprintf(from, sizeof(from), "<%s>", req->from ? req->from : "");
	if (add(head, sizeof(head), &hl, "POST /checkv2 HTTP/1.1\r\n", 24) < 0 ||
	    head_field(head, sizeof(head), &hl, "Host", "localhost") < 0 ||
	    head_field(head, sizeof(head), &hl, "Connection", "close") < 0 ||
	    head_field(head, sizeof(head), &hl, "Content-Length", num) < 0 ||
	    (req->ip && req->ip[0] && head_field(head, sizeof(head), &hl, "IP", req->ip) < 0) ||
	    (req->ip && req->ip[0] && req->hostname && req->hostname[0] &&
	     head_field(head, sizeof(head), &hl, "Hostname", req->hostname) < 0) ||
	    (req->helo && req->helo[0] && head_field(head, sizeof(head), &hl, "Helo", req->helo) < 0) ||
	    head_field(head, sizeof(head), &hl, "From", from) < 0 ||
	    (req->queue_id && head_field(head, sizeof(head), &hl, "Queue-Id", req->queue_id) < 0) ||
	    (req->user && req->user[0] && head_field(head, sizeof(head), &hl, "User", req->user) < 0) ||
	    (req->mta_name && req->mta_name[0] &&
	     head_field(head, sizeof(head), &hl, "MTA-Name", req->mta_name) < 0))
		goto too_long;
	for (size_t i = 0; i < req->nrcpts; i++) {
		char rcpt[ADDRESS_PATH_MAX + 3];

		snprintf(rcpt, sizeof(rcpt), "<%s>", req->rcpts[i]);
		if (head_field(head, sizeof(head), &hl, "Rcpt", rcpt) < 0)
			goto too_long;
	}
	if (add(head, sizeof(head), &hl, "\r\n", 2) < 0)
		goto too_long;

	if (send_all(sock, head, hl, size > 0, deadline) < 0)
		goto io_error;
	while (at < size) {
		ssize_t n = pread(fd, chunk, sizeof(chunk) < (size_t)(size - at) ? sizeof(chunk) :
										  (size_t)(size - at), at);
		if (n <= 0) {
			snprintf(why, whycap, "reading the message: %s", n < 0 ? strerror(errno) : "short");
			goto out;
		}
		if (send_all(sock, chunk, (size_t)n, at + n < size, deadline) < 0) {
			/* rspamd may have answered (and closed) early: read it */
			if (errno == EPIPE || errno == ECONNRESET)
				break;
			goto io_error;
		}
		at += n;
	}

	while (!done) {
		ssize_t n;
		int r;

		if (rl >= RSPAMD_REPLY_MAX) {
			snprintf(why, whycap, "reply larger than %d octets", RSPAMD_REPLY_MAX);
			goto out;
		}
		n = recv(sock, reply + rl, RSPAMD_REPLY_MAX - rl, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			switch (wait_fd(sock, POLLIN, deadline)) {
			case 0:
				errno = ETIMEDOUT;
				goto io_error;
			case -1:
				goto io_error;
			}
			continue;
		}
		if (n < 0)
			goto io_error;
		if (n == 0)
			eof = 1;
		rl += (size_t)n;
		r = rspamd_http_parse(reply, rl, eof, &status, &body_off, &body_len);
		if (r < 0) {
			snprintf(why, whycap, "malformed or too large HTTP reply");
			goto out;
		}
		done = r == 1;
	}
	if (status != 200) {
		snprintf(why, whycap, "HTTP status %d", status);
		goto out;
	}
	if (rspamd_json_parse(reply + body_off, body_len, v) < 0) {
		char shown[RSPAMD_ACTION_MAX];

		rspamd_reply_text(v->action_name, shown, sizeof(shown));
		snprintf(why, whycap, "unreadable verdict%s%s", shown[0] ? ": action " : "", shown);
		goto out;
	}
	st = RSPAMD_OK;
	goto out;

too_long:
	snprintf(why, whycap, "request head too long");
	goto out;
io_error:
	if (errno == ETIMEDOUT) {
		st = RSPAMD_TIMEOUT;
		snprintf(why, whycap, "no verdict by the deadline");
	} else {
		snprintf(why, whycap, "talking to %s: %s", where, strerror(errno));
	}
out:
	close(sock);
	return st;
}
