#include "dkim.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <nettle/sha2.h>

#include "address.h"
#include "base64.h"
#include "db.h"
#include "dns.h"
#include "limits.h"
#include "log.h"
#include "pubkey.h"
#include "tls-crypto.h"

#define SHA256_LEN 32
/* No l= limit. */
#define BODY_ALL (~0ULL)

/* RFC 6376 5.4.1: the fields a signer should sign, and the ones we add
 * because they change what the reader sees. From is signed once more
 * than it occurs ("over-signed"), so no From can be added in transit. */
static const char *const signed_fields[] = {
	"from", "reply-to", "subject", "date", "to", "cc", "resent-date", "resent-from",
	"resent-to", "resent-cc", "in-reply-to", "references", "list-id", "list-help",
	"list-unsubscribe", "list-subscribe", "list-post", "list-owner", "list-archive",
	"message-id", "mime-version", "content-type", "content-transfer-encoding",
};

/* -- base64 (auth.c's codec) ----------------------------------------------- */

/* Decodes a tag value: FWS inside it is dropped first (RFC 6376 3.2).
 * The length, or -1. */
static long b64_decode_fws(const char *in, size_t len, unsigned char *out, size_t cap)
{
	static char clean[2 * DKIM_BLOB_MAX];
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		if (in[i] == ' ' || in[i] == '\t' || in[i] == '\r' || in[i] == '\n')
			continue;
		if (o + 1 >= sizeof(clean))
			return -1;
		clean[o++] = in[i];
	}
	clean[o] = '\0';
	if (o == 0)
		return 0;
	return base64_decode(clean, (char *)out, cap);
}

/* -- growing buffer with a cap -------------------------------------------- */

struct sbuf {
	char *p;
	size_t len, cap;
	int overflow;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->overflow)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t want = b->cap ? b->cap * 2 : 4096;
		char *np;
		while (want < b->len + n + 1)
			want *= 2;
		if (want > 4 * (size_t)MESSAGE_HEADER_MAX) {
			b->overflow = 1;
			return;
		}
		np = realloc(b->p, want);
		if (!np) {
			b->overflow = 1;
			return;
		}
		b->p = np;
		b->cap = want;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

/* -- canonicalisation (RFC 6376 3.4) -------------------------------------- */

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Appends field raw (name ":" value, LF folds, maybe a final LF) in
 * canonical form; with crlf a CRLF ends it. */
static void canon_header(int relaxed, const char *raw, size_t len, int crlf, struct sbuf *out)
{
	const char *colon = memchr(raw, ':', len);
	size_t end = len;

	if (end > 0 && raw[end - 1] == '\n')
		end--;
	if (!relaxed) {
		for (size_t i = 0; i < end; i++) {
			if (raw[i] == '\n')
				sb_add(out, "\r\n", 2);
			else
				sb_add(out, raw + i, 1);
		}
	} else {
		size_t nlen = colon ? (size_t)(colon - raw) : end, i;
		int space = 0, started = 0;

		while (nlen > 0 && is_wsp(raw[nlen - 1]))
			nlen--;
		for (i = 0; i < nlen; i++) {
			char c = (char)tolower((unsigned char)raw[i]);
			sb_add(out, &c, 1);
		}
		sb_add(out, ":", 1);
		for (i = colon ? (size_t)(colon - raw) + 1 : end; i < end; i++) {
			char c = raw[i];
			if (c == '\r' || c == '\n')
				continue;
			if (is_wsp(c)) {
				space = started;
				continue;
			}
			if (space)
				sb_add(out, " ", 1);
			space = 0;
			started = 1;
			sb_add(out, &c, 1);
		}
	}
	if (crlf)
		sb_add(out, "\r\n", 2);
}

struct body_hash {
	struct sha256_ctx h;
	int relaxed;
	unsigned long long limit, count;
	unsigned long long empty; /* empty lines not yet written */
	int wsp, in_line, any;
	size_t blen;
	char buf[8192];
};

static void bh_flush(struct body_hash *b)
{
	if (b->blen)
		sha256_update(&b->h, b->blen, (const uint8_t *)b->buf);
	b->blen = 0;
}

static void bh_emit(struct body_hash *b, const char *p, size_t n)
{
	if (b->count >= b->limit)
		return;
	if (n > b->limit - b->count)
		n = (size_t)(b->limit - b->count);
	b->count += n;
	b->any = 1;
	while (n > 0) {
		size_t k = sizeof(b->buf) - b->blen < n ? sizeof(b->buf) - b->blen : n;
		memcpy(b->buf + b->blen, p, k);
		b->blen += k;
		p += k;
		n -= k;
		if (b->blen == sizeof(b->buf))
			bh_flush(b);
	}
}

