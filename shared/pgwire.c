#include "pgwire.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <nettle/hmac.h>
#include <nettle/md5.h>
#include <nettle/pbkdf2.h>
#include <nettle/sha2.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base64.h"
#include "limits.h"

/* The one connection of the process. */
static int fd = -1;
static char txstatus;
/* Bytes read and not yet used. */
static unsigned char inbuf[8192];
static size_t inpos, inlen;
/* The message being read (grows up to PGWIRE_MESSAGE_MAX). */
static unsigned char *msg;
static size_t msgcap;

int pgwire_is_uri(const char *s)
{
	return s && (strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0);
}

/* ---- the URI ---- */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* n bytes of s, percent-decoded, into out (cap). 0 or -1. */
static int decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		int c = (unsigned char)s[i];

		if (c == '%') {
			int h, l;

			if (i + 2 >= n)
				return -1;
			h = hexval((unsigned char)s[i + 1]);
			l = hexval((unsigned char)s[i + 2]);
			if (h < 0 || l < 0)
				return -1;
			c = h * 16 + l;
			i += 2;
		}
		if (c == 0 || o + 1 >= cap)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

static int set_param(struct pgwire_target *t, const char *k, size_t kn, const char *v, size_t vn)
{
	char tmp[16];

	if (kn == 4 && memcmp(k, "host", 4) == 0)
		return decode(v, vn, t->host, sizeof(t->host));
	if (kn == 4 && memcmp(k, "port", 4) == 0)
		return decode(v, vn, t->port, sizeof(t->port));
	if (kn == 4 && memcmp(k, "user", 4) == 0)
		return decode(v, vn, t->user, sizeof(t->user));
	if (kn == 8 && memcmp(k, "password", 8) == 0)
		return decode(v, vn, t->password, sizeof(t->password));
	if (kn == 6 && memcmp(k, "dbname", 6) == 0)
		return decode(v, vn, t->dbname, sizeof(t->dbname));
	if (kn == 15 && memcmp(k, "connect_timeout", 15) == 0) {
		long sec;
		char *end;

		if (decode(v, vn, tmp, sizeof(tmp)) < 0)
			return -1;
		sec = strtol(tmp, &end, 10);
		if (end == tmp || *end || sec < 0)
			return -1;
		/* libpq: 0 waits for ever; here, at most an hour */
		if (sec > 0)
			t->connect_timeout_ms = (int)(sec > 3600 ? 3600 : sec) * 1000;
		return 0;
	}
	if (kn == 16 && memcmp(k, "application_name", 16) == 0)
		return 0;
	/* sslmode=disable is what we do anyway; anything else we cannot */
	if (kn == 7 && memcmp(k, "sslmode", 7) == 0)
		return vn == 7 && memcmp(v, "disable", 7) == 0 ? 0 : (vn == 6 && memcmp(v, "prefer", 6) == 0 ? 0 : -1);
	return -1; /* an option we would silently ignore: say no */
}

