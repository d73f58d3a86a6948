#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "limits.h"
#include "log.h"

static const struct {
	const char *key;
	const char *fallback;
} settings_known[SET_COUNT] = {
	[SET_HOSTNAME] = { "hostname", NULL },
	[SET_MAIL_ROOT] = { "mail_root", "/var/mail/postage" },
	[SET_SPOOL_DIR] = { "spool_dir", "/var/spool/postage" },
	[SET_TLS_CERT] = { "tls_cert", "" },
	[SET_TLS_KEY] = { "tls_key", "" },
	/* TLS 1.2 and 1.3 with forward secrecy and AEAD ciphers only (no static
	 * RSA key exchange, no CBC: -MAC-ALL:+AEAD leaves no suite that needs a
	 * MAC), in our order, not the client's: what testssl.sh finds no
	 * fault in (README, "Checking TLS"). */
	[SET_TLS_PRIORITY] = { "tls_priority", "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:"
					       "-RSA:-MAC-ALL:+AEAD:%SERVER_PRECEDENCE" },
	[SET_MAX_MESSAGE_BYTES] = { "max_message_bytes", "26214400" },
	[SET_POP_BEFORE_SMTP_MINUTES] = { "pop_before_smtp_minutes", "30" },
	[SET_RELAYHOST] = { "relayhost", "" },
	[SET_RELAYHOST_LOGIN] = { "relayhost_login", "" },
	[SET_RELAYHOST_PASSWORD] = { "relayhost_password", "" },
	/* "" is "verify" with a relayhost_login, else "may" (queue/runner.c). */
	[SET_RELAYHOST_TLS] = { "relayhost_tls", "" },
	[SET_RELAYHOST_TLS_CA] = { "relayhost_tls_ca", "" },
	[SET_QUEUE_LIFETIME_HOURS] = { "queue_lifetime_hours", "120" },
	[SET_RECEIVED_SHOW_LOGIN] = { "received_show_login", "0" },
	[SET_MAX_MESSAGES_PER_HOUR_PER_LOGIN] = { "max_messages_per_hour_per_login", "500" },
	[SET_SRS_SECRET] = { "srs_secret", "" },
	[SET_DMARC_REJECT] = { "dmarc_reject", "1" },
	[SET_SPF_REJECT_FAIL] = { "spf_reject_fail", "0" },
	[SET_SLOW_SESSIONS_MAX] = { "slow_sessions_max", "20" },
	[SET_HARVEST_LIMIT] = { "harvest_limit", "50" },
	[SET_AUTH_FAILURE_DELAY_MS] = { "auth_failure_delay_ms", "500" },
	/* Dovecot's template; empty: postage's own UIDLs (README) */
	[SET_POP3_UIDL_FORMAT] = { "pop3_uidl_format", "" },
	/* bounces within LIST_BOUNCE_WINDOW_DAYS that disable a member; 0: never */
	[SET_LIST_BOUNCE_LIMIT] = { "list_bounce_limit", "5" },
	/* rspamd's normal worker: a unix socket path or host:port; empty:
	 * no spam filtering, nothing connected (smtp-handler/spam.c) */
	[SET_RSPAMD] = { "rspamd", "" },
	[SET_RSPAMD_REQUIRED] = { "rspamd_required", "0" },
	[SET_RSPAMD_OUTBOUND] = { "rspamd_outbound", "0" },
};

static char values[SET_COUNT][SETTING_VALUE_MAX];
static unsigned char present[SET_COUNT];
static char hostname_fallback[256];

void config_take(const char *key, const char *value)
{
	int found = 0;

	if (!key)
		return;
	for (int i = 0; i < SET_COUNT; i++) {
		if (strcmp(key, settings_known[i].key) == 0) {
			size_t len = value ? strlen(value) : 0;
			found = 1;
			if (len >= SETTING_VALUE_MAX) {
				log_event(LOG_WARNING, "event=setting result=ignored key=%s reason=too_long", key);
				break;
			}
			memcpy(values[i], value ? value : "", len + 1);
			present[i] = 1;
			break;
		}
	}
	if (!found) {
		char safe[128];
		log_event(LOG_NOTICE, "event=setting result=unknown key=\"%s\"",
			  log_printable(safe, sizeof(safe), key, strlen(key)));
	}
}

int config_load(struct db_q *q)
{
	enum db_rc rc;

	if (!q) {
		log_event(LOG_ERR, "event=settings result=error error=\"%s\"", db_errmsg());
		return -1;
	}
	while ((rc = db_step(q)) == DB_ROW)
		config_take(db_col_text(q, 0), db_col_text(q, 1));
	db_reset(q);
	if (rc != DB_DONE) {
		log_event(LOG_ERR, "event=settings result=error error=\"%s\"", db_errmsg());
		return -1;
	}
	return 0;
}

const char *setting(enum setting id)
{
	if (present[id] && values[id][0])
		return values[id];
	if (id == SET_HOSTNAME) {
		if (!hostname_fallback[0] &&
		    gethostname(hostname_fallback, sizeof(hostname_fallback) - 1) < 0)
			strcpy(hostname_fallback, "localhost");
		return hostname_fallback;
	}
	return settings_known[id].fallback;
}

int setting_is_set(enum setting id)
{
	return present[id] && values[id][0];
}

long long setting_int(enum setting id)
{
	const char *v = setting(id);
	char *end;
	long long n;

	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno || end == v || *end || n < 0) {
		log_event(LOG_WARNING, "event=setting result=bad_number key=%s", settings_known[id].key);
		n = strtoll(settings_known[id].fallback, NULL, 10);
	}
	return n;
}