static void bh_feed(struct body_hash *b, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		char c = p[i];
		size_t j;

		if (c == '\n') {
			if (b->in_line)
				bh_emit(b, "\r\n", 2);
			else
				b->empty++;
			b->in_line = 0;
			b->wsp = 0;
			i++;
			continue;
		}
		if (b->relaxed && is_wsp(c)) {
			b->wsp = 1;
			i++;
			continue;
		}
		if (!b->in_line) {
			for (; b->empty > 0; b->empty--)
				bh_emit(b, "\r\n", 2);
			b->in_line = 1;
		}
		if (b->wsp)
			bh_emit(b, " ", 1);
		b->wsp = 0;
		/* The rest of the run that goes out as it is, in one piece:
		 * a byte at a time cost a hundred instructions each. */
		for (j = i + 1; j < n && p[j] != '\n' && !(b->relaxed && is_wsp(p[j])); j++)
			;
		bh_emit(b, p + i, j - i);
		i = j;
	}
}

/* The body hash of fd's bytes [from, to). 0 or -1. */
static int body_hash(int fd, off_t from, off_t to, int relaxed, unsigned long long limit,
		     unsigned char digest[SHA256_LEN])
{
	/* not re-entered: dkim calls nothing that comes back into it */
	static struct body_hash b;
	static char chunk[65536];

	memset(&b, 0, sizeof(b));
	b.relaxed = relaxed;
	b.limit = limit;
	sha256_init(&b.h);
	while (from < to) {
		size_t want = (size_t)(to - from) < sizeof(chunk) ? (size_t)(to - from) : sizeof(chunk);
		ssize_t n = pread(fd, chunk, want, from);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		bh_feed(&b, chunk, (size_t)n);
		from += n;
	}
	if (b.in_line)
		bh_emit(&b, "\r\n", 2);
	else if (!relaxed && !b.any)
		bh_emit(&b, "\r\n", 2); /* 3.4.3: an empty body is one CRLF */
	bh_flush(&b);
	sha256_digest(&b.h, SHA256_LEN, digest);
	return 0;
}

int dkim_body_hash(int fd, off_t from, off_t to, int relaxed, unsigned long long limit,
		   unsigned char digest[32])
{
	return body_hash(fd, from, to, relaxed, limit, digest);
}

static void sha256_of(const void *p, size_t len, unsigned char digest[SHA256_LEN])
{
	struct sha256_ctx c;

	sha256_init(&c);
	sha256_update(&c, len, (const uint8_t *)p);
	sha256_digest(&c, SHA256_LEN, digest);
}

long dkim_canon_header(int relaxed, const char *raw, size_t len, char *out, size_t cap)
{
	struct sbuf b = { 0 };
	long n = -1;

	canon_header(relaxed, raw, len, 1, &b);
	if (!b.overflow && b.len < cap) {
		memcpy(out, b.p ? b.p : "", b.len);
		out[b.len] = '\0';
		n = (long)b.len;
	}
	free(b.p);
	return n;
}

/* -- tag lists (RFC 6376 3.2) --------------------------------------------- */

static int is_fws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int tags_parse(const char *s, size_t len, struct tag *tags, size_t *n)
{
	size_t i = 0;

	*n = 0;
	while (i < len) {
		size_t ns, ne, vs, ve;

		while (i < len && is_fws(s[i]))
			i++;
		if (i == len)
			break;
		ns = i;
		while (i < len && (isalnum((unsigned char)s[i]) || s[i] == '_'))
			i++;
		ne = i;
		while (i < len && is_fws(s[i]))
			i++;
		if (ne == ns || !isalpha((unsigned char)s[ns]) || i == len || s[i] != '=' ||
		    ne - ns >= sizeof(tags[0].name) || *n >= TAGS_MAX)
			return -1;
		i++;
		while (i < len && is_fws(s[i]))
			i++;
		vs = i;
		while (i < len && s[i] != ';')
			i++;
		ve = i;
		while (ve > vs && is_fws(s[ve - 1]))
			ve--;
		for (size_t k = 0; k < *n; k++)
			if (strlen(tags[k].name) == ne - ns && memcmp(tags[k].name, s + ns, ne - ns) == 0)
				return -1;
		memcpy(tags[*n].name, s + ns, ne - ns);
		tags[*n].name[ne - ns] = '\0';
		tags[*n].value = s + vs;
		tags[*n].len = ve - vs;
		(*n)++;
		if (i < len)
			i++; /* ';' */
	}
	return 0;
}

const struct tag *tag_get(const struct tag *tags, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(tags[i].name, name) == 0)
			return &tags[i];
	return NULL;
}

int tag_is(const struct tag *t, const char *value)
{
	return t && t->len == strlen(value) && strncasecmp(t->value, value, t->len) == 0;
}

int tag_copy(const struct tag *t, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; i < t->len; i++) {
		if (is_fws(t->value[i]))
			continue;
		if (o + 1 >= cap)
			return -1;
		out[o++] = t->value[i];
	}
	out[o] = '\0';
	return 0;
}

/* -- the header hash input ------------------------------------------------ */

/* Appends the fields named in hlist (colon-separated, FWS allowed), each
 * name taking the bottom-most instance not yet used (RFC 6376 5.4.2).
 * skip is a field never to take (the signature being verified). */
