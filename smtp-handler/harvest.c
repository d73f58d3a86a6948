/* Address harvesting: a dictionary attack on our users' addresses, spread
 * over sessions. The unknown-recipient refusals of each client address
 * (IPv6 per /64, as the login throttle) are counted in SQLite, since every
 * session is its own process; past harvest_limit within
 * HARVEST_WINDOW_SECONDS the address gets 450 4.7.1 at RCPT, and 421 at
 * connect, until the window has passed since its last counted refusal.
 * relay_networks clients are not held off. */
#include <stdio.h>
#include <time.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "net.h"
#include "session.h"

/* The address's refusals within the window, or -1 on trouble. */
static int refusals_recent(const char *key, time_t now)
{
	return (int)db_int_lookup(SQL_HARVEST_REFUSALS, key, now - HARVEST_WINDOW_SECONDS);
}

int harvest_blocked(struct session *s)
{
	long long limit = setting_int(SET_HARVEST_LIMIT);
	char key[80];
	int n;

	if (limit <= 0 || !s->peer.ip[0])
		return 0;
	/* Read every time: other sessions from the same address count too. */
	ip_throttle_key(s->peer.ip, key, sizeof(key));
	n = refusals_recent(key, time(NULL));
	if (n < 0)
		return 0; /* cannot tell: a lookup problem holds off nobody */
	if (n < limit)
		return 0;
	/* Rare: only now is it worth asking whether the admin trusts it. */
	return session_trusted_network(s) ? 0 : 1;
}

void harvest_count_refusal(struct session *s)
{
	struct db_q *st;
	char key[80];
	time_t now = time(NULL);
	int rc;

	if (setting_int(SET_HARVEST_LIMIT) <= 0 || !s->peer.ip[0])
		return;
	ip_throttle_key(s->peer.ip, key, sizeof(key));
	st = db_stmt(SQL_HARVEST_COUNT);
	if (!st)
		return;
	db_bind_text(st, 1, key);
	db_bind_int64(st, 2, now);
	db_bind_int64(st, 3, now - HARVEST_WINDOW_SECONDS);
	rc = db_step(st);
	if (rc == DB_ROW) {
		int n = db_col_int(st, 0);
		if (n == setting_int(SET_HARVEST_LIMIT))
			log_event(LOG_WARNING, "event=harvest result=blocked ip=%s refusals=%d", s->peer.ip, n);
	}
	/* Reset runs the RETURNING statement to its end, which commits it. */
	db_reset(st);
	if (rc != DB_ROW)
		log_event(LOG_WARNING, "event=harvest result=not_counted ip=%s error=\"%s\"", s->peer.ip,
			  db_errmsg());
}
