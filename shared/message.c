#include "message.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

#include "limits.h"

void data_reader_init(struct data_reader *r)
{
	memset(r, 0, sizeof(*r));
	r->at_line_start = 1;
	r->in_headers = 1;
}

/* Header scan at the start of a line (only lines that begin a chunk can
 * begin a line, since chunks end at LF). */
static void scan_header_line(struct data_reader *r, const char *p, size_t len)
{
	if (!r->in_headers)
		return;
	if ((len >= 2 && p[0] == '\r' && p[1] == '\n') || (len >= 1 && p[0] == '\n')) {
		r->in_headers = 0;
		return;
	}
	if (len >= 9 && strncasecmp(p, "Received:", 9) == 0)
		r->received++;
	else if (len >= 1 && p[0] != ' ' && p[0] != '\t' && !memchr(p, ':', len))
		r->in_headers = 0; /* not a header line: the body began */
}

size_t line_wrap_feed(struct line_wrap *w, const char *in, size_t len, char *out)
{
	const size_t mark = MESSAGE_LINE_MAX - MESSAGE_LINE_BREAK_SLACK;
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];
		size_t p, rest;

		if (c == '\n') {
			memcpy(out + o, w->hold, w->nhold);
			o += w->nhold;
			out[o++] = '\n';
			w->col = w->nhold = 0;
			continue;
		}
		if (w->col < mark) {
			out[o++] = (char)c;
			w->col++;
			continue;
		}
		/* Past the mark, bytes wait until the line is known to be too
		 * long (or ends). */
		w->hold[w->nhold++] = (char)c;
		if (w->col + w->nhold <= MESSAGE_LINE_MAX)
			continue;
		/* One byte too many: break before the last held byte that
		 * starts a character (UTF-8 stays whole), else before the
		 * newest byte. */
		p = w->nhold - 1;
		for (size_t k = w->nhold; k-- > 0;) {
			if (((unsigned char)w->hold[k] & 0xc0) != 0x80) {
				p = k;
				break;
			}
		}
		memcpy(out + o, w->hold, p);
		o += p;
		out[o++] = '\n';
		out[o++] = ' ';
		w->breaks++;
		rest = w->nhold - p;
		memcpy(out + o, w->hold + p, rest);
		o += rest;
		w->col = 1 + rest;
		w->nhold = 0;
	}
	return o;
}

size_t line_wrap_finish(struct line_wrap *w, char *out)
{
	size_t n = w->nhold;

	memcpy(out, w->hold, n);
	w->col += n;
	w->nhold = 0;
	return n;
}

size_t data_feed(struct data_reader *r, const char *chunk, size_t len, char *out)
{
	size_t o = 0, i = 0;

	if (r->ended || len == 0)
		return 0;
	if (r->pending_cr) {
		r->pending_cr = 0;
		if (chunk[0] == '\n') {
			out[o++] = '\n';
			r->lf_count++;
			r->wire_bytes += 1;
			r->at_line_start = 1;
			i = 1;
			if (i == len)
				return o;
		} else {
			r->bare = 1;
			r->at_line_start = 0;
		}
	}
	if (r->at_line_start && i == 0) {
		if (len == 3 && memcmp(chunk, ".\r\n", 3) == 0) {
			r->ended = 1;
			return 0;
		}
		if (chunk[0] == '.')
			i = 1; /* RFC 5321 4.5.2: drop the stuffed dot */
		/* Scan the line as it is stored: ".Received:" is a Received
		 * header once unstuffed. */
		scan_header_line(r, chunk + i, len - i);
	}
	for (; i < len; i++) {
		unsigned char c = (unsigned char)chunk[i];

		if (c == '\r') {
			if (i + 1 == len) {
				r->pending_cr = 1;
				r->wire_bytes++;
				r->at_line_start = 0;
				return o;
			}
			if (chunk[i + 1] != '\n') {
				r->bare = 1;
				out[o++] = '\r';
				r->wire_bytes++;
				continue;
			}
			/* CRLF: store LF */
			out[o++] = '\n';
			r->lf_count++;
			r->wire_bytes += 2;
			i++;
			r->at_line_start = 1;
			continue;
		}
		if (c == '\n') {
			r->bare = 1;
			out[o++] = '\n';
			r->lf_count++;
			r->wire_bytes++;
			r->at_line_start = 0;
			continue;
		}
		if (c == 0)
			r->has_nul = 1;
		if (c >= 0x80)
			r->eight_bit = 1;
		out[o++] = (char)c;
		r->wire_bytes++;
		r->at_line_start = 0;
	}
	return o;
}

size_t wire_encode(int *at_line_start, const char *in, size_t len, char *out)
{
	size_t o = 0, i = 0;

	/* A line at a time: memchr and memcpy, not a loop over bytes (a
	 * POP3 RETR of a large message spends its time here). */
	while (i < len) {
		const char *lf;
		size_t end, n;

		if (*at_line_start == 1 && in[i] == '.')
			out[o++] = '.';
		lf = memchr(in + i, '\n', len - i);
		end = lf ? (size_t)(lf - in) : len;
		n = end - i;
		if (n > 0) {
			memcpy(out + o, in + i, n);
			o += n;
			*at_line_start = in[end - 1] == '\r' ? 2 : 0;
		}
		if (!lf)
			break;
		/* A file that already holds CRLF (not written by postage)
		 * keeps its CR: no CR CR LF. */
		if (*at_line_start != 2)
			out[o++] = '\r';
		out[o++] = '\n';
		*at_line_start = 1;
		i = end + 1;
	}
	return o;
}

int command_split(const char *line, char *verb, size_t cap, const char **arg)
{
	size_t n = 0;

	while (line[n] && line[n] != ' ') {
		if (n + 1 >= cap)
			return -1;
		verb[n] = (char)toupper((unsigned char)line[n]);
		n++;
	}
	verb[n] = '\0';
	if (n == 0)
		return -1;
	*arg = line[n] == ' ' ? line + n + 1 : line + n;
	return 0;
}

int esmtp_params(const char *s, int (*each)(void *ctx, const char *key, const char *value),
		 void *ctx)
{
	char key[64], value[512];

	for (;;) {
		size_t k = 0, v = 0;
		int has_value = 0, r;

		while (*s == ' ')
			s++;
		if (!*s)
			return 0;
		/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
		if (!isalnum((unsigned char)*s))
			return -1;
		while (*s && *s != ' ' && *s != '=') {
			if (!isalnum((unsigned char)*s) && *s != '-')
				return -1;
			if (k + 1 >= sizeof(key))
				return -1;
			key[k++] = (char)toupper((unsigned char)*s++);
		}
		key[k] = '\0';
		if (*s == '=') {
			has_value = 1;
			s++;
			/* esmtp-value = 1*(%d33-60 / %d62-126) (UTF-8 allowed by RFC 6531) */
			while (*s && *s != ' ') {
				unsigned char c = (unsigned char)*s;
				if ((c < 33 || c == '=' || c == 127) && c < 0x80)
					return -1;
				if (v + 1 >= sizeof(value))
					return -1;
				value[v++] = *s++;
			}
			value[v] = '\0';
			if (v == 0)
				return -1;
		}
		r = each(ctx, key, has_value ? value : NULL);
		if (r)
			return r;
	}
}
