#include "auth.h"

#include <crypt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "limits.h"
#include "log.h"
#include "net.h"

/* yescrypt of a random phrase: the dummy when no mailbox row exists. */
static const char dummy_hash[] =
	"$y$j9T$oeNL16GiCdvac12IRjG7Q/$o9jxahD6c2TL0jif24B5VZzfBplqgX.9eVnJxFHM7U5";

int auth_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	volatile unsigned char diff = (unsigned char)(la != lb);
	size_t n = la < lb ? la : lb;

	for (size_t i = 0; i < n; i++)
		diff |= (unsigned char)(a[i] ^ b[i]);
	return diff == 0;
}

static int failures_recent(const char *key, time_t now)
{
	return (int)db_int_lookup(SQL_AUTH_FAILURES, key, now - THROTTLE_WINDOW_SECONDS);
}

/* The wait of an attempt with n failures (or checks under way) from its
 * address before it: none below THROTTLE_DELAY_AFTER, then 1 s, doubling
 * every 5 more, at most THROTTLE_DELAY_MAX_SECONDS. */
static int throttle_seconds(int n)
{
	int d;

	if (n < THROTTLE_DELAY_AFTER)
		return 0;
	d = 1 << ((n - THROTTLE_DELAY_AFTER) / 5);
	return d > THROTTLE_DELAY_MAX_SECONDS ? THROTTLE_DELAY_MAX_SECONDS : d;
}

int auth_throttle_delay(const char *ip)
{
	char key[80];
	int n;

	ip_throttle_key(ip, key, sizeof(key));
	n = failures_recent(key, time(NULL));
	if (n < 0)
		return 0; /* the check itself will report the trouble */
	if (n >= THROTTLE_REFUSE_AT)
		return -1;
	return throttle_seconds(n);
}

/* Takes a slot for one attempt before its password is checked: a row of
 * auth_pending, inserted only while the IP's failures in the window and
 * its checks under way are below THROTTLE_REFUSE_AT, in one statement
 * (an INSERT takes the write lock before it reads), so however many
 * sessions try at once, at most that many passwords are checked per IP
 * and window. The slot goes when the check ends (slot_release; a failure
 * is counted in auth_failures first). Sets *slot to the row; returns the
 * failures before this attempt, -2 when the IP is refused, -1 on
 * database trouble (then the count is only read: an administrator
 * holding the database must not stop every login). */
static int slot_take_relaxed(const char *key, time_t now, long long *slot);

static int slot_take(const char *key, time_t now, long long *slot)
{
	int n;

	db_durable(0);
	n = slot_take_relaxed(key, now, slot);
	db_durable(1);
	return n;
}

static int slot_take_relaxed(const char *key, time_t now, long long *slot)
{
	struct db_q *st;
	int rc, n;

	*slot = 0;
	st = db_stmt(SQL_AUTH_SLOT_TAKE);
	if (!st)
		return -1;
	db_bind_text(st, 1, key);
	db_bind_int64(st, 2, now);
	db_bind_int64(st, 3, THROTTLE_REFUSE_AT);
	db_bind_int64(st, 4, now - THROTTLE_WINDOW_SECONDS);
	db_bind_int64(st, 5, now - THROTTLE_PENDING_SECONDS);
	rc = db_step(st);
	if (rc == DB_ROW) {
		*slot = db_col_int64(st, 0);
		rc = db_step(st);
	}
	db_reset(st);
	if (rc == DB_DONE && *slot) {
		n = failures_recent(key, now);
		return n < 0 ? 0 : n;
	}
	if (rc == DB_DONE)
		return -2; /* failures and checks under way are at the limit */
	*slot = 0;
	log_event(LOG_WARNING, "event=auth result=not_counted error=\"%s\"", db_errmsg());
	n = failures_recent(key, now);
	if (n < 0)
		return -1;
	return n >= THROTTLE_REFUSE_AT ? -2 : n;
}

/* Rows older than the window (other addresses' failures, slots of
 * processes that died): pruned on failures only, so a successful login
 * pays for no extra write. */
static void prune_stale(time_t now)
{
	db_durable(0);
	db_prune(SQL_AUTH_FAILURES_PRUNE, now - THROTTLE_WINDOW_SECONDS);
	db_prune(SQL_AUTH_PENDING_PRUNE, now - THROTTLE_PENDING_SECONDS);
	db_durable(1);
}

/* A failed check: counted (a row older than the window starts again from
 * one), then its slot given back, in that order, so that the two never
 * count less than the checks made. */
static void failure_record(const char *key, time_t now)
{
	struct db_q *st = db_stmt(SQL_AUTH_FAILURE_RECORD);

	if (!st)
		return;
	db_durable(0);
	db_bind_text(st, 1, key);
	db_bind_int64(st, 2, now);
	db_bind_int64(st, 3, now - THROTTLE_WINDOW_SECONDS);
	if (db_step(st) != DB_DONE)
		log_event(LOG_WARNING, "event=auth result=not_counted error=\"%s\"",
			  db_errmsg());
	db_reset(st);
	db_durable(1);
}

