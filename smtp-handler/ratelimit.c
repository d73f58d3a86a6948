/* The per-login sending rate (max_messages_per_hour_per_login): a stolen
 * password must not send a million spams. Every recipient of a message
 * from an authenticated login counts as one message sent, so one message
 * to 100 recipients costs as much as 100 messages to one. Counts live in
 * send_counts, one row per login and clock hour, since every connection is
 * a new process. */
#include <time.h>

#include "config.h"
#include "db.h"
#include "log.h"
#include "session.h"

/* Hours of send_counts rows kept for the administrator to read. */
#define SEND_COUNTS_KEEP_HOURS 48

static long long current_hour(void)
{
	return (long long)(time(NULL) / 3600);
}

/* Messages charged to login in this hour, or -1 on database trouble. */
static long long sent_this_hour(const char *login)
{
	return db_int_lookup(SQL_SEND_COUNT, login, current_hour());
}

int rate_limit_check(struct session *s, size_t wanted)
{
	long long max = setting_int(SET_MAX_MESSAGES_PER_HOUR_PER_LOGIN), sent;

	/* Only authenticated logins are counted; 0 or less means no limit. */
	if (!s->auth_login[0] || max <= 0)
		return 0;
	sent = sent_this_hour(s->auth_login);
	if (sent < 0) {
		reply(s, "451 4.3.0 Temporary lookup failure, try again later");
		return -1;
	}
	if (sent + (long long)wanted > max) {
		log_event(LOG_NOTICE, "event=rate_limit result=refused login=%s sent=%lld wanted=%zu max=%lld",
			  s->auth_login, sent, wanted, max);
		reply(s, "450 4.7.1 Error: too many messages from %s this hour, try again later",
		      s->auth_login);
		return -1;
	}
	return 0;
}

void rate_limit_charge(struct session *s, size_t count)
{
	long long hour = current_hour();
	struct db_q *st;
	int ok = 1;

	if (!s->auth_login[0] || count == 0)
		return;
	if (db_begin() < 0) {
		log_event(LOG_WARNING, "event=rate_limit result=not_counted login=%s count=%zu", s->auth_login,
			  count);
		return;
	}
	st = db_stmt(SQL_SEND_COUNT_ADD);
	if (st) {
		db_bind_text(st, 1, s->auth_login);
		db_bind_int64(st, 2, hour);
		db_bind_int64(st, 3, count);
		ok = db_step(st) == DB_DONE;
		db_reset(st);
	} else {
		ok = 0;
	}
	/* Pruned on write, so the table cannot grow without bound. */
	db_prune(SQL_SEND_COUNTS_PRUNE, hour - SEND_COUNTS_KEEP_HOURS);
	if (!ok) {
		db_rollback();
		log_event(LOG_WARNING, "event=rate_limit result=not_counted login=%s count=%zu", s->auth_login,
			  count);
		return;
	}
	if (db_commit() < 0)
		log_event(LOG_WARNING, "event=rate_limit result=not_counted login=%s count=%zu", s->auth_login,
			  count);
}