static void add_signed_fields(const struct header_block *hb, const char *hlist, size_t hlen,
			      int relaxed, long skip, struct sbuf *out)
{
	static unsigned char used[MESSAGE_HEADER_FIELDS_MAX];
	size_t i = 0;

	memset(used, 0, hb->n);
	while (i < hlen) {
		char name[128];
		size_t nl = 0;

		while (i < hlen && hlist[i] != ':') {
			if (!is_fws(hlist[i]) && nl + 1 < sizeof(name))
				name[nl++] = hlist[i];
			i++;
		}
		i++;
		name[nl] = '\0';
		if (nl == 0)
			continue;
		for (long k = (long)hb->n - 1; k >= 0; k--) {
			if (used[k] || k == skip || !header_is(&hb->fields[k], name))
				continue;
			used[k] = 1;
			canon_header(relaxed, hb->fields[k].raw, hb->fields[k].raw_len, 1, out);
			break;
		}
	}
}

/* -- signing --------------------------------------------------------------- */

struct sign_key {
	char selector[64];
	int ed25519;
	gnutls_privkey_t key;
};

static int read_file(const char *path, char *buf, size_t cap, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	struct stat st;
	ssize_t n;

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 ||
	    (size_t)st.st_size >= cap) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	n = read(fd, buf, (size_t)st.st_size);
	close(fd);
	if (n != st.st_size) {
		errno = EIO;
		return -1;
	}
	buf[n] = '\0';
	*len = (size_t)n;
	return 0;
}

static int load_key(const char *domain, const char *selector, const char *algorithm,
		    const char *path, struct sign_key *k)
{
	static char pem[DKIM_KEY_FILE_MAX];
	gnutls_datum_t d;
	unsigned bits = 0;
	size_t len = 0;
	int pk, r;

	memset(k, 0, sizeof(*k));
	snprintf(k->selector, sizeof(k->selector), "%s", selector);
	k->ed25519 = strcmp(algorithm, "ed25519-sha256") == 0;
	if (read_file(path, pem, sizeof(pem), &len) < 0) {
		log_event(LOG_ERR, "event=dkim result=key_unreadable domain=%s selector=%s path=%s error=\"%s\"",
			  domain, selector, path, strerror(errno));
		return -1;
	}
	d.data = (unsigned char *)pem;
	d.size = (unsigned)len;
	if (dl_gnutls_privkey_init(&k->key) < 0)
		return -1;
	r = dl_gnutls_privkey_import_x509_raw(k->key, &d, GNUTLS_X509_FMT_PEM, NULL, 0);
	explicit_bzero(pem, len);
	if (r < 0) {
		log_event(LOG_ERR, "event=dkim result=key_invalid domain=%s selector=%s path=%s error=\"%s\"",
			  domain, selector, path, dl_gnutls_strerror_name(r));
		dl_gnutls_privkey_deinit(k->key);
		k->key = NULL;
		return -1;
	}
	pk = dl_gnutls_privkey_get_pk_algorithm(k->key, &bits);
	if ((k->ed25519 && pk != GNUTLS_PK_EDDSA_ED25519) ||
	    (!k->ed25519 && (pk != GNUTLS_PK_RSA || bits < DKIM_RSA_BITS_MIN))) {
		log_event(LOG_ERR, "event=dkim result=key_invalid domain=%s selector=%s path=%s "
			  "error=\"not a %s key%s\"", domain, selector, path, algorithm,
			  k->ed25519 ? "" : " of at least 1024 bits");
		dl_gnutls_privkey_deinit(k->key);
		k->key = NULL;
		return -1;
	}
	return 0;
}

/* The keys of domain, into keys; how many could be loaded. */
static size_t load_keys(const char *domain, struct sign_key *keys, size_t max)
{
	static char rows[DKIM_SIGN_MAX][3][PATH_MAX_POSTAGE];
	struct db_q *st = db_stmt(SQL_DKIM_KEYS);
	size_t nrows = 0, n = 0;

	if (!st)
		return 0;
	db_bind_text(st, 1, domain);
	db_bind_int64(st, 2, DKIM_SIGN_MAX);
	while (nrows < DKIM_SIGN_MAX && nrows < max && db_step(st) == DB_ROW) {
		for (int c = 0; c < 3; c++) {
			const char *v = db_col_text(st, c);
			snprintf(rows[nrows][c], sizeof(rows[0][0]), "%s", v ? v : "");
		}
		nrows++;
	}
	db_reset(st);
	if (nrows == 0)
		return 0;
	if (tls_library_load() < 0) {
		log_event(LOG_ERR, "event=dkim result=error domain=%s error=\"cannot load GnuTLS\"", domain);
		return 0;
	}
	for (size_t i = 0; i < nrows; i++) {
		const char *sel = rows[i][0];
		int ok = sel[0] && strlen(sel) < sizeof(keys[0].selector);
		for (const char *c = sel; *c && ok; c++)
			ok = isalnum((unsigned char)*c) || *c == '-' || *c == '_' || *c == '.';
		if (!ok) {
			log_event(LOG_ERR, "event=dkim result=key_invalid domain=%s error=\"bad selector\"", domain);
			continue;
		}
		if (load_key(domain, sel, rows[i][1], rows[i][2], &keys[n]) == 0)
			n++;
	}
	return n;
}