int pgwire_parse_uri(const char *uri, struct pgwire_target *t)
{
	const char *p, *end, *q, *at, *slash, *colon;

	memset(t, 0, sizeof(*t));
	t->connect_timeout_ms = PGWIRE_TIMEOUT_MS;
	if (strncmp(uri, "postgresql://", 13) == 0)
		p = uri + 13;
	else if (strncmp(uri, "postgres://", 11) == 0)
		p = uri + 11;
	else
		return -1;
	q = strchr(p, '?');
	end = q ? q : p + strlen(p);
	slash = memchr(p, '/', (size_t)(end - p));
	if (!slash)
		slash = end;
	/* authority: [user[:password]@][host][:port] */
	at = NULL;
	for (const char *s = p; s < slash; s++)
		if (*s == '@')
			at = s;
	if (at) {
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon) {
			if (decode(p, (size_t)(colon - p), t->user, sizeof(t->user)) < 0 ||
			    decode(colon + 1, (size_t)(at - colon - 1), t->password, sizeof(t->password)) < 0)
				return -1;
		} else if (decode(p, (size_t)(at - p), t->user, sizeof(t->user)) < 0) {
			return -1;
		}
		p = at + 1;
	}
	if (p < slash && *p == '[') { /* [IPv6]:port */
		const char *rb = memchr(p, ']', (size_t)(slash - p));

		if (!rb || decode(p + 1, (size_t)(rb - p - 1), t->host, sizeof(t->host)) < 0)
			return -1;
		p = rb + 1;
		if (p < slash && *p != ':')
			return -1;
	} else {
		colon = memchr(p, ':', (size_t)(slash - p));
		if (decode(p, (size_t)((colon ? colon : slash) - p), t->host, sizeof(t->host)) < 0)
			return -1;
		p = colon ? colon : slash;
	}
	if (p < slash && *p == ':' && decode(p + 1, (size_t)(slash - p - 1), t->port, sizeof(t->port)) < 0)
		return -1;
	if (slash < end && decode(slash + 1, (size_t)(end - slash - 1), t->dbname, sizeof(t->dbname)) < 0)
		return -1;
	while (q && *q) {
		const char *k = q + 1, *amp = strchr(k, '&'), *e = amp ? amp : k + strlen(k);
		const char *eq = memchr(k, '=', (size_t)(e - k));

		if (e > k) {
			if (!eq || set_param(t, k, (size_t)(eq - k), eq + 1, (size_t)(e - eq - 1)) < 0)
				return -1;
		}
		q = amp;
	}
	if (!t->host[0])
		snprintf(t->host, sizeof(t->host), "/run/postgresql");
	if (!t->port[0])
		snprintf(t->port, sizeof(t->port), "5432");
	for (const char *d = t->port; *d; d++)
		if (*d < '0' || *d > '9')
			return -1;
	if (!t->user[0]) {
		struct passwd *pw = getpwuid(geteuid());

		if (!pw || snprintf(t->user, sizeof(t->user), "%s", pw->pw_name) >= (int)sizeof(t->user))
			return -1;
	}
	if (!t->dbname[0])
		snprintf(t->dbname, sizeof(t->dbname), "%s", t->user);
	return 0;
}

/* ---- bytes in and out, with a deadline ---- */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long deadline;

static int wait_fd(short events)
{
	struct pollfd p = { .fd = fd, .events = events };
	long long left = deadline - now_ms();
	int r;

	if (left <= 0)
		return -1;
	do
		r = poll(&p, 1, (int)(left > 60000 ? 60000 : left));
	while (r < 0 && errno == EINTR);
	return r > 0 ? 0 : -1;
}

static int send_all(const void *buf, size_t n)
{
	const unsigned char *p = buf;

	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(POLLOUT) < 0)
				return -1;
		} else {
			return -1;
		}
	}
	return 0;
}

static int read_exact(unsigned char *out, size_t n)
{
	while (n > 0) {
		if (inpos < inlen) {
			size_t k = inlen - inpos < n ? inlen - inpos : n;

			memcpy(out, inbuf + inpos, k);
			inpos += k;
			out += k;
			n -= k;
			continue;
		}
		ssize_t r = recv(fd, inbuf, sizeof(inbuf), 0);

		if (r > 0) {
			inpos = 0;
			inlen = (size_t)r;
		} else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (wait_fd(POLLIN) < 0)
				return -1;
		} else {
			return -1;
		}
	}
	return 0;
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* One backend message: its type, its body in msg, *len bytes. */
static int read_message(char *type, size_t *len)
{
	unsigned char h[5];
	uint32_t n;

	if (read_exact(h, 5) < 0)
		return -1;
	n = get32(h + 1);
	if (n < 4 || n - 4 > PGWIRE_MESSAGE_MAX)
		return -1;
	n -= 4;
	if (n + 1 > msgcap) {
		size_t cap = msgcap ? msgcap : 1024;
		unsigned char *m;

		while (cap < n + 1)
			cap *= 2;
		m = realloc(msg, cap);
		if (!m)
			return -1;
		msg = m;
		msgcap = cap;
	}
	if (read_exact(msg, n) < 0)
		return -1;
	msg[n] = 0;
	*type = (char)h[0];
	*len = n;
	return 0;
}

