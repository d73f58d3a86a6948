/* Settings from the settings table, with the defaults of DESIGN.md. Read
 * afresh by every process, so a change needs no restart. */
#ifndef POSTAGE_CONFIG_H
#define POSTAGE_CONFIG_H

struct db_q;

enum setting {
	SET_HOSTNAME,
	SET_MAIL_ROOT,
	SET_SPOOL_DIR,
	SET_TLS_CERT,
	SET_TLS_KEY,
	SET_TLS_PRIORITY,
	SET_MAX_MESSAGE_BYTES,
	SET_POP_BEFORE_SMTP_MINUTES,
	SET_RELAYHOST,
	SET_RELAYHOST_LOGIN,
	SET_RELAYHOST_PASSWORD,
	SET_RELAYHOST_TLS,
	SET_RELAYHOST_TLS_CA,
	SET_QUEUE_LIFETIME_HOURS,
	SET_RECEIVED_SHOW_LOGIN,
	SET_MAX_MESSAGES_PER_HOUR_PER_LOGIN,
	SET_SRS_SECRET,
	SET_DMARC_REJECT,
	SET_SPF_REJECT_FAIL,
	SET_SLOW_SESSIONS_MAX,
	SET_HARVEST_LIMIT,
	SET_AUTH_FAILURE_DELAY_MS,
	SET_POP3_UIDL_FORMAT,
	SET_LIST_BOUNCE_LIMIT,
	SET_RSPAMD,
	SET_RSPAMD_REQUIRED,
	SET_RSPAMD_OUTBOUND,
	SET_COUNT
};

/* Reads every row of the settings query q (SQL_SETTINGS_LOAD; NULL when
 * it could not be prepared): db_open calls it once the database is open
 * and its version checked. 0 or -1. */
int config_load(struct db_q *q);
/* One setting's row (a NULL key is skipped; an unknown one logged). */
void config_take(const char *key, const char *value);
/* The value, or the default; "" for an unset optional one. */
const char *setting(enum setting id);
long long setting_int(enum setting id);
/* 1 when the settings table gives a value (so the default is not used). */
int setting_is_set(enum setting id);

#endif