/* Appends s to out, folding (LF TAB) before it when the line would pass
 * 76 columns; *col tracks the column. */
static void fold_add(struct sbuf *out, const char *s, size_t n, size_t *col)
{
	if (*col + n > 76 && *col > 1) {
		sb_add(out, "\n\t", 2);
		*col = 1;
	}
	sb_add(out, s, n);
	*col += n;
}

/* Signs the message (its header section read into hb) with every key of
 * domain; see dkim_sign. hb is freed. */
static long sign_as(int fd, off_t size, struct header_block *hb, const char *domain, char *out,
		    size_t cap)
{
	/* not re-entered: called once per message being signed */
	static struct sign_key keys[DKIM_SIGN_MAX];
	char bh[64], hlist[1024] = "";
	unsigned char digest[SHA256_LEN];
	struct sbuf common = { 0 }, sigs = { 0 };
	size_t nkeys = 0, hl = 0, made = 0;
	long result = -1;

	nkeys = load_keys(domain, keys, DKIM_SIGN_MAX);
	if (nkeys == 0) {
		header_block_free(hb);
		return 0;
	}
	/* h=: every listed field present, as often as it occurs; From once
	 * more. */
	for (size_t i = 0; i < sizeof(signed_fields) / sizeof(signed_fields[0]); i++) {
		size_t count = 0;
		for (size_t k = 0; k < hb->n; k++)
			count += header_is(&hb->fields[k], signed_fields[i]);
		if (i == 0)
			count++;
		for (size_t c = 0; c < count && hl + strlen(signed_fields[i]) + 2 < sizeof(hlist); c++)
			hl += (size_t)snprintf(hlist + hl, sizeof(hlist) - hl, "%s%s", hl ? ":" : "",
					       signed_fields[i]);
	}
	if (body_hash(fd, hb->body, size, 1, BODY_ALL, digest) < 0)
		goto done;
	base64_encode(digest, SHA256_LEN, bh, sizeof(bh));
	add_signed_fields(hb, hlist, hl, 1, -1, &common);

	for (size_t i = 0; i < nkeys; i++) {
		struct sbuf field = { 0 }, input = { 0 };
		gnutls_datum_t data, sig = { NULL, 0 };
		unsigned char hdig[SHA256_LEN];
		char tmp[512], *b = NULL;
		size_t col = 0, start;
		int r;

		snprintf(tmp, sizeof(tmp), "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed; d=%s;",
			 keys[i].ed25519 ? "ed25519-sha256" : "rsa-sha256", domain);
		sb_str(&field, tmp);
		col = strlen(tmp);
		snprintf(tmp, sizeof(tmp), " s=%s;", keys[i].selector);
		fold_add(&field, tmp, strlen(tmp), &col);
		snprintf(tmp, sizeof(tmp), " t=%lld;", (long long)time(NULL));
		fold_add(&field, tmp, strlen(tmp), &col);
		fold_add(&field, " h=", 3, &col);
		start = 0;
		for (size_t k = 0; k <= hl; k++) {
			if (k == hl || hlist[k] == ':') {
				fold_add(&field, hlist + start, k - start + (k < hl), &col);
				start = k + 1;
			}
		}
		sb_add(&field, ";", 1);
		col++;
		sb_str(&field, "\n\tbh=");
		sb_str(&field, bh);
		sb_str(&field, ";\n\tb=");

		sb_add(&input, common.p ? common.p : "", common.len);
		canon_header(1, field.p ? field.p : "", field.len, 0, &input);
		if (input.overflow || field.overflow || common.overflow) {
			free(field.p);
			free(input.p);
			goto done;
		}
		if (keys[i].ed25519) {
			/* RFC 8463 3: Ed25519 signs the SHA-256 of the input. */
			sha256_of(input.p, input.len, hdig);
			data.data = hdig;
			data.size = SHA256_LEN;
		} else {
			data.data = (unsigned char *)input.p;
			data.size = (unsigned)input.len;
		}
		r = dl_gnutls_privkey_sign_data2(keys[i].key,
						 keys[i].ed25519 ? GNUTLS_SIGN_EDDSA_ED25519 :
								   GNUTLS_SIGN_RSA_SHA256,
						 0, &data, &sig);
		free(input.p);
		if (r < 0 || sig.size > DKIM_BLOB_MAX) {
			log_event(LOG_ERR, "event=dkim result=sign_error domain=%s selector=%s error=\"%s\"",
				  domain, keys[i].selector, r < 0 ? dl_gnutls_strerror_name(r) : "too long");
			if (sig.data)
				(*dl_gnutls_free)(sig.data);
			free(field.p);
			continue;
		}
		b = malloc(4 * ((sig.size + 2) / 3) + 8);
		if (b) {
			size_t blen = base64_encode(sig.data, sig.size, b, 4 * ((sig.size + 2) / 3) + 8);
			col = 3;
			for (size_t k = 0; k < blen; k += 72) {
				if (k)
					sb_add(&field, "\n\t ", 3);
				sb_add(&field, b + k, blen - k < 72 ? blen - k : 72);
			}
			sb_add(&field, "\n", 1);
			sb_add(&sigs, field.p, field.len);
			made++;
		}
		(*dl_gnutls_free)(sig.data);
		free(b);
		free(field.p);
	}
	if (sigs.overflow || sigs.len >= cap) {
		log_event(LOG_ERR, "event=dkim result=error domain=%s error=\"signature too long\"", domain);
		goto done;
	}
	if (made)
		memcpy(out, sigs.p, sigs.len + 1);
	result = made ? (long)sigs.len : 0;
done:
	for (size_t i = 0; i < nkeys; i++)
		if (keys[i].key)
			dl_gnutls_privkey_deinit(keys[i].key);
	free(common.p);
	free(sigs.p);
	header_block_free(hb);
	return result;
}