/* An outgoing message being built. */
struct out {
	unsigned char *p;
	size_t len, cap;
	int bad;
};

static void out_bytes(struct out *o, const void *b, size_t n)
{
	if (o->bad)
		return;
	if (o->len + n > o->cap) {
		size_t cap = o->cap ? o->cap : 512;
		unsigned char *p;

		while (cap < o->len + n)
			cap *= 2;
		if (cap > PGWIRE_MESSAGE_MAX * 2 || !(p = realloc(o->p, cap))) {
			o->bad = 1;
			return;
		}
		o->p = p;
		o->cap = cap;
	}
	memcpy(o->p + o->len, b, n);
	o->len += n;
}

static void out_u32(struct out *o, uint32_t v)
{
	unsigned char b[4];

	put32(b, v);
	out_bytes(o, b, 4);
}

static void out_u16(struct out *o, unsigned v)
{
	unsigned char b[2] = { (unsigned char)(v >> 8), (unsigned char)v };

	out_bytes(o, b, 2);
}

static void out_str(struct out *o, const char *s)
{
	out_bytes(o, s, strlen(s) + 1);
}

/* Starts a message of type t (0: the startup message, which has none);
 * returns where its length goes. */
static size_t out_begin(struct out *o, char t)
{
	size_t at;

	if (t)
		out_bytes(o, &t, 1);
	at = o->len;
	out_u32(o, 0);
	return at;
}

static void out_end(struct out *o, size_t at)
{
	if (!o->bad)
		put32(o->p + at, (uint32_t)(o->len - at));
}

/* ---- results ---- */

void pgwire_result_clear(struct pgwire_result *r)
{
	r->ncols = r->nrows = 0;
	r->used = 0;
	r->ncells = 0;
	r->tag[0] = r->sqlstate[0] = r->error[0] = '\0';
	r->failed = 0;
}

void pgwire_result_free(struct pgwire_result *r)
{
	free(r->buf);
	free(r->cells);
	memset(r, 0, sizeof(*r));
}

const char *pgwire_value(const struct pgwire_result *r, int row, int col, int *len)
{
	const struct pgwire_cell *c;

	if (row < 0 || row >= r->nrows || col < 0 || col >= r->ncols) {
		*len = 0;
		return NULL;
	}
	c = &r->cells[(size_t)row * (size_t)r->ncols + (size_t)col];
	*len = c->len < 0 ? 0 : c->len;
	return c->len < 0 ? NULL : r->buf + c->off;
}

static void fail(struct pgwire_result *r, const char *state, const char *text)
{
	r->failed = 1;
	snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", state);
	snprintf(r->error, sizeof(r->error), "%s", text);
}

static int add_row(struct pgwire_result *r, const unsigned char *b, size_t len)
{
	unsigned ncols;
	size_t at = 2;

	if (len < 2)
		return -1;
	ncols = (unsigned)b[0] << 8 | b[1];
	if (r->nrows == 0 && r->ncells == 0)
		r->ncols = (int)ncols;
	else if ((int)ncols != r->ncols)
		return -1;
	if (r->ncells + ncols > r->cellcap) {
		size_t cap = r->cellcap ? r->cellcap : 64;
		struct pgwire_cell *c;

		while (cap < r->ncells + ncols)
			cap *= 2;
		if (cap * sizeof(*c) > PGWIRE_RESULT_MAX || !(c = realloc(r->cells, cap * sizeof(*c))))
			return -1;
		r->cells = c;
		r->cellcap = cap;
	}
	for (unsigned i = 0; i < ncols; i++) {
		struct pgwire_cell *c = &r->cells[r->ncells + i];
		uint32_t n;

		if (len - at < 4)
			return -1;
		n = get32(b + at);
		at += 4;
		if (n == 0xffffffffu) {
			c->off = 0;
			c->len = -1;
			continue;
		}
		if (n > len - at)
			return -1;
		if (r->used + n + 1 > r->cap) {
			size_t cap = r->cap ? r->cap : 1024;
			char *nb;

			while (cap < r->used + n + 1)
				cap *= 2;
			if (cap > PGWIRE_RESULT_MAX || !(nb = realloc(r->buf, cap)))
				return -1;
			r->buf = nb;
			r->cap = cap;
		}
		memcpy(r->buf + r->used, b + at, n);
		r->buf[r->used + n] = '\0';
		c->off = (uint32_t)r->used;
		c->len = (int32_t)n;
		r->used += n + 1;
		at += n;
	}
	if (at != len)
		return -1;
	r->ncells += ncols;
	r->nrows++;
	return 0;
}

