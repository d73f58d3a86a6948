/* The spam filter: at the end of DATA, rspamd's verdict on the message
 * (shared/rspamd.c), and what it means for the client and the copy that
 * is delivered. Only when the setting rspamd names a worker: otherwise
 * nothing is loaded, connected or read. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "dns.h"
#include "headers.h"
#include "limits.h"
#include "log.h"
#include "rspamd.h"
#include "session.h"
#include "spool.h"

/* Fields a delivered, scanned message carries only from us: a sender's
 * own could make a mail client file it wrongly. */
static const char *const our_fields[] = { "x-spam", "x-spamd-result", "x-spam-status", "x-spam-flag" };

static int is_our_field(const struct header_field *f)
{
	for (size_t i = 0; i < sizeof(our_fields) / sizeof(our_fields[0]); i++)
		if (header_is(f, our_fields[i]))
			return 1;
	return 0;
}

static long long elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (long long)(t1.tv_sec - t0->tv_sec) * 1000 + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

/* The delivered copy: fields of ours dropped (and Subject, when
 * rewritten), prefix on top. 0, or -1 after replying (storage). */
static int edit_copy(struct session *s, const char *qid, int *fd, char *staging, size_t cap,
		     const char *prefix, size_t plen, int drop_subject, off_t *size,
		     unsigned long long *lf_count)
{
	static const struct header_field *drop[MESSAGE_HEADER_FIELDS_MAX];
	struct header_block hb;
	size_t ndrop = 0;
	int have_hb, rc;

	/* From the top: our own Received and Authentication-Results are
	 * fields like the others, and never among those dropped. */
	have_hb = header_block_read(*fd, 0, *size, &hb) == 0;
	for (size_t i = 0; have_hb && i < hb.n; i++)
		if (is_our_field(&hb.fields[i]) || (drop_subject && header_is(&hb.fields[i], "subject")))
			drop[ndrop++] = &hb.fields[i];
	if (plen == 0 && ndrop == 0) {
		if (have_hb)
			header_block_free(&hb);
		return 0;
	}
	rc = staged_edit(s, qid, "spam", prefix, plen, drop, ndrop, fd, staging, cap, size, lf_count);
	if (have_hb)
		header_block_free(&hb);
	return rc;
}

/* The client's name as rspamd wants it (its Hostname field; Postfix
 * hands rspamd's milter the same): the reverse DNS name whose addresses
 * include the client's, else "unknown". Without it rspamd scores every
 * message as from a host without reverse DNS. */
static void client_hostname(const struct session *s, char *out, size_t cap)
{
	/* not re-entered: once per message, before rspamd is asked */
	static struct dns_names names;
	static struct dns_addrs addrs;
	long long deadline = dns_deadline(RSPAMD_HOSTNAME_TIME_MS);
	unsigned char addr[16];
	int family = strchr(s->peer.ip, ':') ? AF_INET6 : AF_INET;

	snprintf(out, cap, "unknown");
	if (!s->peer.ip[0] || inet_pton(family, s->peer.ip, addr) != 1 ||
	    dns_ptr(addr, family, &names, deadline) != DNS_OK)
		return;
	for (size_t i = 0; i < names.n && i < RSPAMD_PTR_NAMES_MAX; i++) {
		if (dns_addrs(names.name[i], family, &addrs, deadline) != DNS_OK)
			continue;
		for (size_t k = 0; k < addrs.n; k++)
			if (memcmp(addrs.addr[k], addr, family == AF_INET ? 4 : 16) == 0) {
				snprintf(out, cap, "%s", names.name[i]);
				return;
			}
	}
}