long dkim_sign(int fd, off_t size, char *out, size_t cap, char *domain)
{
	struct header_block hb;
	char domains[2][ADDRESS_DOMAIN_MAX + 1];
	const struct header_field *from;
	long pos = -1;
	int local;

	domain[0] = '\0';
	if (header_block_read(fd, 0, size, &hb) < 0) {
		log_event(LOG_WARNING, "event=dkim result=not_signed reason=%s",
			  errno == EFBIG ? "header_too_big" : "read_error");
		return errno == EFBIG ? 0 : -1;
	}
	from = header_next(&hb, "from", &pos);
	if (!from || header_next(&hb, "from", &pos)) {
		header_block_free(&hb);
		return 0; /* no From, or several: nothing we can sign for */
	}
	if (header_address_domains(from, domains, 2, NULL) != 1) {
		header_block_free(&hb);
		return 0;
	}
	snprintf(domain, ADDRESS_DOMAIN_MAX + 1, "%s", domains[0]);
	local = domain_is_local(domain);
	if (local != 1) {
		header_block_free(&hb);
		return local < 0 ? -1 : 0;
	}
	return sign_as(fd, size, &hb, domain, out, cap);
}

long dkim_sign_domain(int fd, off_t size, const char *domain, char *out, size_t cap)
{
	struct header_block hb;
	int local = domain_is_local(domain);

	if (local != 1)
		return local < 0 ? -1 : 0;
	if (header_block_read(fd, 0, size, &hb) < 0) {
		log_event(LOG_WARNING, "event=dkim result=not_signed reason=%s",
			  errno == EFBIG ? "header_too_big" : "read_error");
		return errno == EFBIG ? 0 : -1;
	}
	return sign_as(fd, size, &hb, domain, out, cap);
}

/* -- verification ---------------------------------------------------------- */

const char *dkim_result_name(enum dkim_result r)
{
	switch (r) {
	case DKIM_NONE:
		return "none";
	case DKIM_PASS:
		return "pass";
	case DKIM_FAIL:
		return "fail";
	case DKIM_NEUTRAL:
		return "neutral";
	case DKIM_TEMPERROR:
		return "temperror";
	case DKIM_PERMERROR:
		return "permerror";
	}
	return "none";
}

/* A minimal DER reader for a PKCS#1 RSAPublicKey (some publish that
 * instead of SubjectPublicKeyInfo). */
static int der_item(const unsigned char **p, const unsigned char *end, int tag,
		    const unsigned char **content, size_t *len)
{
	size_t l;

	if (end - *p < 2 || (*p)[0] != tag)
		return -1;
	l = (*p)[1];
	*p += 2;
	if (l & 0x80) {
		int k = (int)(l & 0x7f);
		if (k < 1 || k > 3 || end - *p < k)
			return -1;
		l = 0;
		while (k-- > 0)
			l = (l << 8) | *(*p)++;
	}
	if ((size_t)(end - *p) < l)
		return -1;
	*content = *p;
	*len = l;
	*p += l;
	return 0;
}

/* A public key as verification needs it (pubkey.h): RSA's modulus and
 * exponent, or the 32 octets of an Ed25519 key. */
#define ED25519_KEY_LEN 32
#define ED25519_SIG_LEN 64
struct dkim_pubkey {
	int ed25519;
	unsigned char ed[ED25519_KEY_LEN];
	unsigned char n[DKIM_BLOB_MAX], e[16];
	size_t nl, el;
};

/* RSA's n and e from a PKCS#1 RSAPublicKey (some publish that) or from
 * the SubjectPublicKeyInfo that wraps one (RFC 6376 3.6.1: what p= is
 * meant to hold), of rsaEncryption only. 0, or -1. */