/* An ErrorResponse's fields: the SQLSTATE (C) and the message (M). */
static int read_error(struct pgwire_result *r, const unsigned char *b, size_t len)
{
	size_t at = 0;
	char state[6] = "XX000";

	r->failed = 1;
	memcpy(r->sqlstate, state, sizeof(state));
	snprintf(r->error, sizeof(r->error), "error without a message");
	while (at < len && b[at]) {
		char t = (char)b[at++];
		const unsigned char *v = b + at;
		const unsigned char *z = memchr(v, 0, len - at);

		if (!z)
			return -1;
		if (t == 'C' && z - v == 5)
			memcpy(state, v, 6);
		else if (t == 'M')
			snprintf(r->error, sizeof(r->error), "%s", (const char *)v);
		at += (size_t)(z - v) + 1;
	}
	memcpy(r->sqlstate, state, sizeof(state));
	return 0;
}

int pgwire_feed(struct pgwire_result *r, char type, const unsigned char *b, size_t len)
{
	switch (type) {
	case 'D':
		if (r->failed)
			return 0;
		return add_row(r, b, len);
	case 'C': {
		const unsigned char *z = memchr(b, 0, len);

		if (!z)
			return -1;
		snprintf(r->tag, sizeof(r->tag), "%s", (const char *)b);
		return 0;
	}
	case 'E':
		return read_error(r, b, len);
	case 'Z':
		if (len != 1)
			return -1;
		txstatus = (char)b[0];
		return 0;
	case '1': /* ParseComplete */
	case '2': /* BindComplete */
	case 'n': /* NoData */
	case 'I': /* EmptyQueryResponse */
	case 'T': /* RowDescription (we read text; DataRow counts columns) */
	case 't': /* ParameterDescription */
	case 'N': /* NoticeResponse */
	case 'S': /* ParameterStatus */
	case 'A': /* NotificationResponse */
		return 0;
	default:
		return -1;
	}
}

/* ---- authentication ---- */

static void hex(const unsigned char *in, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * n] = '\0';
}

static int send_password(const char *pw)
{
	struct out o = { 0 };
	size_t at = out_begin(&o, 'p');
	int rc;

	out_str(&o, pw);
	out_end(&o, at);
	rc = o.bad ? -1 : send_all(o.p, o.len);
	free(o.p);
	return rc;
}

/* "md5" + md5hex(md5hex(password user) salt) */
static int auth_md5(const struct pgwire_target *t, const unsigned char *salt)
{
	struct md5_ctx c;
	unsigned char d[MD5_DIGEST_SIZE];
	char inner[2 * MD5_DIGEST_SIZE + 1], outer[3 + 2 * MD5_DIGEST_SIZE + 1];

	md5_init(&c);
	md5_update(&c, strlen(t->password), (const uint8_t *)t->password);
	md5_update(&c, strlen(t->user), (const uint8_t *)t->user);
	md5_digest(&c, sizeof(d), d);
	hex(d, sizeof(d), inner);
	md5_init(&c);
	md5_update(&c, strlen(inner), (const uint8_t *)inner);
	md5_update(&c, 4, salt);
	md5_digest(&c, sizeof(d), d);
	memcpy(outer, "md5", 3);
	hex(d, sizeof(d), outer + 3);
	return send_password(outer);
}

static void hmac256(const unsigned char *key, size_t keylen, const void *data, size_t n,
		    unsigned char out[SHA256_DIGEST_SIZE])
{
	struct hmac_sha256_ctx c;

	hmac_sha256_set_key(&c, keylen, key);
	hmac_sha256_update(&c, n, data);
	hmac_sha256_digest(&c, SHA256_DIGEST_SIZE, out);
}