static void slot_release(long long slot)
{
	struct db_q *st;

	if (!slot)
		return;
	st = db_stmt(SQL_AUTH_SLOT_RELEASE);
	if (!st)
		return;
	db_durable(0);
	db_bind_int64(st, 1, slot);
	db_step(st);
	db_reset(st);
	db_durable(1);
}

/* Every failed login is answered no sooner than auth_failure_delay_ms
 * after its check began (Dovecot's auth_failure_delay): how long a wrong
 * password, an unknown login or a disabled mailbox takes tells nothing. */
static void failure_floor(const struct timespec *start)
{
	long long ms = setting_int(SET_AUTH_FAILURE_DELAY_MS);
	struct timespec now, left;
	long long spent;

	if (ms <= 0)
		return;
	if (ms > AUTH_FAILURE_DELAY_MAX_MS)
		ms = AUTH_FAILURE_DELAY_MAX_MS;
	clock_gettime(CLOCK_MONOTONIC, &now);
	spent = (now.tv_sec - start->tv_sec) * 1000LL + (now.tv_nsec - start->tv_nsec) / 1000000;
	if (spent >= ms)
		return;
	left.tv_sec = (time_t)((ms - spent) / 1000);
	left.tv_nsec = (long)((ms - spent) % 1000) * 1000000L;
	while (nanosleep(&left, &left) < 0)
		;
}

/* Hashes password with the setting of hash; 1 when it matches. */
static int crypt_matches(const char *password, const char *hash)
{
	static struct crypt_data data;
	const char *out;

	memset(&data, 0, sizeof(data));
	out = crypt_rn(password, hash, &data, (int)sizeof(data));
	return out && out[0] != '*' && auth_equal(out, hash);
}

enum auth_result auth_check(const char *ip, const char *login, const char *password)
{
	char key[80], hash[256] = "";
	struct db_q *st;
	struct timespec start;
	time_t now = time(NULL);
	long long slot;
	int rc, enabled = 0, found = 0, prior, ok;

	ip_throttle_key(ip, key, sizeof(key));
	prior = slot_take(key, now, &slot);
	if (prior == -2) {
		clock_gettime(CLOCK_MONOTONIC, &start);
		log_event(LOG_NOTICE, "event=auth result=throttled ip=%s", ip[0] ? ip : "local");
		failure_floor(&start);
		return AUTH_THROTTLED;
	}
	if (prior < 0)
		return AUTH_TEMPFAIL;
	if (throttle_seconds(prior) > 0)
		sleep((unsigned)throttle_seconds(prior));
	/* The floor comes on top of the throttle's delay. */
	clock_gettime(CLOCK_MONOTONIC, &start);

	st = db_stmt(SQL_MAILBOX_PASSWORD);
	if (!st) {
		slot_release(slot);
		return AUTH_TEMPFAIL;
	}
	db_bind_text(st, 1, login);
	rc = db_step(st);
	if (rc == DB_ROW) {
		const char *h = db_col_text(st, 0);
		snprintf(hash, sizeof(hash), "%s", h ? h : "");
		enabled = db_col_int(st, 1);
		found = 1;
	}
	db_reset(st);
	if (rc != DB_ROW && rc != DB_DONE) {
		slot_release(slot); /* no password was checked */
		return AUTH_TEMPFAIL;
	}

	if (!found) {
		/* Same cost as a real check: hash against some mailbox's
		 * password, so time does not tell which logins exist. */
		st = db_stmt(SQL_MAILBOX_ANY_PASSWORD);
		if (st && db_step(st) == DB_ROW) {
			const char *h = db_col_text(st, 0);
			snprintf(hash, sizeof(hash), "%s", h ? h : dummy_hash);
		} else {
			snprintf(hash, sizeof(hash), "%s", dummy_hash);
		}
		if (st)
			db_reset(st);
		crypt_matches(password, hash);
		ok = 0;
	} else {
		ok = crypt_matches(password, hash);
	}

	if (ok && enabled) {
		/* Gives back this attempt's slot only: failures from the
		 * same address stay until the window ends, so one working
		 * password does not buy unlimited guesses at others. */
		slot_release(slot);
		return AUTH_OK;
	}
	failure_record(key, now);
	slot_release(slot);
	prune_stale(now);
	failure_floor(&start);
	if (found && !enabled)
		return AUTH_DISABLED;
	return AUTH_FAIL;
}

int sasl_plain_split(const char *msg, size_t len, const char **authcid, const char **passwd)
{
	const char *nul1 = memchr(msg, '\0', len), *nul2;

	if (!nul1)
		return -1;
	nul2 = memchr(nul1 + 1, '\0', len - (size_t)(nul1 + 1 - msg));
	if (!nul2 || memchr(nul2 + 1, '\0', len - (size_t)(nul2 + 1 - msg)))
		return -1;
	*authcid = nul1 + 1;
	*passwd = nul2 + 1;
	if (!**authcid)
		return -1;
	/* We act for nobody else: an authzid must name the login itself. */
	if (nul1 != msg && strcmp(msg, *authcid) != 0)
		return -1;
	return 0;
}