static int rsa_key_parts(const unsigned char *der, size_t len, const unsigned char **n, size_t *nl,
			 const unsigned char **e, size_t *el)
{
	/* 1.2.840.113549.1.1.1 */
	static const unsigned char rsa_oid[] = { 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01 };
	const unsigned char *p = der, *seq, *alg, *oid, *bits;
	size_t seql, algl, oidl, bitsl;

	if (der_item(&p, der + len, 0x30, &seq, &seql) < 0 || p != der + len)
		return -1;
	p = seq;
	if (der_item(&p, seq + seql, 0x30, &alg, &algl) == 0) {
		const unsigned char *a = alg;

		if (der_item(&a, alg + algl, 0x06, &oid, &oidl) < 0 || oidl != sizeof(rsa_oid) ||
		    memcmp(oid, rsa_oid, oidl) != 0 ||
		    der_item(&p, seq + seql, 0x03, &bits, &bitsl) < 0 || p != seq + seql ||
		    bitsl < 1 || bits[0] != 0)
			return -1;
		/* the BIT STRING holds the RSAPublicKey */
		der = bits + 1;
		len = bitsl - 1;
		p = der;
		if (der_item(&p, der + len, 0x30, &seq, &seql) < 0 || p != der + len)
			return -1;
		p = seq;
	}
	if (der_item(&p, seq + seql, 0x02, n, nl) < 0 || der_item(&p, seq + seql, 0x02, e, el) < 0 ||
	    p != seq + seql || *nl == 0 || *el == 0 || ((*n)[0] & 0x80) || ((*e)[0] & 0x80))
		return -1; /* INTEGERs, both positive */
	return 0;
}

/* 0 with k holding the key; -1 when it is not a usable RSA key of
 * DKIM_RSA_BITS_MIN bits or more. */
static int import_rsa(struct dkim_pubkey *k, const unsigned char *der, size_t len)
{
	const unsigned char *n, *e;
	size_t nl, el;

	if (rsa_key_parts(der, len, &n, &nl, &e, &el) < 0 || nl > sizeof(k->n) || el > sizeof(k->e) ||
	    pubkey_rsa_bits(n, nl, e, el) < DKIM_RSA_BITS_MIN)
		return -1;
	memcpy(k->n, n, nl);
	memcpy(k->e, e, el);
	k->nl = nl;
	k->el = el;
	return 0;
}

/* Fetches and imports the key for d= and s=. */
static enum dkim_result fetch_key(const char *domain, const char *selector, int ed25519,
				  struct dkim_pubkey *pub, const char **reason, long long deadline)
{
	/* not re-entered: called once per signature, parsed before return */
	static struct dns_txt txt;
	static unsigned char der[DKIM_BLOB_MAX];
	char name[ADDRESS_DOMAIN_MAX + 80];
	enum dns_result dr;

	if (snprintf(name, sizeof(name), "%s._domainkey.%s", selector, domain) >= (int)sizeof(name)) {
		*reason = "key name too long";
		return DKIM_PERMERROR;
	}
	dr = dns_txt(name, &txt, deadline);
	if (dr == DNS_TEMPFAIL) {
		*reason = "key lookup failed";
		return DKIM_TEMPERROR;
	}
	if (dr != DNS_OK) {
		*reason = "no key for signature";
		return DKIM_PERMERROR;
	}
	*reason = "bad key record";
	for (size_t r = 0; r < txt.n; r++) {
		struct tag tags[TAGS_MAX];
		const struct tag *p, *k, *h, *v, *s;
		size_t n;
		long dl;
		int ok;

		if (strlen(txt.text[r]) != txt.len[r] ||
		    tags_parse(txt.text[r], txt.len[r], tags, &n) < 0)
			continue;
		v = tag_get(tags, n, "v");
		if (v && (v != &tags[0] || !tag_is(v, "DKIM1")))
			continue;
		k = tag_get(tags, n, "k");
		if ((k && !tag_is(k, ed25519 ? "ed25519" : "rsa")) || (!k && ed25519)) {
			*reason = "key type does not match the signature";
			continue;
		}
		h = tag_get(tags, n, "h");
		if (h) {
			char hv[128];
			int has = 0;
			if (tag_copy(h, hv, sizeof(hv)) == 0)
				for (char *t = strtok(hv, ":"); t; t = strtok(NULL, ":"))
					has |= strcasecmp(t, "sha256") == 0;
			if (!has) {
				*reason = "key does not allow sha256";
				continue;
			}
		}
		s = tag_get(tags, n, "s");
		if (s) {
			char sv[128];
			int has = 0;
			if (tag_copy(s, sv, sizeof(sv)) == 0)
				for (char *t = strtok(sv, ":"); t; t = strtok(NULL, ":"))
					has |= strcmp(t, "*") == 0 || strcasecmp(t, "email") == 0;
			if (!has) {
				*reason = "key not for email";
				continue;
			}
		}
		p = tag_get(tags, n, "p");
		if (!p) {
			continue;
		}
		dl = b64_decode_fws(p->value, p->len, der, sizeof(der));
		if (dl == 0) {
			*reason = "key revoked";
			return DKIM_PERMERROR;
		}
		if (dl < 0)
			continue;
		memset(pub, 0, sizeof(*pub));
		pub->ed25519 = ed25519;
		if (ed25519) {
			ok = dl == ED25519_KEY_LEN;
			if (ok)
				memcpy(pub->ed, der, ED25519_KEY_LEN);
		} else {
			ok = import_rsa(pub, der, (size_t)dl) == 0;
			if (!ok)
				*reason = "key too short or not RSA";
		}
		if (ok)
			return DKIM_PASS;
	}
	return DKIM_PERMERROR;
}