int spam_filter_message(struct session *s, const char *qid, int *fd, char *staging, size_t cap,
			off_t *size, unsigned long long *lf_count)
{
	/* not re-entered: once per message, from delivery */
	static const char *rcpts[SMTP_RECIPIENTS_MAX];
	static char prefix[SPAM_FIELDS_MAX];
	const char *where = setting(SET_RSPAMD);
	char from[ADDRESS_PATH_MAX + 1], hostname[256], why[256], shown[RSPAMD_MESSAGE_SHOWN + 1], score[64] = "-";
	struct rspamd_request req;
	struct rspamd_verdict v;
	enum rspamd_status st;
	struct timespec t0;
	size_t plen = 0;
	int outbound, n;

	if (!where[0])
		return 0;
	/* Our own users' mail (AUTH, relay_networks, POP-before-SMTP) only
	 * under rspamd_outbound; mail from outside only on the MX. */
	outbound = s->auth_login[0] || session_may_relay(s) == 1;
	if (outbound ? !setting_int(SET_RSPAMD_OUTBOUND) : s->mode != MODE_MX)
		return 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	address_format(&s->tx.sender, from, sizeof(from));
	for (size_t i = 0; i < s->tx.nrcpts && i < SMTP_RECIPIENTS_MAX; i++)
		rcpts[i] = s->tx.rcpts[i];
	client_hostname(s, hostname, sizeof(hostname));
	memset(&req, 0, sizeof(req));
	req.ip = s->peer.ip;
	req.hostname = hostname;
	req.helo = s->helo;
	req.from = from;
	req.rcpts = rcpts;
	req.nrcpts = s->tx.nrcpts;
	req.queue_id = qid;
	req.user = s->auth_login;
	req.mta_name = setting(SET_HOSTNAME);
	st = rspamd_check(where, &req, *fd, *size, dns_deadline(RSPAMD_TIMEOUT_MS), &v, why, sizeof(why));
	if (st != RSPAMD_OK) {
		int required = setting_int(SET_RSPAMD_REQUIRED) != 0;
		char safe[sizeof(why)];

		log_event(LOG_WARNING, "event=rspamd result=%s id=%s ip=%s outbound=%d error=\"%s\" ms=%lld "
			  "then=%s", rspamd_status_name(st), qid, s->peer.ip[0] ? s->peer.ip : "local",
			  outbound, log_printable(safe, sizeof(safe), why, strlen(why)), elapsed_ms(&t0),
			  required ? "deferred" : "accepted_unscanned");
		/* Never a 5xx because the filter is unwell. */
		if (required) {
			reply(s, "451 4.3.0 Error: spam filter unavailable, try again later");
			return -1;
		}
		return 0;
	}
	if (v.has_score)
		snprintf(score, sizeof(score), "%.2f", v.score);
	log_event(LOG_INFO, "event=rspamd result=ok id=%s ip=%s outbound=%d action=\"%s\" score=%s "
		  "required=%.2f ms=%lld", qid, s->peer.ip[0] ? s->peer.ip : "local", outbound,
		  v.action_name, score, v.has_required ? v.required_score : 0.0, elapsed_ms(&t0));
	rspamd_reply_text(v.smtp_message, shown, sizeof(shown));

	switch (v.action) {
	case RSPAMD_REJECT:
		log_event(LOG_NOTICE, "event=data result=refused reason=spam id=%s action=\"%s\" score=%s",
			  qid, v.action_name, score);
		reply(s, "550 5.7.1 %s", shown[0] ? shown : "Spam message rejected");
		return -1;
	case RSPAMD_SOFT_REJECT:
	case RSPAMD_GREYLIST:
		log_event(LOG_NOTICE, "event=data result=deferred reason=spam id=%s action=\"%s\" score=%s",
			  qid, v.action_name, score);
		reply(s, "451 4.7.1 %s", shown[0] ? shown : "Try again later");
		return -1;
	case RSPAMD_REWRITE_SUBJECT:
	case RSPAMD_ADD_HEADER:
		/* Our users' mail leaves as they wrote it: a mark is for a
		 * reader, and theirs is elsewhere. */
		if (outbound)
			return 0;
		n = snprintf(prefix, sizeof(prefix), "X-Spam: Yes\nX-Spamd-Result: default: True [%s / %.2f]\n",
			     score, v.has_required ? v.required_score : 0.0);
		if (n < 0 || (size_t)n >= sizeof(prefix))
			return 0;
		plen = (size_t)n;
		if (v.action == RSPAMD_REWRITE_SUBJECT && v.subject[0]) {
			long sl = rspamd_subject_field(v.subject, strlen(v.subject), prefix + plen,
						       sizeof(prefix) - plen);
			if (sl > 0)
				plen += (size_t)sl;
			else
				prefix[plen] = '\0';
		} else if (v.action == RSPAMD_REWRITE_SUBJECT) {
			log_event(LOG_NOTICE, "event=rspamd result=subject_kept id=%s reason=%s", qid,
				  v.subject_too_long ? "too_long" : "none_given");
		}
		return edit_copy(s, qid, fd, staging, cap, prefix, plen,
				 v.action == RSPAMD_REWRITE_SUBJECT && v.subject[0] && plen > (size_t)n,
				 size, lf_count);
	case RSPAMD_NO_ACTION:
		break;
	}
	return outbound ? 0 : edit_copy(s, qid, fd, staging, cap, "", 0, 0, size, lf_count);
}
