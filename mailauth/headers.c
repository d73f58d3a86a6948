#include "headers.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "address.h"
#include "limits.h"

static int is_ftext(unsigned char c)
{
	/* RFC 5322 2.2: printable US-ASCII except colon. */
	return c >= 33 && c <= 126 && c != ':';
}

static int read_at(int fd, char *buf, size_t len, off_t off)
{
	while (len > 0) {
		ssize_t n = pread(fd, buf, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int header_block_read(int fd, off_t start, off_t size, struct header_block *hb)
{
	size_t avail, pos = 0;

	memset(hb, 0, sizeof(*hb));
	hb->start = start;
	hb->size = size;
	if (start > size)
		start = size;
	avail = (size_t)(size - start);
	if (avail > MESSAGE_HEADER_MAX + 1)
		avail = MESSAGE_HEADER_MAX + 1;
	hb->buf = malloc(avail + 1);
	hb->fields = calloc(MESSAGE_HEADER_FIELDS_MAX, sizeof(*hb->fields));
	if (!hb->buf || !hb->fields || read_at(fd, hb->buf, avail, start) < 0) {
		int e = errno;
		header_block_free(hb);
		errno = e;
		return -1;
	}
	hb->buf[avail] = '\0';

	for (;;) {
		const char *line = hb->buf + pos, *lf, *colon, *c;
		struct header_field *f;
		size_t llen;

		if (pos >= avail || line[0] == '\n')
			break; /* the end of the file, or the empty line */
		lf = memchr(line, '\n', avail - pos);
		if (!lf && avail > MESSAGE_HEADER_MAX)
			goto too_big;
		llen = lf ? (size_t)(lf - line) + 1 : avail - pos;
		if ((line[0] == ' ' || line[0] == '\t') && hb->n > 0) {
			hb->fields[hb->n - 1].raw_len += llen;
			pos += llen;
			if (pos > MESSAGE_HEADER_MAX)
				goto too_big;
			continue;
		}
		colon = memchr(line, ':', llen);
		if (!colon || colon == line)
			break; /* not a field: the body begins here */
		for (c = line; c < colon && (is_ftext((unsigned char)*c) || *c == ' ' || *c == '\t'); c++)
			;
		if (c < colon || line[0] == ' ' || line[0] == '\t')
			break;
		if (hb->n >= MESSAGE_HEADER_FIELDS_MAX)
			goto too_big;
		f = &hb->fields[hb->n++];
		f->name = line;
		f->name_len = (size_t)(colon - line);
		/* Obsolete syntax allows spaces before the colon (RFC 5322 4.5). */
		while (f->name_len > 0 && (line[f->name_len - 1] == ' ' || line[f->name_len - 1] == '\t'))
			f->name_len--;
		f->raw = line;
		f->raw_len = llen;
		f->offset = start + (off_t)pos;
		pos += llen;
		if (pos > MESSAGE_HEADER_MAX)
			goto too_big;
	}
	if (pos > MESSAGE_HEADER_MAX)
		goto too_big;
	hb->len = pos;
	if (pos < avail && hb->buf[pos] == '\n')
		hb->body = start + (off_t)pos + 1;
	else
		hb->body = start + (off_t)pos;
	for (size_t i = 0; i < hb->n; i++) {
		struct header_field *f = &hb->fields[i];
		const char *colon = memchr(f->raw + f->name_len, ':', f->raw_len - f->name_len);
		f->value = colon + 1;
		f->value_len = (size_t)(f->raw + f->raw_len - f->value);
		if (f->value_len > 0 && f->value[f->value_len - 1] == '\n')
			f->value_len--;
	}
	return 0;
too_big:
	header_block_free(hb);
	errno = EFBIG;
	return -1;
}

void header_block_free(struct header_block *hb)
{
	free(hb->buf);
	free(hb->fields);
	hb->buf = NULL;
	hb->fields = NULL;
	hb->n = 0;
}

int header_is(const struct header_field *f, const char *name)
{
	size_t n = strlen(name);

	return f->name_len == n && strncasecmp(f->name, name, n) == 0;
}

const struct header_field *header_next(const struct header_block *hb, const char *name, long *pos)
{
	for (long i = *pos + 1; i < (long)hb->n; i++) {
		if (header_is(&hb->fields[i], name)) {
			*pos = i;
			return &hb->fields[i];
		}
	}
	*pos = (long)hb->n;
	return NULL;
}

long header_value_flat(const struct header_field *f, char *out, size_t cap)
{
	size_t o = 0;
	int space = 0;

	for (size_t i = 0; i < f->value_len; i++) {
		char c = f->value[i];

		if (c == '\r' || c == '\n')
			continue;
		if (c == ' ' || c == '\t') {
			space = o > 0;
			continue;
		}
		if (o + (space ? 2 : 1) >= cap)
			return -1;
		if (space)
			out[o++] = ' ';
		space = 0;
		out[o++] = c;
	}
	if (cap == 0)
		return -1;
	out[o] = '\0';
	return (long)o;
}

/* One address's domain (the text after its last '@'), lower-cased, into
 * out unless it is there already; beyond max distinct domains it is
 * counted in *unchecked instead. Not a valid domain name (an address
 * literal, a typo): skipped. */
static size_t add_domain(const char *d, size_t len, char (*out)[ADDRESS_DOMAIN_MAX + 1], size_t n,
			 size_t max, size_t *unchecked)
{
	char dom[ADDRESS_DOMAIN_MAX + 1];

	while (len > 0 && d[len - 1] == '.')
		len--;
	if (len == 0 || len > ADDRESS_DOMAIN_MAX || *d == '[' || !address_domain_valid(d, len, 1))
		return n;
	for (size_t i = 0; i < len; i++)
		dom[i] = d[i] >= 'A' && d[i] <= 'Z' ? (char)(d[i] - 'A' + 'a') : d[i];
	dom[len] = '\0';
	for (size_t k = 0; k < n; k++)
		if (strcmp(out[k], dom) == 0)
			return n;
	if (n >= max) {
		(*unchecked)++;
		return n;
	}
	memcpy(out[n], dom, len + 1);
	return n + 1;
}

/* Walks an address-list field (RFC 5322 3.4: display names, comments,
 * quoted strings, groups): angle() for the text of each angle-addr, as
 * its '>' closes it (or the field ends), element() at the end of each
 * element with its text outside angle brackets. A quoted-pair keeps its
 * backslash when keep_escapes (an address to parse again), else only the
 * character. lost: bytes that did not fit HEADER_MAILBOX_MAX. Returns 1
 * when a quote, comment or angle bracket was left open. */
struct address_walk {
	void (*angle)(void *ctx, const char *text, size_t len, int lost);
	void (*element)(void *ctx, const char *text, size_t len, int angles, int lost);
	void *ctx;
	int keep_escapes;
};

static int address_list_walk(const struct header_field *f, const struct address_walk *w)
{
	char elem[HEADER_MAILBOX_MAX], angle[HEADER_MAILBOX_MAX];
	size_t el = 0, al = 0;
	int quoted = 0, comment = 0, in_angle = 0, angles = 0, lost_angle = 0, lost_elem = 0;

	for (size_t i = 0; i <= f->value_len; i++) {
		char c = i < f->value_len ? f->value[i] : ',';
		char *buf = in_angle ? angle : elem;
		size_t *len = in_angle ? &al : &el;
		int *lost = in_angle ? &lost_angle : &lost_elem;

		if (i == f->value_len && in_angle) {
			/* an angle-addr the field never closed */
			w->angle(w->ctx, angle, al, lost_angle);
			in_angle = 0;
			angles++;
			buf = elem;
			len = &el;
			lost = &lost_elem;
		}
		if (c == '\r' || c == '\n')
			continue;
		if (c == '\\' && (quoted || comment) && i + 1 < f->value_len) {
			i++;
			if (!quoted)
				continue;
			if (w->keep_escapes) {
				if (*len + 1 < sizeof(elem))
					buf[(*len)++] = '\\';
				else
					*lost = 1;
			}
			if (*len + 1 < sizeof(elem))
				buf[(*len)++] = f->value[i];
			else
				*lost = 1;
			continue;
		}
		if (comment) {
			if (c == '(')
				comment++;
			else if (c == ')')
				comment--;
			continue;
		}
		if (c == '"') {
			quoted = !quoted;
		} else if (quoted) {
			/* inside a quoted string: kept, '@' and all */
		} else if (c == '(') {
			comment = 1;
			continue;
		} else if (c == '<' && !in_angle) {
			in_angle = 1;
			al = 0;
			lost_angle = 0;
			continue;
		} else if (c == '>' && in_angle) {
			w->angle(w->ctx, angle, al, lost_angle);
			in_angle = 0;
			angles++;
			continue;
		} else if (!in_angle && c == ':') {
			el = 0; /* a group's display name */
			continue;
		} else if (!in_angle && (c == ',' || c == ';')) {
			w->element(w->ctx, elem, el, angles, lost_elem);
			el = 0;
			angles = lost_elem = 0;
			quoted = 0;
			continue;
		}
		if (*len + 1 < sizeof(elem))
			buf[(*len)++] = c;
		else
			*lost = 1;
	}
	return quoted || comment;
}

/* header_mailboxes: each element one mailbox, else malformed. */
struct mailboxes_ctx {
	char (*out)[ADDRESS_PATH_MAX + 1];
	size_t n, max;
	int malformed;
	char angle[ADDRESS_PATH_MAX + 1];
	size_t angle_len;
	int angle_bad;
};

static void mailbox_store(struct mailboxes_ctx *m, const char *text, size_t len)
{
	const char *at = NULL, *end = text + len, *start = text;

	while (start < end && (*start == ' ' || *start == '\t'))
		start++;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	if (start == end)
		return; /* an empty element: "a@b, , c@d" or an empty group */
	for (const char *c = start; c < end; c++) {
		if (*c == '@')
			at = c;
		if ((unsigned char)*c < 0x20 || *c == 0x7f) {
			m->malformed = 1; /* NUL or a control byte: no address */
			return;
		}
	}
	if (!at || at == start || end - at - 1 <= 0 || (size_t)(end - start) > ADDRESS_PATH_MAX ||
	    at[1] == '[' || !address_domain_valid(at + 1, (size_t)(end - at - 1), 1) || m->n >= m->max) {
		m->malformed = 1;
		return;
	}
	memcpy(m->out[m->n], start, (size_t)(end - start));
	m->out[m->n++][end - start] = '\0';
}

static void mailboxes_angle(void *ctx, const char *text, size_t len, int lost)
{
	struct mailboxes_ctx *m = ctx;

	m->angle_bad = lost || len > ADDRESS_PATH_MAX;
	m->angle_len = m->angle_bad ? 0 : len;
	memcpy(m->angle, text, m->angle_len);
}

static void mailboxes_element(void *ctx, const char *text, size_t len, int angles, int lost)
{
	struct mailboxes_ctx *m = ctx;

	if (angles > 1 || (angles == 1 && m->angle_bad) || (angles == 0 && lost)) {
		m->malformed = 1;
	} else if (angles == 1) {
		if (m->angle_len == 0)
			m->malformed = 1; /* "<>" is no author */
		else
			mailbox_store(m, m->angle, m->angle_len);
	} else {
		mailbox_store(m, text, len);
	}
}

size_t header_mailboxes(const struct header_field *f, char (*out)[ADDRESS_PATH_MAX + 1],
			size_t max, int *malformed)
{
	struct mailboxes_ctx m = { .out = out, .max = max };
	const struct address_walk w = { mailboxes_angle, mailboxes_element, &m, 1 };

	if (address_list_walk(f, &w))
		m.malformed = 1;
	*malformed = m.malformed;
	return m.n;
}

/* One mailbox of an address list, or what stands in its place: the text
 * in angle brackets, or the element without them. Spaces beside '.' and
 * '@' are folding (RFC 5322 4.4, obs-local-part and obs-domain); other
 * spaces part words, and each word holding an '@' is an address. Then a
 * malformed element (two addresses, or one as an unquoted display name)
 * cannot show a reader one domain while another one is checked. */
static size_t take_domains(const char *text, size_t len, char (*out)[ADDRESS_DOMAIN_MAX + 1], size_t n,
			   size_t max, size_t *unchecked)
{
	char norm[HEADER_MAILBOX_MAX];
	size_t m = 0, w = 0;

	for (size_t i = 0; i < len && m < sizeof(norm); i++) {
		size_t j = i;

		while (j < len && (text[j] == ' ' || text[j] == '\t'))
			j++;
		if (j == i) {
			norm[m++] = text[i];
			continue;
		}
		if (m > 0 && j < len && norm[m - 1] != '.' && norm[m - 1] != '@' && text[j] != '.' &&
		    text[j] != '@')
			norm[m++] = ' ';
		i = j - 1;
	}
	for (size_t i = 0; i <= m; i++) {
		const char *at = NULL;

		if (i < m && norm[i] != ' ')
			continue;
		for (size_t k = w; k < i; k++)
			if (norm[k] == '@')
				at = norm + k;
		if (at)
			n = add_domain(at + 1, (size_t)(norm + i - at - 1), out, n, max, unchecked);
		w = i + 1;
	}
	return n;
}

/* header_address_domains: every word with an '@', in or out of angle
 * brackets (see take_domains). */
struct domains_ctx {
	char (*out)[ADDRESS_DOMAIN_MAX + 1];
	size_t n, max, *unchecked;
};

static void domains_angle(void *ctx, const char *text, size_t len, int lost)
{
	struct domains_ctx *d = ctx;

	d->n = take_domains(text, len, d->out, d->n, d->max, d->unchecked);
	/* A mailbox too long to have been read whole was not checked. */
	if (lost)
		(*d->unchecked)++;
}

static void domains_element(void *ctx, const char *text, size_t len, int angles, int lost)
{
	struct domains_ctx *d = ctx;

	d->n = take_domains(text, len, d->out, d->n, d->max, d->unchecked);
	/* A long display name beside an angle-addr is no lost mailbox. */
	if (lost && angles == 0)
		(*d->unchecked)++;
}

size_t header_address_domains(const struct header_field *f, char (*out)[ADDRESS_DOMAIN_MAX + 1],
			      size_t max, size_t *unchecked)
{
	size_t dummy = 0;
	struct domains_ctx d = { out, 0, max, unchecked ? unchecked : &dummy };
	const struct address_walk w = { domains_angle, domains_element, &d, 0 };

	*d.unchecked = 0;
	address_list_walk(f, &w);
	return d.n;
}