struct bh_cache {
	int relaxed;
	unsigned long long limit;
	unsigned char digest[SHA256_LEN];
};

/* The field with the value of its b= tag removed (RFC 6376 3.7), into
 * out. */
static void strip_b(const struct header_field *f, struct sbuf *out)
{
	const char *p = f->value, *end = f->value + f->value_len;

	sb_add(out, f->raw, (size_t)(p - f->raw));
	while (p < end) {
		const char *semi = memchr(p, ';', (size_t)(end - p));
		const char *tend = semi ? semi : end, *n = p, *eq, *ne;

		while (n < tend && is_fws(*n))
			n++;
		eq = memchr(n, '=', (size_t)(tend - n));
		ne = eq;
		while (ne && ne > n && is_fws(ne[-1]))
			ne--;
		if (eq && ne - n == 1 && *n == 'b')
			sb_add(out, p, (size_t)(eq + 1 - p));
		else
			sb_add(out, p, (size_t)(tend - p));
		if (semi)
			sb_add(out, ";", 1);
		p = semi ? semi + 1 : end;
	}
}

static enum dkim_result verify_one(int fd, const struct header_block *hb, long idx,
				   struct dkim_verdict *v, struct bh_cache *cache, size_t *ncache,
				   long long deadline)
{
	const struct header_field *f = &hb->fields[idx];
	struct tag tags[TAGS_MAX];
	const struct tag *t;
	size_t n;
	char hlist[2048], cval[64], buf[64];
	int hrelaxed = 0, brelaxed = 0, ed25519, has_from = 0;
	unsigned long long limit = BODY_ALL;
	/* not re-entered: called once per signature in turn */
	static unsigned char bh_want[DKIM_BLOB_MAX], sigbin[DKIM_BLOB_MAX];
	long bhl, sigl;
	unsigned char digest[SHA256_LEN];
	static struct dkim_pubkey pub;
	struct sbuf input = { 0 }, sigfield = { 0 };
	enum dkim_result res;
	unsigned char hdig[SHA256_LEN];
	int have = 0;

	v->reason = "malformed signature";
	if (tags_parse(f->value, f->value_len, tags, &n) < 0)
		return DKIM_PERMERROR;
	if ((t = tag_get(tags, n, "d")) && tag_copy(t, v->domain, sizeof(v->domain)) == 0)
		for (char *c = v->domain; *c; c++)
			*c = (char)tolower((unsigned char)*c);
	if ((t = tag_get(tags, n, "s")))
		tag_copy(t, v->selector, sizeof(v->selector));
	if ((t = tag_get(tags, n, "a")))
		tag_copy(t, v->algorithm, sizeof(v->algorithm));
	if ((t = tag_get(tags, n, "b"))) {
		size_t o = 0;
		for (size_t i = 0; i < t->len && o < 8; i++)
			if (!is_fws(t->value[i]))
				v->b[o++] = t->value[i];
		v->b[o] = '\0';
	}
	if (!tag_is(tag_get(tags, n, "v"), "1") || !tag_get(tags, n, "b") ||
	    !tag_get(tags, n, "bh") || !v->domain[0] || !v->selector[0] || !tag_get(tags, n, "h") ||
	    !address_domain_valid(v->domain, strlen(v->domain), 0))
		return DKIM_PERMERROR;
	if (strcasecmp(v->algorithm, "rsa-sha256") == 0) {
		ed25519 = 0;
	} else if (strcasecmp(v->algorithm, "ed25519-sha256") == 0) {
		ed25519 = 1;
	} else {
		v->reason = strcasecmp(v->algorithm, "rsa-sha1") == 0 ?
				    "rsa-sha1 not accepted, RFC 8301" : "unknown algorithm";
		return DKIM_PERMERROR;
	}
	if ((t = tag_get(tags, n, "c"))) {
		char *slash;
		if (tag_copy(t, cval, sizeof(cval)) < 0)
			return DKIM_PERMERROR;
		slash = strchr(cval, '/');
		if (slash)
			*slash++ = '\0';
		if (strcasecmp(cval, "relaxed") == 0)
			hrelaxed = 1;
		else if (strcasecmp(cval, "simple") != 0)
			return DKIM_PERMERROR;
		if (slash && strcasecmp(slash, "relaxed") == 0)
			brelaxed = 1;
		else if (slash && strcasecmp(slash, "simple") != 0)
			return DKIM_PERMERROR;
	}
	if ((t = tag_get(tags, n, "q")) && !tag_is(t, "dns/txt"))
		return DKIM_PERMERROR;
	if ((t = tag_get(tags, n, "l"))) {
		char *end;
		if (tag_copy(t, buf, sizeof(buf)) < 0 || !isdigit((unsigned char)buf[0]))
			return DKIM_PERMERROR;
		limit = strtoull(buf, &end, 10);
		if (*end)
			return DKIM_PERMERROR;
	}
	if ((t = tag_get(tags, n, "x"))) {
		if (tag_copy(t, buf, sizeof(buf)) < 0 || !isdigit((unsigned char)buf[0]))
			return DKIM_PERMERROR;
		if (strtoll(buf, NULL, 10) < (long long)time(NULL)) {
			v->reason = "signature expired";
			return DKIM_PERMERROR;
		}
	}
	if ((t = tag_get(tags, n, "i"))) {
		/* The AUID's domain is d= or a subdomain of it. */
		char iv[ADDRESS_PATH_MAX + 1];
		const char *at;
		size_t il, dl = strlen(v->domain);
		if (tag_copy(t, iv, sizeof(iv)) < 0 || !(at = strrchr(iv, '@')))
			return DKIM_PERMERROR;
		at++;
		il = strlen(at);
		if (!(il == dl && strcasecmp(at, v->domain) == 0) &&
		    !(il > dl && at[il - dl - 1] == '.' && strcasecmp(at + il - dl, v->domain) == 0)) {
			v->reason = "i= not within d=";
			return DKIM_PERMERROR;
		}
	}
	t = tag_get(tags, n, "h");
	if (tag_copy(t, hlist, sizeof(hlist)) < 0)
		return DKIM_PERMERROR;
	for (char *c = hlist, *s = hlist;; c++) {
		if (*c == ':' || *c == '\0') {
			if (c - s == 4 && strncasecmp(s, "from", 4) == 0)
				has_from = 1;
			s = c + 1;
			if (!*c)
				break;
		}
	}
	if (!has_from) {
		v->reason = "From not signed";
		return DKIM_PERMERROR;
	}
	t = tag_get(tags, n, "bh");
	bhl = b64_decode_fws(t->value, t->len, bh_want, sizeof(bh_want));
	t = tag_get(tags, n, "b");
	sigl = b64_decode_fws(t->value, t->len, sigbin, sizeof(sigbin));
	if (bhl < 0 || sigl <= 0)
		return DKIM_PERMERROR;

	for (size_t i = 0; i < *ncache && !have; i++) {
		if (cache[i].relaxed == brelaxed && cache[i].limit == limit) {
			memcpy(digest, cache[i].digest, SHA256_LEN);
			have = 1;
		}
	}
	if (!have) {
		if (body_hash(fd, hb->body, hb->size, brelaxed, limit, digest) < 0) {
			v->reason = "cannot read message";
			return DKIM_TEMPERROR;
		}
		if (*ncache < DKIM_VERIFY_MAX) {
			cache[*ncache].relaxed = brelaxed;
			cache[*ncache].limit = limit;
			memcpy(cache[*ncache].digest, digest, SHA256_LEN);
			(*ncache)++;
		}
	}
	if (bhl != SHA256_LEN || memcmp(digest, bh_want, SHA256_LEN) != 0) {
		v->reason = "body hash did not verify";
		return DKIM_FAIL;
	}

	res = fetch_key(v->domain, v->selector, ed25519, &pub, &v->reason, deadline);
	if (res != DKIM_PASS)
		return res;

	add_signed_fields(hb, hlist, strlen(hlist), hrelaxed, idx, &input);
	strip_b(f, &sigfield);
	canon_header(hrelaxed, sigfield.p ? sigfield.p : "", sigfield.len, 0, &input);
	free(sigfield.p);
	if (input.overflow || sigfield.overflow) {
		free(input.p);
		v->reason = "header too large";
		return DKIM_PERMERROR;
	}
	/* RFC 8463 3: Ed25519 signs the SHA-256 of the input; RSA
	 * (RFC 8017 8.2.2) a DigestInfo of it. */
	sha256_of(input.p ? input.p : "", input.len, hdig);
	if (pub.ed25519)
		res = sigl == ED25519_SIG_LEN && pubkey_ed25519_verify(pub.ed, hdig, SHA256_LEN, sigbin) ?
			      DKIM_PASS :
			      DKIM_FAIL;
	else
		res = pubkey_rsa_sha256_verify(pub.n, pub.nl, pub.e, pub.el, hdig, sigbin, (size_t)sigl) ?
			      DKIM_PASS :
			      DKIM_FAIL;
	v->reason = res == DKIM_PASS ? NULL : "signature did not verify";
	free(input.p);
	return res;
}

size_t dkim_verify(int fd, const struct header_block *hb, struct dkim_verdict *out, size_t max,
		   long long deadline)
{
	struct bh_cache cache[DKIM_VERIFY_MAX];
	size_t n = 0, ncache = 0;
	long pos = -1;

	if (max > DKIM_VERIFY_MAX)
		max = DKIM_VERIFY_MAX;
	while (n < max && header_next(hb, "dkim-signature", &pos)) {
		memset(&out[n], 0, sizeof(out[n]));
		out[n].result = verify_one(fd, hb, pos, &out[n], cache, &ncache, deadline);
		n++;
	}
	return n;
}