int pgwire_scram_parse_first(const char *m, const char *cnonce, char *nonce, size_t noncecap,
			     unsigned char *salt, size_t saltcap, size_t *saltlen,
			     unsigned *iterations)
{
	const char *r, *s, *i, *c1, *c2;
	char b64[256], raw[256];
	long n;
	unsigned long it;
	char *e;

	/* r=<nonce>,s=<salt>,i=<iterations>[,extensions] */
	if (strncmp(m, "r=", 2) != 0)
		return -1;
	r = m + 2;
	c1 = strchr(r, ',');
	if (!c1 || strncmp(c1 + 1, "s=", 2) != 0)
		return -1;
	s = c1 + 3;
	c2 = strchr(s, ',');
	if (!c2 || strncmp(c2 + 1, "i=", 2) != 0)
		return -1;
	i = c2 + 3;
	if ((size_t)(c1 - r) >= noncecap || (size_t)(c2 - s) >= sizeof(b64))
		return -1;
	memcpy(nonce, r, (size_t)(c1 - r));
	nonce[c1 - r] = '\0';
	/* the server's nonce extends ours, with printable characters but ',' */
	if (strncmp(nonce, cnonce, strlen(cnonce)) != 0 || strlen(nonce) <= strlen(cnonce))
		return -1;
	for (const char *p = nonce; *p; p++)
		if (*p < 0x21 || *p > 0x7e || *p == ',')
			return -1;
	memcpy(b64, s, (size_t)(c2 - s));
	b64[c2 - s] = '\0';
	n = base64_decode(b64, raw, sizeof(raw));
	if (n <= 0 || (size_t)n > saltcap)
		return -1;
	memcpy(salt, raw, (size_t)n);
	*saltlen = (size_t)n;
	if (*i < '1' || *i > '9')
		return -1;
	errno = 0;
	it = strtoul(i, &e, 10);
	if (errno || (*e && *e != ',') || it == 0 || it > PGWIRE_SCRAM_ITERATIONS_MAX)
		return -1;
	*iterations = (unsigned)it;
	return 0;
}

/* SCRAM-SHA-256 (RFC 5802, RFC 7677) without channel binding. */
struct scram {
	char cnonce[33];
	char first_bare[64];
	unsigned char salted[SHA256_DIGEST_SIZE];
	char auth_message[1024];
};

static int sasl_send(char type_p_initial, const char *data, size_t n)
{
	struct out o = { 0 };
	size_t at = out_begin(&o, 'p');
	int rc;

	if (type_p_initial) {
		out_str(&o, "SCRAM-SHA-256");
		out_u32(&o, (uint32_t)n);
	}
	out_bytes(&o, data, n);
	out_end(&o, at);
	rc = o.bad ? -1 : send_all(o.p, o.len);
	free(o.p);
	return rc;
}

