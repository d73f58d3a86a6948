#include "srs.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "limits.h"
#include "log.h"
#include "tls-crypto.h"

#define SRS_HASH_CHARS 8

static const char base32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/* HHHHHHHH of "tt=domain=local" (lower-cased) into hash. 0 or -1. */
static int srs_hash(const char *secret, const char *tt, const char *domain, const char *local,
		    char hash[SRS_HASH_CHARS + 1])
{
	char data[ADDRESS_PATH_MAX * 2];
	unsigned char mac[32];
	unsigned long long bits = 0;
	int n;

	n = snprintf(data, sizeof(data), "%s=%s=%s", tt, domain, local);
	if (n < 0 || (size_t)n >= sizeof(data))
		return -1;
	for (int i = 0; i < n; i++)
		data[i] = (char)tolower((unsigned char)data[i]);
	if (tls_library_load() < 0 ||
	    dl_gnutls_hmac_fast(GNUTLS_MAC_SHA256, secret, strlen(secret), data, (size_t)n, mac) < 0)
		return -1;
	for (int i = 0; i < 5; i++)
		bits = bits << 8 | mac[i];
	for (int i = 0; i < SRS_HASH_CHARS; i++)
		hash[i] = base32[(bits >> (5 * (SRS_HASH_CHARS - 1 - i))) & 31];
	hash[SRS_HASH_CHARS] = '\0';
	return 0;
}

static unsigned today(long long now)
{
	return (unsigned)((now / 86400) % 1024);
}

static int is_srs0(const char *local)
{
	return strncasecmp(local, "SRS0=", 5) == 0;
}

int srs_forward(const struct address *sender, const char *srs_domain, const char *secret, char *out,
		size_t cap)
{
	char hash[SRS_HASH_CHARS + 1], tt[3];
	unsigned day = today((long long)time(NULL));
	int n;

	if (sender->is_null || !sender->domain[0] || sender->is_literal)
		return 0;
	if (sender->local[0] == '"' || sender->non_ascii) {
		log_event(LOG_INFO, "event=srs result=not_rewritten reason=quoted_or_utf8");
		return 0;
	}
	tt[0] = base32[day >> 5];
	tt[1] = base32[day & 31];
	tt[2] = '\0';
	if (srs_hash(secret, tt, sender->domain, sender->local, hash) < 0) {
		log_event(LOG_ERR, "event=srs result=error error=\"hash failed\"");
		return -1;
	}
	n = snprintf(out, cap, "SRS0=%s=%s=%s=%s@%s", hash, tt, sender->domain, sender->local,
		     srs_domain);
	if (n < 0 || (size_t)n >= cap || (size_t)n > ADDRESS_PATH_MAX) {
		log_event(LOG_NOTICE, "event=srs result=not_rewritten reason=too_long");
		return 0;
	}
	return 1;
}

int srs_is_srs0(const struct address *a)
{
	return !a->is_null && a->domain[0] && is_srs0(a->local);
}

enum srs_result srs_reverse(const struct address *rcpt, const char *secret, char *out, size_t cap)
{
	char copy[ADDRESS_PATH_MAX + 1], hash[SRS_HASH_CHARS + 1];
	char *h, *tt, *domain, *local;
	const char *p;
	unsigned day, age;
	int n;

	if (!srs_is_srs0(rcpt))
		return SRS_NOT_SRS;
	snprintf(copy, sizeof(copy), "%s", rcpt->local + 5);
	/* HHHHHHHH=TT=domain=local; the local part may hold '='. */
	h = copy;
	tt = strchr(h, '=');
	if (!tt)
		return SRS_FORGED;
	*tt++ = '\0';
	domain = strchr(tt, '=');
	if (!domain)
		return SRS_FORGED;
	*domain++ = '\0';
	local = strchr(domain, '=');
	if (!local)
		return SRS_FORGED;
	*local++ = '\0';
	if (strlen(h) != SRS_HASH_CHARS || strlen(tt) != 2 || !*local || !*domain ||
	    !address_domain_valid(domain, strlen(domain), 0))
		return SRS_FORGED;
	for (int i = 0; i < 2; i++)
		if (!(p = strchr(base32, toupper((unsigned char)tt[i]))) || !*p)
			return SRS_FORGED;
	if (!secret || !secret[0])
		return SRS_FORGED; /* no secret yet: we never made one */
	if (srs_hash(secret, tt, domain, local, hash) < 0)
		return SRS_TEMPFAIL;
	if (strcasecmp(hash, h) != 0)
		return SRS_FORGED;
	day = (unsigned)(strchr(base32, toupper((unsigned char)tt[0])) - base32) << 5 |
	      (unsigned)(strchr(base32, toupper((unsigned char)tt[1])) - base32);
	age = (today((long long)time(NULL)) + 1024 - day) % 1024;
	if (age > SRS_MAX_AGE_DAYS)
		return SRS_EXPIRED;
	n = snprintf(out, cap, "%s@%s", local, domain);
	if (n < 0 || (size_t)n >= cap)
		return SRS_FORGED;
	for (char *c = out + strlen(local) + 1; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	return SRS_OK;
}

static int srs_local_char(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~.", c));
}

enum address_parse srs_parse_path(const char *arg, struct address *out, const char **rest)
{
	const char *p = arg, *close, *at = NULL;
	enum address_parse r;

	while (*p == ' ')
		p++;
	if (*p != '<' || (strncasecmp(p + 1, "SRS0=", 5) != 0 && strncasecmp(p + 1, "SRS1=", 5) != 0))
		return ADDRESS_TOOLONG;
	p++;
	close = strchr(p, '>');
	if (!close)
		return ADDRESS_SYNTAX;
	for (const char *c = p; c < close; c++) {
		if (*c == '@') {
			if (at)
				return ADDRESS_SYNTAX;
			at = c;
		} else if (!at && (!srs_local_char((unsigned char)*c) || (c[0] == '.' && c[1] == '.')))
			return ADDRESS_TOOLONG; /* quoted or odd: not ours to widen */
	}
	r = address_long_path_check(p, at, close);
	if (r != ADDRESS_OK)
		return r;
	if (!address_domain_valid(at + 1, (size_t)(close - at - 1), 0))
		return ADDRESS_SYNTAX;
	address_long_path_take(out, p, at, close);
	if (rest)
		*rest = close + 1;
	return ADDRESS_OK;
}