static int scram_start(struct scram *s, const unsigned char *mechs, size_t len)
{
	unsigned char rnd[18];
	char first[96];
	int found = 0;

	for (size_t at = 0; at < len && mechs[at];) {
		const unsigned char *z = memchr(mechs + at, 0, len - at);

		if (!z)
			return -1;
		if (strcmp((const char *)mechs + at, "SCRAM-SHA-256") == 0)
			found = 1;
		at = (size_t)(z - mechs) + 1;
	}
	if (!found || getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		return -1;
	base64_encode(rnd, sizeof(rnd), s->cnonce, sizeof(s->cnonce));
	/* the user name is the startup message's; SCRAM's is left empty */
	snprintf(s->first_bare, sizeof(s->first_bare), "n=,r=%s", s->cnonce);
	snprintf(first, sizeof(first), "n,,%s", s->first_bare);
	return sasl_send(1, first, strlen(first));
}

static int scram_continue(struct scram *s, const struct pgwire_target *t, const char *server_first)
{
	char nonce[256], final[512], proofb64[64];
	unsigned char salt[128], ckey[SHA256_DIGEST_SIZE], skey[SHA256_DIGEST_SIZE],
		sig[SHA256_DIGEST_SIZE], proof[SHA256_DIGEST_SIZE];
	size_t saltlen;
	unsigned iterations;
	struct sha256_ctx h;
	int n;

	if (pgwire_scram_parse_first(server_first, s->cnonce, nonce, sizeof(nonce), salt, sizeof(salt),
				     &saltlen, &iterations) < 0)
		return -1;
	pbkdf2_hmac_sha256(strlen(t->password), (const uint8_t *)t->password, iterations, saltlen,
			   salt, sizeof(s->salted), s->salted);
	hmac256(s->salted, sizeof(s->salted), "Client Key", 10, ckey);
	sha256_init(&h);
	sha256_update(&h, sizeof(ckey), ckey);
	sha256_digest(&h, sizeof(skey), skey);
	/* c=biws is base64 of "n,,": no channel binding */
	n = snprintf(s->auth_message, sizeof(s->auth_message), "%s,%s,c=biws,r=%s", s->first_bare,
		     server_first, nonce);
	if (n < 0 || (size_t)n >= sizeof(s->auth_message))
		return -1;
	hmac256(skey, sizeof(skey), s->auth_message, (size_t)n, sig);
	for (size_t i = 0; i < sizeof(proof); i++)
		proof[i] = ckey[i] ^ sig[i];
	base64_encode(proof, sizeof(proof), proofb64, sizeof(proofb64));
	n = snprintf(final, sizeof(final), "c=biws,r=%s,p=%s", nonce, proofb64);
	if (n < 0 || (size_t)n >= sizeof(final))
		return -1;
	return sasl_send(0, final, (size_t)n);
}

/* The server proves it knew the password too. */
static int scram_final(const struct scram *s, const char *server_final)
{
	unsigned char key[SHA256_DIGEST_SIZE], sig[SHA256_DIGEST_SIZE];
	char want[64];

	if (strncmp(server_final, "v=", 2) != 0)
		return -1;
	hmac256(s->salted, sizeof(s->salted), "Server Key", 10, key);
	hmac256(key, sizeof(key), s->auth_message, strlen(s->auth_message), sig);
	base64_encode(sig, sizeof(sig), want, sizeof(want));
	return strcmp(server_final + 2, want) == 0 ? 0 : -1;
}

/* ---- the connection ---- */

static int open_socket(const struct pgwire_target *t, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res, *ai;
	int s = -1;

	if (t->host[0] == '/') {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };

		if ((size_t)snprintf(sun.sun_path, sizeof(sun.sun_path), "%s/.s.PGSQL.%s", t->host,
				     t->port) >= sizeof(sun.sun_path)) {
			snprintf(err, errlen, "socket path too long");
			return -1;
		}
		s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (s < 0 || connect(s, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
			snprintf(err, errlen, "%s: %s", sun.sun_path, strerror(errno));
			if (s >= 0)
				close(s);
			return -1;
		}
		return s;
	}
	if (getaddrinfo(t->host, t->port, &hints, &res) != 0) {
		snprintf(err, errlen, "cannot resolve %s", t->host);
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		s = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (s < 0)
			continue;
		if (connect(s, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			int e = 0;
			socklen_t el = sizeof(e);

			fd = s;
			if (wait_fd(POLLOUT) == 0 && getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &el) == 0 &&
			    e == 0)
				break;
			fd = -1;
		}
		snprintf(err, errlen, "%s port %s: %s", t->host, t->port, strerror(errno));
		close(s);
		s = -1;
	}
	freeaddrinfo(res);
	if (s < 0 && !err[0])
		snprintf(err, errlen, "cannot connect to %s", t->host);
	return s;
}

void pgwire_close(void)
{
	if (fd >= 0) {
		static const unsigned char terminate[5] = { 'X', 0, 0, 0, 4 };

		(void)!send(fd, terminate, sizeof(terminate), MSG_NOSIGNAL | MSG_DONTWAIT);
		close(fd);
	}
	fd = -1;
	txstatus = 0;
	inpos = inlen = 0;
}

int pgwire_connected(void)
{
	return fd >= 0;
}

char pgwire_tx_status(void)
{
	return fd >= 0 ? txstatus : 0;
}

/* Parse, Bind, Execute of sql with its parameters, onto o. */
static void out_query(struct out *o, const char *sql, int n, const char *const *vals,
		      const int *lens, const int *fmts)
{
	size_t at = out_begin(o, 'P'); /* Parse the unnamed statement */

	out_str(o, "");
	out_str(o, sql);
	out_u16(o, 0);
	out_end(o, at);
	at = out_begin(o, 'B'); /* Bind */
	out_str(o, "");
	out_str(o, "");
	out_u16(o, (unsigned)n);
	for (int i = 0; i < n; i++)
		out_u16(o, fmts && fmts[i] ? 1 : 0);
	out_u16(o, (unsigned)n);
	for (int i = 0; i < n; i++) {
		if (!vals[i]) {
			out_u32(o, 0xffffffffu);
			continue;
		}
		size_t l = fmts && fmts[i] ? (size_t)lens[i] : strlen(vals[i]);

		out_u32(o, (uint32_t)l);
		out_bytes(o, vals[i], l);
	}
	out_u16(o, 0); /* every column as text */
	out_end(o, at);
	at = out_begin(o, 'E'); /* Execute, every row */
	out_str(o, "");
	out_u32(o, 0);
	out_end(o, at);
}

/* Sync: the end of what runs as one (implicit) transaction. */
static void out_sync(struct out *o)
{
	out_end(o, out_begin(o, 'S'));
}

/* A statement's reply, up to its ReadyForQuery, into r. 0, or -1 (r
 * says why; a lost connection is closed). */
static int read_reply(struct pgwire_result *r, int skip)
{
	char type;
	size_t len;
	int broken = 0;

	for (;;) {
		if (read_message(&type, &len) < 0)
			goto lost;
		if (skip > 0 && type == 'D')
			continue; /* a row of a statement sent ahead */
		if (skip > 0 && type == 'C') {
			skip--;
			continue;
		}
		if (pgwire_feed(r, type, msg, len) < 0) {
			/* a row beyond our bounds, or garbage: the rest of the
			 * reply cannot be trusted to follow */
			broken = 1;
			goto lost;
		}
		if (type == 'Z')
			break;
	}
	return r->failed ? -1 : 0;
lost:
	pgwire_close();
	fail(r, "08006", broken ? "protocol error or result too large" : "connection lost or timed out");
	return -1;
}

/* A connection under way: what pgwire_connect_finish needs. */
static const struct pgwire_target *pending_target;
static const char *pending_first;
static int pending_ahead;

int pgwire_connect_start(const struct pgwire_target *t, const char *first, char *err,
			 size_t errlen)
{
	struct out o = { 0 };
	size_t at;

	err[0] = '\0';
	pgwire_close();
	deadline = now_ms() + t->connect_timeout_ms;
	fd = open_socket(t, err, errlen);
	if (fd < 0)
		return -1;
	pending_target = t;
	pending_first = first;
	/* Without a password the server can only trust us (or know us by
	 * the socket's peer): the first statement then goes with the
	 * startup message, and the connection costs no round trip of its
	 * own. Were a password asked for after all, the bytes sent ahead
	 * end the connection, which failed anyway. */
	pending_ahead = first && !t->password[0];
	at = out_begin(&o, 0);
	out_u32(&o, 196608); /* protocol 3.0 */
	out_str(&o, "user");
	out_str(&o, t->user);
	out_str(&o, "database");
	out_str(&o, t->dbname);
	out_str(&o, "application_name");
	out_str(&o, "postage");
	out_bytes(&o, "", 1);
	out_end(&o, at);
	if (pending_ahead) {
		out_query(&o, first, 0, NULL, NULL, NULL);
		out_sync(&o);
	}
	if (o.bad || send_all(o.p, o.len) < 0) {
		free(o.p);
		snprintf(err, errlen, "cannot send the startup message");
		pgwire_close();
		return -1;
	}
	free(o.p);
	return 0;
}

int pgwire_connect_finish(struct pgwire_result *fr, char *err, size_t errlen)
{
	const struct pgwire_target *t = pending_target;
	struct scram sc;
	struct pgwire_result r = { 0 };
	char type;
	size_t len;

	if (fd < 0 || !t) {
		snprintf(err, errlen, "not connecting");
		return -1;
	}
	for (;;) {
		if (read_message(&type, &len) < 0) {
			snprintf(err, errlen, "connection closed or timed out during the startup");
			goto bad;
		}
		if (type == 'E') {
			read_error(&r, msg, len);
			snprintf(err, errlen, "%s (%s)", r.error, r.sqlstate);
			goto bad;
		}
		if (type == 'Z') {
			txstatus = len == 1 ? (char)msg[0] : 'I';
			if (!pending_first)
				return 0;
			pgwire_result_clear(fr);
			deadline = now_ms() + PGWIRE_TIMEOUT_MS;
			if (pending_ahead)
				read_reply(fr, 0);
			else
				pgwire_exec(pending_first, 0, NULL, NULL, NULL, fr);
			if (fd < 0) {
				snprintf(err, errlen, "%s", fr->error);
				return -1;
			}
			return 0;
		}
		if (type != 'R')
			continue; /* ParameterStatus, BackendKeyData, notices */
		if (len < 4)
			goto proto;
		switch (get32(msg)) {
		case 0: /* AuthenticationOk */
			break;
		case 3: /* cleartext */
			/* without TLS, only where nobody can listen in */
			if (t->host[0] != '/') {
				snprintf(err, errlen, "the server asks for the password in clear over "
					 "TCP without TLS: refused");
				goto bad;
			}
			if (send_password(t->password) < 0)
				goto proto;
			break;
		case 5: /* MD5 */
			if (len != 8 || auth_md5(t, msg + 4) < 0)
				goto proto;
			break;
		case 10: /* SASL */
			if (scram_start(&sc, msg + 4, len - 4) < 0) {
				snprintf(err, errlen, "the server offers no SCRAM-SHA-256");
				goto bad;
			}
			break;
		case 11: /* SASLContinue */
			if (scram_continue(&sc, t, (const char *)msg + 4) < 0) {
				snprintf(err, errlen, "bad SCRAM server-first message");
				goto bad;
			}
			break;
		case 12: /* SASLFinal */
			if (scram_final(&sc, (const char *)msg + 4) < 0) {
				snprintf(err, errlen, "the server's SCRAM signature is wrong");
				goto bad;
			}
			break;
		default:
			snprintf(err, errlen, "authentication method %u not supported", get32(msg));
			goto bad;
		}
	}
proto:
	snprintf(err, errlen, "protocol error during the startup");
bad:
	pgwire_close();
	return -1;
}

int pgwire_connect(const struct pgwire_target *t, char *err, size_t errlen)
{
	if (pgwire_connect_start(t, NULL, err, errlen) < 0)
		return -1;
	return pgwire_connect_finish(NULL, err, errlen);
}

int pgwire_exec_after(const char *const *before, int nbefore, const char *sql, int n,
		      const char *const *vals, const int *lens, const int *fmts,
		      struct pgwire_result *r)
{
	struct out o = { 0 };

	pgwire_result_clear(r);
	if (fd < 0) {
		fail(r, "08003", "not connected");
		return -1;
	}
	deadline = now_ms() + PGWIRE_TIMEOUT_MS;
	for (int i = 0; i < nbefore; i++)
		out_query(&o, before[i], 0, NULL, NULL, NULL);
	out_query(&o, sql, n, vals, lens, fmts);
	out_sync(&o);
	if (o.bad) {
		free(o.p);
		fail(r, "54000", "statement too long");
		return -1;
	}
	if (send_all(o.p, o.len) < 0) {
		free(o.p);
		pgwire_close();
		fail(r, "08006", "connection lost or timed out");
		return -1;
	}
	free(o.p);
	return read_reply(r, nbefore);
}

int pgwire_exec(const char *sql, int n, const char *const *vals, const int *lens,
		const int *fmts, struct pgwire_result *r)
{
	return pgwire_exec_after(NULL, 0, sql, n, vals, lens, fmts, r);
}
