/* One run of the queue: take the lock, then passes over what is due. A
 * pass groups the due recipients by destination (the relayhost, or the
 * recipient's domain), hands each destination to a child process (at most
 * QUEUE_PARALLEL_MAX at once) that sends the messages over one reused
 * connection, and records what each child reports. Only this parent
 * process touches the database. Then come the bounces, the delay
 * warnings, and the removal of messages whose every recipient is final. */
#define _GNU_SOURCE /* pipe2 */
#include <dirent.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "journal.h"
#include "limits.h"
#include "list.h"
#include "listmail.h"
#include "log.h"
#include "maildir.h"
#include "queue.h"
#include "spool.h"

static long long pass_now;
/* Messages the last pass left for a handler still at work on them. */
static size_t pass_held;
/* Results the last pass could not write down: their recipients are
 * still due, so the run must end rather than send them again at once. */
static size_t pass_unrecorded;

long long queue_now(void)
{
	return pass_now;
}

/* ---- what a pass works on ------------------------------------------- */

struct relay {
	int set;
	int bad;                          /* relayhost is malformed */
	char host[ADDRESS_DOMAIN_MAX + 1];
	int port;
	int no_mx;                        /* [host]: used as given */
};

struct qmsg {
	char id[QUEUE_ID_LEN + 1];
	char sender[ADDRESS_PATH_MAX + 1];
	long long created_at;
	unsigned long long size;
	int body_8bit, smtputf8;
	int verp;                         /* a list's copies: one sender per recipient */
	int missing;                      /* its queue file is gone */
	int held;                         /* waits for its journal */
};

struct qrcpt {
	size_t msg;                       /* index into msgs */
	size_t order;                     /* as selected, for a stable sort */
	char recipient[ADDRESS_PATH_MAX + 1];
	char orig_rcpt[ADDRESS_PATH_MAX + 1]; /* VERP: the member the copy is for */
	char nexthop[ADDRESS_DOMAIN_MAX + 1]; /* domain, or "" for the relayhost */
	int attempts;
	int reported;
};

struct pass {
	struct qmsg *msgs;
	size_t nmsgs;
	struct qrcpt *rcpts;
	size_t nrcpts;
	struct relay relay;
	struct client_auth auth;
	struct client_tls_policy relay_tls; /* what the relayhost's TLS must be */
	long long lifetime;               /* seconds */
};

/* What a child tells the parent about one recipient: a fixed-size record
 * on the child's own pipe. */
struct report {
	size_t index;
	char id[QUEUE_ID_LEN + 1];
	struct status_text st;
	char relay[ADDRESS_DOMAIN_MAX + 80]; /* "host[ip]:port" or "none" */
	char tls[160];                       /* "" when none */
	int tls_verified;
};

/* relayhost: "[host]:port" as given, "host:port" via MX (as in Postfix). */
static void relay_parse(const char *s, struct relay *r)
{
	const char *given = s, *rest;
	size_t len;

	memset(r, 0, sizeof(*r));
	if (!s || !*s)
		return;
	r->set = 1;
	r->port = 25;
	if (*s == '[') {
		const char *end = strchr(s, ']');
		if (!end)
			goto bad;
		len = (size_t)(end - s - 1);
		if (len >= 5 && strncasecmp(s + 1, "IPv6:", 5) == 0) {
			s += 5;
			len -= 5;
		}
		if (len == 0 || len >= sizeof(r->host))
			goto bad;
		memcpy(r->host, s + 1, len);
		r->host[len] = '\0';
		r->no_mx = 1;
		rest = end + 1;
	} else {
		const char *colon = strchr(s, ':');
		len = colon ? (size_t)(colon - s) : strlen(s);
		if (len == 0 || len >= sizeof(r->host))
			goto bad;
		memcpy(r->host, s, len);
		r->host[len] = '\0';
		rest = s + len;
	}
	if (*rest == ':') {
		char *end;
		long port = strtol(rest + 1, &end, 10);
		if (end == rest + 1 || *end || port < 1 || port > 65535)
			goto bad;
		r->port = (int)port;
	} else if (*rest) {
		goto bad;
	}
	return;
bad:
	r->bad = 1;
	log_event(LOG_ERR, "event=config result=bad_relayhost relayhost=\"%s\" "
			   "action=\"use [host]:port or host:port\"", given);
}

/* relayhost_tls: "may", "encrypt" or "verify". Unset, it is "verify"
 * when a relayhost_login is set (the password goes only to a relayhost
 * that proves who it is), else "may". Anything else is taken as
 * "verify": a typo must not hand the password to whoever answers. */
static enum tls_level relay_tls_level(const char *value, const char *login)
{
	char safe[SETTING_VALUE_MAX * 4 + 8];

	if (!value[0])
		return login[0] ? TLS_LEVEL_VERIFY : TLS_LEVEL_MAY;
	if (strcasecmp(value, "may") == 0)
		return TLS_LEVEL_MAY;
	if (strcasecmp(value, "encrypt") == 0)
		return TLS_LEVEL_ENCRYPT;
	if (strcasecmp(value, "verify") != 0)
		log_event(LOG_ERR, "event=config result=bad_relayhost_tls relayhost_tls=\"%s\" "
				   "using=verify action=\"use may, encrypt or verify\"",
			  log_printable(safe, sizeof(safe), value, strlen(value)));
	return TLS_LEVEL_VERIFY;
}

/* ---- the child: one destination ------------------------------------- */

struct destination_state {
	char host[ADDRESS_DOMAIN_MAX + 1]; /* relayhost, or the domain */
	int port;
	int no_mx;
	int is_relay;
	int resolved;
	struct mx_host mx[QUEUE_MX_MAX];
	size_t nmx;
	int implicit;
	int dead;
	struct status_text dead_why;
	int connected;
	struct smtp_client conn;
};

static void log_connect_failure(const char *host, const char *ip, int port,
				const struct status_text *why)
{
	char safe[CLIENT_REPLY_TEXT_MAX + 64];

	log_event(LOG_NOTICE, "event=connect result=failed host=%s ip=%s port=%d reason=\"%s\"", host,
		  ip, port, log_printable(safe, sizeof(safe), why->text, strlen(why->text)));
}

/* Is name our own hostname (a trailing dot aside)? */
static int host_is_us(const char *name)
{
	const char *us = setting(SET_HOSTNAME);
	size_t n = strlen(name), m = strlen(us);

	if (n > 0 && name[n - 1] == '.')
		n--;
	if (m > 0 && us[m - 1] == '.')
		m--;
	return n > 0 && n == m && strncasecmp(name, us, n) == 0;
}

/* Is the address one of this host's own, loopback aside? Loopback is
 * left out because other servers listen there (content filters, the
 * tests' sinks); a domain whose MX is 127.0.0.1 is caught by the
 * greeting instead. 1 yes, 0 no. */
static int address_is_ours(const struct host_address *a)
{
	static struct ifaddrs *ifs;
	static int loaded;

	if (!loaded) {
		loaded = 1;
		if (getifaddrs(&ifs) < 0)
			ifs = NULL;
	}
	for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
		if (!i->ifa_addr || (i->ifa_flags & IFF_LOOPBACK) ||
		    i->ifa_addr->sa_family != a->sa.ss_family)
			continue;
		if (a->sa.ss_family == AF_INET &&
		    ((const struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr ==
			    ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr)
			return 1;
		if (a->sa.ss_family == AF_INET6 &&
		    memcmp(&((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr,
			   &((const struct sockaddr_in6 *)&a->sa)->sin6_addr, sizeof(struct in6_addr)) == 0)
			return 1;
	}
	return 0;
}

/* The destination leads back here: a domain's mail bounces (5.4.6, as
 * in Postfix), a relayhost that is us is our own setting: deferred. */
static int destination_loops(struct destination_state *d, struct status_text *why)
{
	if (d->is_relay)
		status_set_local(why, OUTCOME_TEMP, "4.4.6", "relayhost %s loops back to myself",
				 d->host);
	else
		status_set_local(why, OUTCOME_PERM, "5.4.6", "mail for %s loops back to myself", d->host);
	log_event(LOG_ERR, "event=connect result=loop host=%s action=\"%s\"", d->host,
		  d->is_relay ? "the relayhost setting names this host" :
				"the domain's MX names this host but the domain is not in domains");
	d->dead = 1;
	d->dead_why = *why;
	return -1;
}

/* A usable connection to the destination, made or reused. */
static int destination_ready(const struct pass *p, struct destination_state *d,
			     struct status_text *why)
{
	static struct host_address addrs[QUEUE_ADDRESSES_MAX];
	/* MX delivery: opportunistic STARTTLS, as in Postfix's default. */
	static const struct client_tls_policy opportunistic = { TLS_LEVEL_MAY, "", NULL };
	const struct client_tls_policy *policy = d->is_relay ? &p->relay_tls : &opportunistic;
	/* RFC 8314 3.3: port 465 is submission with implicit TLS. */
	enum client_tls tls = d->is_relay && d->port == 465 ? CLIENT_TLS_IMPLICIT : CLIENT_TLS_STARTTLS;
	size_t tried = 0;
	int have_reason = 0;

	if (d->connected && !d->conn.broken)
		return 0;
	if (d->connected) {
		client_close(&d->conn);
		d->connected = 0;
	}
	if (d->dead) {
		*why = d->dead_why;
		return -1;
	}
	if (!d->resolved) {
		d->resolved = 1;
		if (d->no_mx) {
			snprintf(d->mx[0].name, sizeof(d->mx[0].name), "%s", d->host);
			d->nmx = 1;
		} else if (dns_mx_lookup(d->host, d->mx, QUEUE_MX_MAX, &d->nmx, &d->implicit, why) !=
			   MX_OK) {
			if (d->is_relay)
				why->outcome = OUTCOME_TEMP; /* our setting, not the sender's fault */
			d->dead = 1;
			d->dead_why = *why;
			return -1;
		}
		/* RFC 5321 5.1: when we are one of the domain's MX hosts, only
		 * hosts more preferred than we are may take the mail; with none,
		 * it loops back to us. (By name here, by address below.) */
		for (size_t k = 0; k < d->nmx && !d->no_mx; k++) {
			if (host_is_us(d->mx[k].name)) {
				d->nmx = k;
				while (d->nmx > 0 && d->mx[d->nmx - 1].preference >= d->mx[k].preference)
					d->nmx--;
				if (d->nmx == 0)
					return destination_loops(d, why);
				break;
			}
		}
	}
	for (size_t k = 0; k < d->nmx && tried < QUEUE_ADDRESSES_MAX; k++) {
		struct status_text w;
		size_t na;
		enum mx_result r = dns_host_addresses(d->mx[k].name, addrs, QUEUE_ADDRESSES_MAX, &na, &w);
		int ours = 0;

		for (size_t a = 0; r == MX_OK && !d->no_mx && a < na; a++)
			ours |= address_is_ours(&addrs[a]);
		if (ours) {
			/* This MX host is us: it and every host no more preferred
			 * are dropped (hosts are in order of preference). */
			size_t keep = k;
			while (keep > 0 && d->mx[keep - 1].preference >= d->mx[k].preference)
				keep--;
			if (keep == 0)
				return destination_loops(d, why);
			d->nmx = keep;
			break;
		}

		if (r != MX_OK) {
			/* Only a domain with no MX and no address is the sender's
			 * mistake; a named host without one is a fault to wait out. */
			if (r == MX_NOTFOUND && (!d->implicit || d->is_relay)) {
				w.outcome = OUTCOME_TEMP;
				snprintf(w.status, sizeof(w.status), "4.4.3");
			}
			log_connect_failure(d->mx[k].name, "none", d->port, &w);
			*why = w;
			have_reason = 1;
			continue;
		}
		for (size_t a = 0; a < na && tried < QUEUE_ADDRESSES_MAX; a++) {
			int tls_failed = 0;
			const struct client_auth *auth = d->is_relay ? &p->auth : NULL;

			tried++;
			if (client_open(&d->conn, d->mx[k].name, &addrs[a], d->port, tls, policy, auth, &w,
					&tls_failed) == 0) {
				d->connected = 1;
				return 0;
			}
			if (d->conn.loops) {
				log_connect_failure(d->mx[k].name, addrs[a].ip, d->port, &w);
				return destination_loops(d, why);
			}
			if (tls_failed && policy->level == TLS_LEVEL_MAY) {
				/* Opportunistic TLS: a failed handshake falls back to
				 * plain text, as Postfix's "may" level does. */
				log_connect_failure(d->mx[k].name, addrs[a].ip, d->port, &w);
				if (client_open(&d->conn, d->mx[k].name, &addrs[a], d->port,
						CLIENT_TLS_NONE, policy, auth, &w, &tls_failed) == 0) {
					d->connected = 1;
					return 0;
				}
			}
			log_connect_failure(d->mx[k].name, addrs[a].ip, d->port, &w);
			*why = w;
			have_reason = 1;
		}
	}
	if (!have_reason)
		status_set_local(why, OUTCOME_TEMP, "4.4.1", "no usable mail host for %s", d->host);
	d->dead = 1;
	d->dead_why = *why;
	return -1;
}

static void send_report(int fd, const struct pass *p, size_t index, const struct status_text *st,
			const struct destination_state *d, int used_connection)
{
	static struct report r;
	const char *buf = (const char *)&r;
	size_t off = 0;

	memset(&r, 0, sizeof(r));
	r.index = index;
	snprintf(r.id, sizeof(r.id), "%s", p->msgs[p->rcpts[index].msg].id);
	r.st = *st;
	if (used_connection) {
		snprintf(r.relay, sizeof(r.relay), "%s[%s]:%d", d->conn.host, d->conn.ip, d->conn.port);
		if (d->conn.tls) {
			snprintf(r.tls, sizeof(r.tls), "%s", d->conn.tls_info);
			r.tls_verified = d->conn.tls_verified;
		}
	} else {
		snprintf(r.relay, sizeof(r.relay), "none");
	}
	while (off < sizeof(r)) {
		ssize_t n = write(fd, buf + off, sizeof(r) - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(1); /* the parent is gone: nobody would record more */
		off += (size_t)n;
	}
}

/* Bytes the message takes on the wire (each LF becomes CRLF), for SIZE=. */
static unsigned long long wire_size(int fd, unsigned long long size)
{
	static char buf[65536];
	unsigned long long lfs = 0;
	off_t off = 0;
	ssize_t n;

	while ((n = pread(fd, buf, sizeof(buf), off)) > 0) {
		for (ssize_t i = 0; i < n; i++)
			lfs += buf[i] == '\n';
		off += n;
	}
	return size + lfs;
}

/* The message being sent by this child: its file is opened once for all
 * the transactions that carry it on a connection (a list's copies are one
 * transaction per member). */
struct open_message {
	size_t msg;        /* index into msgs, or (size_t)-1 */
	int fd;
	unsigned long long wire_size;
	int error;         /* errno of a failed open */
};

static void open_message_close(struct open_message *om)
{
	if (om->fd >= 0)
		close(om->fd);
	om->fd = -1;
	om->msg = (size_t)-1;
}

static int open_message_for(const struct pass *p, size_t msg, struct open_message *om)
{
	char path[PATH_MAX_POSTAGE];

	if (om->msg == msg)
		return om->fd >= 0 ? 0 : -1;
	open_message_close(om);
	om->msg = msg;
	queue_path(p->msgs[msg].id, path, sizeof(path));
	om->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (om->fd < 0) {
		om->error = errno;
		log_event(LOG_ERR, "event=delivery result=error id=%s error=\"queue file: %s\"",
			  p->msgs[msg].id, strerror(errno));
		return -1;
	}
	om->wire_size = wire_size(om->fd, p->msgs[msg].size);
	return 0;
}

static void deliver_transaction(const struct pass *p, struct destination_state *d, size_t start,
				size_t end, struct open_message *om, int out)
{
	static struct status_text results[CLIENT_RCPTS_PER_TRANSACTION];
	static const char *names[CLIENT_RCPTS_PER_TRANSACTION];
	const struct qmsg *m = &p->msgs[p->rcpts[start].msg];
	char verp[ADDRESS_PATH_MAX + 1];
	struct status_text why;
	struct outbound ob;
	size_t n = end - start;

	if (open_message_for(p, p->rcpts[start].msg, om) < 0) {
		status_set_local(&why, OUTCOME_TEMP, "4.3.0", "the queue file of %s cannot be read (%s)",
				 m->id, strerror(om->error));
		for (size_t i = start; i < end; i++)
			send_report(out, p, i, &why, d, 0);
		return;
	}
	if (destination_ready(p, d, &why) < 0) {
		for (size_t i = start; i < end; i++)
			send_report(out, p, i, &why, d, 0);
		return;
	}
	memset(&ob, 0, sizeof(ob));
	ob.id = m->id;
	ob.sender = m->sender;
	/* A list's copy: the member's own bounce address (VERP), so a bounce
	 * names the member whoever sends it. */
	if (m->verp && n == 1 &&
	    list_verp_address(m->sender, p->rcpts[start].orig_rcpt[0] ? p->rcpts[start].orig_rcpt :
									p->rcpts[start].recipient,
			      verp, sizeof(verp)) == 0)
		ob.sender = verp;
	ob.fd = om->fd;
	ob.size = m->size;
	ob.wire_size = om->wire_size;
	ob.body_8bit = m->body_8bit;
	ob.smtputf8 = m->smtputf8;
	for (size_t i = 0; i < n; i++)
		names[i] = p->rcpts[start + i].recipient;
	client_transaction(&d->conn, &ob, names, n, results);
	for (size_t i = 0; i < n; i++)
		send_report(out, p, start + i, &results[i], d, 1);
}

static void deliver_destination(const struct pass *p, size_t start, size_t end, int out)
{
	/* not re-entered: a delivery child runs it once, then exits */
	static struct destination_state d;
	const char *domain = p->rcpts[start].nexthop;
	struct open_message om = { (size_t)-1, -1, 0, 0 };

	memset(&d, 0, sizeof(d));
	if (p->relay.set) {
		snprintf(d.host, sizeof(d.host), "%s", p->relay.host);
		d.port = p->relay.port;
		d.no_mx = p->relay.no_mx;
		d.is_relay = 1;
		if (p->relay.bad) {
			d.dead = 1;
			status_set_local(&d.dead_why, OUTCOME_TEMP, "4.3.5",
					 "the relayhost setting is malformed (use [host]:port or host:port)");
		}
	} else if (domain[0] == '[') {
		/* An address literal: that host, no MX (RFC 5321 5.1). */
		size_t len = strlen(domain);
		const char *inner = domain + 1;

		if (len > 6 && strncasecmp(inner, "ipv6:", 5) == 0)
			inner += 5;
		snprintf(d.host, sizeof(d.host), "%.*s", (int)(domain + len - 1 - inner), inner);
		d.port = 25;
		d.no_mx = 1;
	} else {
		snprintf(d.host, sizeof(d.host), "%s", domain);
		d.port = 25;
	}
	for (size_t i = start; i < end;) {
		size_t j = i;
		/* A VERP message's recipients each have their own envelope
		 * sender: one transaction each, on the same connection. */
		size_t max = p->msgs[p->rcpts[i].msg].verp ? 1 : CLIENT_RCPTS_PER_TRANSACTION;
		while (j < end && p->rcpts[j].msg == p->rcpts[i].msg && j - i < max)
			j++;
		deliver_transaction(p, &d, i, j, &om, out);
		i = j;
	}
	open_message_close(&om);
	if (d.connected)
		client_close(&d.conn);
}

/* ---- the parent: selecting, recording ------------------------------- */

static long long retry_delay(int attempts)
{
	/* 5 min, 15 min, 30 min, 1 h, then every 2 h. */
	static const long long schedule[] = { 5 * 60, 15 * 60, 30 * 60, 60 * 60 };

	if (attempts >= 1 && attempts <= 4)
		return schedule[attempts - 1];
	return 2 * 60 * 60;
}

static void record(struct pass *p, size_t index, const struct report *r)
{
	struct qrcpt *rc = &p->rcpts[index];
	const struct qmsg *m = &p->msgs[rc->msg];
	const struct status_text *st = &r->st;
	long long expiry = m->created_at + p->lifetime, next = 0;
	const char *state, *status;
	char rcpt_safe[ADDRESS_PATH_MAX * 4 + 8], reply_safe[CLIENT_REPLY_TEXT_MAX + 64];
	char tls[200];
	int expired = 0;
	sqlite3_stmt *s;

	rc->reported = 1;
	switch (st->outcome) {
	case OUTCOME_SENT:
		state = status = "sent";
		break;
	case OUTCOME_PERM:
		state = status = "bounced";
		break;
	default:
		if (pass_now >= expiry) {
			state = status = "bounced";
			expired = 1;
		} else {
			state = "queued";
			status = "deferred";
			next = pass_now + retry_delay(rc->attempts + 1);
			if (next > expiry)
				next = expiry; /* one last try when the lifetime ends */
		}
		break;
	}
	s = db_stmt("UPDATE queue_recipients SET state = ?3, attempts = attempts + 1, "
		    "next_attempt = ?4, last_error = ?5, last_status = ?6, last_mta = ?7, "
		    "last_command = ?8, dsn_sent = 0 "
		    "WHERE message_id = ?1 AND recipient = ?2 AND state = 'queued'");
	if (s) {
		sqlite3_bind_text(s, 1, m->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, rc->recipient, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 3, state, -1, SQLITE_STATIC);
		sqlite3_bind_int64(s, 4, next);
		sqlite3_bind_text(s, 5, st->text, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 6, st->status, -1, SQLITE_STATIC);
		if (st->mta[0])
			sqlite3_bind_text(s, 7, st->mta, -1, SQLITE_STATIC);
		if (st->command[0])
			sqlite3_bind_text(s, 8, st->command, -1, SQLITE_STATIC);
		time_t give_up = time(NULL) + QUEUE_RECORD_PATIENCE_SECONDS;
		int step;

		/* Busy beyond the busy timeout (an administrator's open
		 * transaction): keep trying rather than forget the result. */
		while ((step = sqlite3_step(s)) == SQLITE_BUSY || step == SQLITE_LOCKED) {
			sqlite3_reset(s);
			if (time(NULL) >= give_up)
				break;
			log_event(LOG_WARNING, "event=delivery result=db_busy id=%s action=retry", m->id);
		}
		if (step != SQLITE_DONE) {
			log_event(LOG_ERR, "event=delivery result=db_error id=%s error=\"%s\"", m->id,
				  sqlite3_errmsg(db_handle()));
			pass_unrecorded++;
		}
		sqlite3_reset(s);
	} else {
		pass_unrecorded++;
	}
	if (r->tls[0])
		snprintf(tls, sizeof(tls), "%s", r->tls);
	else
		snprintf(tls, sizeof(tls), "none");
	log_event(st->outcome == OUTCOME_SENT ? LOG_INFO : LOG_NOTICE,
		  "event=delivery id=%s rcpt=\"%s\" relay=%s delay=%lld attempts=%d tls=\"%s\" "
		  "tls_verified=%s status=%s dsn=%s%s reply=\"%s\"",
		  m->id, log_printable(rcpt_safe, sizeof(rcpt_safe), rc->recipient, strlen(rc->recipient)),
		  r->relay, pass_now - m->created_at, rc->attempts + 1, tls,
		  r->tls[0] ? (r->tls_verified ? "yes" : "no") : "-", status, st->status,
		  expired ? " reason=expired" : "",
		  log_printable(reply_safe, sizeof(reply_safe), st->text, strlen(st->text)));
}

static void copy_column(sqlite3_stmt *s, int col, char *out, size_t cap);

static int load_due(struct pass *p)
{
	sqlite3_stmt *s = db_stmt(
		"SELECT r.message_id, r.recipient, r.attempts, m.sender, m.size, m.body_8bit, "
		"m.smtputf8, m.created_at, m.verp, r.orig_rcpt FROM queue_recipients r "
		"JOIN queue_messages m ON m.id = r.message_id "
		"WHERE r.state = 'queued' AND r.next_attempt <= ?1 "
		"ORDER BY m.created_at, r.message_id, r.rowid LIMIT ?2");
	size_t cap_r = 0, cap_m = 0;
	int rc;

	if (!s)
		return -1;
	sqlite3_bind_int64(s, 1, pass_now);
	sqlite3_bind_int(s, 2, QUEUE_PASS_RECIPIENTS_MAX);
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(s, 0);
		const char *rcpt = (const char *)sqlite3_column_text(s, 1);
		const char *sender = (const char *)sqlite3_column_text(s, 3);
		struct qrcpt *r;
		const char *at;

		if (!id || !rcpt || strlen(id) > QUEUE_ID_LEN || strlen(rcpt) > ADDRESS_PATH_MAX)
			continue;
		if (p->nmsgs == 0 || strcmp(p->msgs[p->nmsgs - 1].id, id) != 0) {
			struct qmsg *m;
			if (p->nmsgs == cap_m) {
				size_t ncap = cap_m ? 2 * cap_m : 64;
				void *n = realloc(p->msgs, ncap * sizeof(*p->msgs));
				if (!n)
					break;
				p->msgs = n;
				cap_m = ncap;
			}
			m = &p->msgs[p->nmsgs++];
			memset(m, 0, sizeof(*m));
			snprintf(m->id, sizeof(m->id), "%s", id);
			snprintf(m->sender, sizeof(m->sender), "%s", sender ? sender : "");
			m->size = (unsigned long long)sqlite3_column_int64(s, 4);
			m->body_8bit = sqlite3_column_int(s, 5);
			m->smtputf8 = sqlite3_column_int(s, 6);
			m->created_at = sqlite3_column_int64(s, 7);
			m->verp = sqlite3_column_int(s, 8);
		}
		if (p->nrcpts == cap_r) {
			size_t ncap = cap_r ? 2 * cap_r : 64;
			void *n = realloc(p->rcpts, ncap * sizeof(*p->rcpts));
			if (!n)
				break;
			p->rcpts = n;
			cap_r = ncap;
		}
		r = &p->rcpts[p->nrcpts];
		memset(r, 0, sizeof(*r));
		r->msg = p->nmsgs - 1;
		r->order = p->nrcpts;
		snprintf(r->recipient, sizeof(r->recipient), "%s", rcpt);
		copy_column(s, 9, r->orig_rcpt, sizeof(r->orig_rcpt));
		r->attempts = sqlite3_column_int(s, 2);
		at = strrchr(rcpt, '@');
		if (!p->relay.set && at) {
			snprintf(r->nexthop, sizeof(r->nexthop), "%s", at + 1);
			for (char *c = r->nexthop; *c; c++)
				if (*c >= 'A' && *c <= 'Z')
					*c = (char)(*c - 'A' + 'a');
		}
		p->nrcpts++;
	}
	sqlite3_reset(s);
	if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
		log_event(LOG_ERR, "event=pass result=db_error error=\"%s\"", sqlite3_errmsg(db_handle()));
		return -1;
	}
	return 0;
}

/* Rows whose queue file is gone: queue_enqueue links the file before it
 * inserts the rows, so such rows were never accepted (a failed commit that
 * SQLite's WAL recovery brought back after the handler removed the file),
 * or an administrator removed the file. Nothing can be sent or bounced:
 * the rows go, loudly. */
static void drop_missing(struct pass *p)
{
	size_t kept = 0;

	for (size_t i = 0; i < p->nmsgs; i++) {
		char path[PATH_MAX_POSTAGE];
		struct stat st;

		if (p->msgs[i].held)
			continue;
		queue_path(p->msgs[i].id, path, sizeof(path));
		p->msgs[i].missing = stat(path, &st) < 0 && errno == ENOENT;
		if (p->msgs[i].missing && queue_remove(p->msgs[i].id) == 0)
			log_event(LOG_ERR, "event=queue_drop id=%s reason=\"queue file %s is missing: "
					   "nothing to send or bounce\"", p->msgs[i].id, path);
	}
	for (size_t i = 0; i < p->nrcpts; i++)
		if (!p->msgs[p->rcpts[i].msg].missing)
			p->rcpts[kept++] = p->rcpts[i];
	p->nrcpts = kept;
}

/* Queue ids that wait for their delivery journal (journal.h). */
struct held {
	char (*ids)[QUEUE_ID_LEN + 1];
	size_t n, cap;
	int all;
};

static void hold_id(const char *id, void *ctx)
{
	struct held *h = ctx;

	if (!id || h->all) {
		h->all = 1;
		return;
	}
	if (h->n == h->cap) {
		size_t ncap = h->cap ? 2 * h->cap : 16;
		void *n = realloc(h->ids, ncap * sizeof(*h->ids));
		if (!n) {
			h->all = 1;
			return;
		}
		h->ids = n;
		h->cap = ncap;
	}
	snprintf(h->ids[h->n++], sizeof(h->ids[0]), "%s", id);
}

/* A handler that died between the steps of a delivery left a journal:
 * finish it (or take the message back) before anything is sent. Loaded
 * rows of a journal a handler still holds, or whose message was taken
 * back, are left out of this pass. The rows were committed after their
 * journal was written, so any loaded row's journal is seen here. */
static void drop_held(struct pass *p)
{
	struct held h = { 0 };
	size_t kept = 0;

	journal_recover(hold_id, &h);
	for (size_t i = 0; i < p->nmsgs; i++) {
		p->msgs[i].held = h.all;
		for (size_t k = 0; !p->msgs[i].held && k < h.n; k++)
			p->msgs[i].held = strcmp(h.ids[k], p->msgs[i].id) == 0;
	}
	pass_held = 0;
	for (size_t i = 0; i < p->nmsgs; i++)
		pass_held += p->msgs[i].held != 0;
	for (size_t i = 0; i < p->nrcpts; i++)
		if (!p->msgs[p->rcpts[i].msg].held)
			p->rcpts[kept++] = p->rcpts[i];
	p->nrcpts = kept;
	free(h.ids);
}

static int rcpt_compare(const void *a, const void *b)
{
	const struct qrcpt *x = a, *y = b;
	int c = strcmp(x->nexthop, y->nexthop);

	if (c)
		return c;
	if (x->msg != y->msg)
		return x->msg < y->msg ? -1 : 1;
	return x->order < y->order ? -1 : x->order > y->order;
}

struct child {
	pid_t pid;
	int fd;
	size_t start, end;
	size_t have;
	struct report buf;
};

static int start_child(const struct pass *p, struct child *k)
{
	pid_t parent = getpid();
	int fds[2];

	if (pipe2(fds, O_CLOEXEC) < 0)
		return -1;
	k->pid = fork();
	if (k->pid < 0) {
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (k->pid == 0) {
		close(fds[0]);
		/* Without the parent nothing would be recorded: stop too. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(1);
		deliver_destination(p, k->start, k->end, fds[1]);
		_exit(0);
	}
	close(fds[1]);
	k->fd = fds[0];
	k->have = 0;
	/* read until empty at each wakeup: the reports that came meanwhile
	 * are recorded together (record_batch) */
	fcntl(k->fd, F_SETFL, fcntl(k->fd, F_GETFL) | O_NONBLOCK);
	return 0;
}

static void record_batch(struct pass *p, const struct report *reps, size_t n)
{
	int tx;

	if (n == 0)
		return;
	tx = n > 1 && db_begin() == 0;
	for (size_t i = 0; i < n; i++)
		record(p, reps[i].index, &reps[i]);
	if (tx && db_commit() < 0) {
		/* rolled back (an administrator's lock outlasted the busy
		 * timeout): each on its own, with record()'s patience */
		log_event(LOG_WARNING, "event=pass result=batch_retry rcpts=%zu", n);
		for (size_t i = 0; i < n; i++)
			record(p, reps[i].index, &reps[i]);
	}
}

static void finish_child(struct pass *p, struct child *k)
{
	int status = 0;
	struct report r;

	close(k->fd);
	while (waitpid(k->pid, &status, 0) < 0 && errno == EINTR)
		;
	for (size_t i = k->start; i < k->end; i++) {
		if (p->rcpts[i].reported)
			continue;
		memset(&r, 0, sizeof(r));
		r.index = i;
		snprintf(r.relay, sizeof(r.relay), "none");
		status_set_local(&r.st, OUTCOME_TEMP, "4.3.0",
				 "the delivery process ended before reporting (%s %d)",
				 WIFSIGNALED(status) ? "signal" : "exit status",
				 WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
		record(p, i, &r);
	}
}

/* Runs every destination of the pass, QUEUE_PARALLEL_MAX at once. */
static void deliver_all(struct pass *p)
{
	static struct report batch[RECORD_BATCH_MAX];
	struct child kids[QUEUE_PARALLEL_MAX];
	unsigned char ended[QUEUE_PARALLEL_MAX];
	size_t nkids = 0, next = 0, nbatch;

	while (next < p->nrcpts || nkids > 0) {
		struct pollfd pf[QUEUE_PARALLEL_MAX];
		int r;

		while (nkids < QUEUE_PARALLEL_MAX && next < p->nrcpts) {
			struct child *k = &kids[nkids];
			size_t end = next + 1;

			while (end < p->nrcpts && strcmp(p->rcpts[end].nexthop, p->rcpts[next].nexthop) == 0)
				end++;
			k->start = next;
			k->end = end;
			next = end;
			if (start_child(p, k) < 0) {
				/* Left as they are: still due on the next run. */
				log_event(LOG_ERR, "event=pass result=error error=\"cannot start a delivery "
						   "process: %s\"", strerror(errno));
				for (size_t i = k->start; i < k->end; i++)
					p->rcpts[i].reported = 1;
				continue;
			}
			nkids++;
		}
		if (nkids == 0)
			break;
		for (size_t i = 0; i < nkids; i++) {
			pf[i].fd = kids[i].fd;
			pf[i].events = POLLIN;
			pf[i].revents = 0;
		}
		r = poll(pf, nkids, -1);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			log_event(LOG_ERR, "event=pass result=error error=\"poll: %s\"", strerror(errno));
			break;
		}
		nbatch = 0;
		memset(ended, 0, sizeof(ended));
		for (size_t i = nkids; i-- > 0;) {
			struct child *k = &kids[i];

			if (!pf[i].revents)
				continue;
			for (;;) {
				ssize_t got = read(k->fd, (char *)&k->buf + k->have, sizeof(k->buf) - k->have);

				if (got < 0 && errno == EINTR)
					continue;
				if (got < 0 && errno == EAGAIN)
					break;
				if (got <= 0) {
					ended[i] = 1;
					break;
				}
				k->have += (size_t)got;
				if (k->have < sizeof(k->buf))
					continue;
				k->have = 0;
				if (k->buf.index >= k->start && k->buf.index < k->end &&
				    strcmp(p->msgs[p->rcpts[k->buf.index].msg].id, k->buf.id) == 0) {
					batch[nbatch++] = k->buf;
					if (nbatch == RECORD_BATCH_MAX) {
						record_batch(p, batch, nbatch);
						nbatch = 0;
					}
				} else {
					log_event(LOG_ERR, "event=pass result=error error=\"bad report\"");
				}
			}
		}
		/* recorded before a finished child's unreported recipients are */
		record_batch(p, batch, nbatch);
		for (size_t i = nkids; i-- > 0;) {
			if (!ended[i])
				continue;
			finish_child(p, &kids[i]);
			kids[i] = kids[--nkids];
			ended[i] = ended[nkids];
		}
	}
}

/* ---- after delivery: notices and removal ---------------------------- */

struct dsn_row {
	char recipient[ADDRESS_PATH_MAX + 1];
	char orig_rcpt[ADDRESS_PATH_MAX + 1];
	char status[16];
	char text[CLIENT_REPLY_TEXT_MAX + 1];
	char command[16];
	char mta[ADDRESS_DOMAIN_MAX + 72];
};

static void copy_column(sqlite3_stmt *s, int col, char *out, size_t cap)
{
	const char *v = (const char *)sqlite3_column_text(s, col);
	snprintf(out, cap, "%s", v ? v : "");
}

/* Up to max message ids from a query (?1, if it has one, bound to arg). */
static size_t select_ids(const char *sql, long long arg, char (*ids)[QUEUE_ID_LEN + 1], size_t max)
{
	sqlite3_stmt *s = db_stmt(sql);
	size_t n = 0;

	if (!s)
		return 0;
	if (sqlite3_bind_parameter_count(s) > 0)
		sqlite3_bind_int64(s, 1, arg);
	while (n < max && sqlite3_step(s) == SQLITE_ROW)
		copy_column(s, 0, ids[n++], QUEUE_ID_LEN + 1);
	sqlite3_reset(s);
	return n;
}

static int load_message(const char *id, struct qmsg *m)
{
	sqlite3_stmt *s = db_stmt("SELECT sender, created_at, verp FROM queue_messages WHERE id = ?1");
	int rc;

	if (!s)
		return -1;
	memset(m, 0, sizeof(*m));
	snprintf(m->id, sizeof(m->id), "%s", id);
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		copy_column(s, 0, m->sender, sizeof(m->sender));
		m->created_at = sqlite3_column_int64(s, 1);
		m->verp = sqlite3_column_int(s, 2);
	}
	sqlite3_reset(s);
	return rc == SQLITE_ROW ? 0 : -1;
}

/* The recipients of a message a notice is about: bounced and not yet
 * told (failed), or deferred at least once (delayed). */
static size_t load_notice_rows(const char *id, enum dsn_kind kind, struct dsn_row *rows,
			       struct dsn_rcpt *out, size_t max, long long lifetime)
{
	sqlite3_stmt *s = kind == DSN_FAILED ?
		db_stmt("SELECT recipient, orig_rcpt, last_status, last_error, last_command, last_mta "
			"FROM queue_recipients WHERE message_id = ?1 AND state = 'bounced' "
			"AND dsn_sent = 0 ORDER BY rowid LIMIT ?2") :
		db_stmt("SELECT recipient, orig_rcpt, last_status, last_error, last_command, last_mta "
			"FROM queue_recipients WHERE message_id = ?1 AND state = 'queued' "
			"AND attempts > 0 ORDER BY rowid LIMIT ?2");
	size_t n = 0;

	(void)lifetime;
	if (!s)
		return 0;
	sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)max);
	while (n < max && sqlite3_step(s) == SQLITE_ROW) {
		struct dsn_row *r = &rows[n];
		copy_column(s, 0, r->recipient, sizeof(r->recipient));
		copy_column(s, 1, r->orig_rcpt, sizeof(r->orig_rcpt));
		copy_column(s, 2, r->status, sizeof(r->status));
		copy_column(s, 3, r->text, sizeof(r->text));
		copy_column(s, 4, r->command, sizeof(r->command));
		copy_column(s, 5, r->mta, sizeof(r->mta));
		out[n].recipient = r->recipient;
		out[n].orig_rcpt = r->orig_rcpt;
		out[n].status = r->status;
		out[n].text = r->text[0] ? r->text : "no reason recorded";
		out[n].command = r->command;
		out[n].mta = r->mta;
		/* A temporary status on a bounced recipient: its time ran out. */
		out[n].expired = kind == DSN_FAILED && r->status[0] == '4';
		n++;
	}
	sqlite3_reset(s);
	return n;
}

static void mark_told(const char *id, const struct dsn_row *rows, size_t n)
{
	if (db_begin() < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		sqlite3_stmt *s = db_stmt("UPDATE queue_recipients SET dsn_sent = 1 "
					  "WHERE message_id = ?1 AND recipient = ?2");
		if (!s)
			break;
		sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(s, 2, rows[i].recipient, -1, SQLITE_STATIC);
		sqlite3_step(s);
		sqlite3_reset(s);
	}
	db_commit();
}

/* A list's copies that failed: no report goes to the list's bounces
 * address, each failure counts against its member (list_bounce), as a
 * report to the member's VERP address would. 0 done, -1 try again. */
static int count_list_bounces(const struct qmsg *m, const struct dsn_row *rows, size_t n)
{
	char list[ADDRESS_PATH_MAX + 1], safe[ADDRESS_PATH_MAX * 4 + 8];
	long long limit = setting_int(SET_LIST_BOUNCE_LIMIT);

	if (list_of_bounces(m->sender, list, sizeof(list)) < 0) {
		log_event(LOG_WARNING, "event=bounce result=dropped id=%s reason=\"VERP sender %s is no "
			  "list's\"", m->id, log_printable(safe, sizeof(safe), m->sender, strlen(m->sender)));
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		const char *member = rows[i].orig_rcpt[0] ? rows[i].orig_rcpt : rows[i].recipient;
		int disabled = 0;

		if (list_bounce(list, member, pass_now, limit, &disabled) < 0)
			return -1;
		if (disabled) {
			static struct list_info l;
			if (list_load(list, &l) == 1)
				list_notify_disabled(&l, member, limit);
		}
	}
	log_event(LOG_NOTICE, "event=bounce result=list_counted id=%s list=%s rcpts=%zu", m->id, list, n);
	return 0;
}

/* One bounce per message for the recipients that failed in this pass (or
 * in an earlier one that ended before telling the sender). */
static void send_bounces(const struct pass *p)
{
	/* not re-entered: once per pass; dsn_send does not come back here */
	static char ids[PASS_MESSAGES_STEP][QUEUE_ID_LEN + 1];
	static struct dsn_row rows[DSN_RCPTS_MAX];
	static struct dsn_rcpt rcpts[DSN_RCPTS_MAX];
	size_t nids = select_ids("SELECT DISTINCT message_id FROM queue_recipients "
				 "WHERE state = 'bounced' AND dsn_sent = 0",
				 0, ids, PASS_MESSAGES_STEP);

	for (size_t i = 0; i < nids; i++) {
		struct qmsg m;
		struct dsn_message dm;
		size_t n;

		if (load_message(ids[i], &m) < 0)
			continue;
		n = load_notice_rows(m.id, DSN_FAILED, rows, rcpts, DSN_RCPTS_MAX, p->lifetime);
		if (n == 0)
			continue;
		if (m.verp) {
			if (count_list_bounces(&m, rows, n) == 0)
				mark_told(m.id, rows, n);
			continue;
		}
		if (!m.sender[0]) {
			/* RFC 3464 / RFC 5321 6.1: never bounce a bounce. */
			log_event(LOG_NOTICE, "event=bounce result=dropped id=%s rcpts=%zu reason=null_sender",
				  m.id, n);
			mark_told(m.id, rows, n);
			continue;
		}
		dm.id = m.id;
		dm.sender = m.sender;
		dm.created_at = m.created_at;
		dm.give_up_at = m.created_at + p->lifetime;
		dm.lifetime_hours = p->lifetime / 3600;
		if (dsn_send(DSN_FAILED, &dm, rcpts, n) == 0)
			mark_told(m.id, rows, n);
	}
}

/* Once per message, after QUEUE_DELAY_WARNING_SECONDS of failing. */
static void send_delay_warnings(const struct pass *p)
{
	static char ids[PASS_MESSAGES_STEP][QUEUE_ID_LEN + 1];
	static struct dsn_row rows[DSN_RCPTS_MAX];
	static struct dsn_rcpt rcpts[DSN_RCPTS_MAX];
	size_t nids;

	if (p->lifetime <= QUEUE_DELAY_WARNING_SECONDS)
		return; /* it bounces before a warning would be due */
	nids = select_ids("SELECT m.id FROM queue_messages m WHERE m.warned = 0 AND m.created_at <= ?1 "
			  "AND EXISTS (SELECT 1 FROM queue_recipients r WHERE r.message_id = m.id "
			  "AND r.state = 'queued' AND r.attempts > 0)",
			  pass_now - QUEUE_DELAY_WARNING_SECONDS, ids, PASS_MESSAGES_STEP);
	for (size_t i = 0; i < nids; i++) {
		struct qmsg m;
		struct dsn_message dm;
		size_t n;
		sqlite3_stmt *s;

		if (load_message(ids[i], &m) < 0)
			continue;
		n = load_notice_rows(m.id, DSN_DELAYED, rows, rcpts, DSN_RCPTS_MAX, p->lifetime);
		if (n == 0)
			continue;
		dm.id = m.id;
		dm.sender = m.sender;
		dm.created_at = m.created_at;
		dm.give_up_at = m.created_at + p->lifetime;
		dm.lifetime_hours = p->lifetime / 3600;
		/* A list's copies get no warning: only a failure counts. */
		if (m.sender[0] && !m.verp && dsn_send(DSN_DELAYED, &dm, rcpts, n) < 0)
			continue;
		s = db_stmt("UPDATE queue_messages SET warned = 1 WHERE id = ?1");
		if (s) {
			sqlite3_bind_text(s, 1, m.id, -1, SQLITE_STATIC);
			sqlite3_step(s);
			sqlite3_reset(s);
		}
	}
}

/* Messages whose every recipient is final (and told): the file first,
 * then the rows, so a crash in between leaves rows to retry the removal,
 * never a file nobody knows about. */
static void remove_finished(void)
{
	static char ids[PASS_MESSAGES_STEP][QUEUE_ID_LEN + 1];
	char dir[PATH_MAX_POSTAGE];
	size_t n = select_ids("SELECT m.id FROM queue_messages m WHERE NOT EXISTS ("
			      "SELECT 1 FROM queue_recipients r WHERE r.message_id = m.id AND "
			      "(r.state = 'queued' OR (r.state = 'bounced' AND r.dsn_sent = 0)))",
			      0, ids, PASS_MESSAGES_STEP);

	if (n == 0)
		return;
	for (size_t i = 0; i < n; i++) {
		char path[PATH_MAX_POSTAGE];
		queue_path(ids[i], path, sizeof(path));
		if (unlink(path) < 0 && errno != ENOENT) {
			/* Keep the rows: the removal is tried again next time. */
			log_event(LOG_ERR, "event=queue_remove result=error id=%s error=\"%s\"", ids[i],
				  strerror(errno));
			ids[i][0] = '\0';
		}
	}
	snprintf(dir, sizeof(dir), "%s/queue", setting(SET_SPOOL_DIR));
	fsync_dir(dir);
	if (db_begin() < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		sqlite3_stmt *s;

		if (!ids[i][0])
			continue;
		s = db_stmt("DELETE FROM queue_recipients WHERE message_id = ?1");
		if (s) {
			sqlite3_bind_text(s, 1, ids[i], -1, SQLITE_STATIC);
			sqlite3_step(s);
			sqlite3_reset(s);
		}
		s = db_stmt("DELETE FROM queue_messages WHERE id = ?1");
		if (s) {
			sqlite3_bind_text(s, 1, ids[i], -1, SQLITE_STATIC);
			sqlite3_step(s);
			sqlite3_reset(s);
		}
	}
	if (db_commit() == 0)
		for (size_t i = 0; i < n; i++)
			if (ids[i][0])
				log_event(LOG_INFO, "event=queue_remove result=ok id=%s", ids[i]);
}

/* A staging file in use is flocked by its process (spool_staging_open):
 * one that is not, and is older than the moment between its creation and
 * its lock, belongs to a session that died. 1 remove it, 0 keep it. */
static int staging_abandoned(int dir, const char *name, const struct stat *st, time_t now)
{
	int fd, locked;

	if (st->st_mtime > now - SPOOL_STAGING_SWEEP_SECONDS)
		return 0;
	if (st->st_mtime <= now - QUEUE_ORPHAN_SECONDS)
		return 1;
	fd = openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return 0;
	locked = flock(fd, LOCK_EX | LOCK_NB) < 0;
	close(fd);
	return !locked;
}

/* Files a crash left behind: a queue file whose rows never committed, a
 * staging file whose session died (unlocked). A young queue file may be
 * in the middle of being queued right now: only old ones go. */
static void sweep_orphans(void)
{
	static const char *const subdirs[] = { "queue", "tmp" };
	time_t real_now = time(NULL);

	for (size_t i = 0; i < 2; i++) {
		char dir[PATH_MAX_POSTAGE];
		struct dirent *e;
		DIR *d;

		snprintf(dir, sizeof(dir), "%s/%s", setting(SET_SPOOL_DIR), subdirs[i]);
		d = opendir(dir);
		if (!d)
			continue;
		while ((e = readdir(d)) != NULL) {
			struct stat st;

			if (e->d_name[0] == '.' || fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISREG(st.st_mode))
				continue;
			if (i == 1 && !staging_abandoned(dirfd(d), e->d_name, &st, real_now))
				continue;
			if (i == 0 && st.st_mtime > real_now - QUEUE_ORPHAN_SECONDS)
				continue;
			if (i == 0) {
				sqlite3_stmt *s = db_stmt("SELECT 1 FROM queue_messages WHERE id = ?1");
				int rc;
				if (!s)
					break;
				sqlite3_bind_text(s, 1, e->d_name, -1, SQLITE_STATIC);
				rc = sqlite3_step(s);
				sqlite3_reset(s);
				if (rc != SQLITE_DONE)
					continue; /* known, or cannot tell */
			}
			if (unlinkat(dirfd(d), e->d_name, 0) == 0)
				log_event(LOG_NOTICE, "event=sweep result=removed file=%s/%s reason=orphan",
					  subdirs[i], e->d_name);
		}
		closedir(d);
	}
}

/* One pass over what is due now. 0, or -1 on trouble; *stalled is set
 * when it found due recipients and settled none of them (held for a
 * handler, or no child could start): passing again at once would spin. */
static int run_pass(const struct relay *relay, const struct client_auth *auth,
		    const struct client_tls_policy *relay_tls, int *stalled)
{
	struct pass p;
	size_t sent = 0;

	memset(&p, 0, sizeof(p));
	pass_unrecorded = 0;
	p.relay = *relay;
	p.auth = *auth;
	p.relay_tls = *relay_tls;
	/* The certificate must name the relayhost as configured. */
	p.relay_tls.nexthop = p.relay.host;
	p.lifetime = setting_int(SET_QUEUE_LIFETIME_HOURS) * 3600;
	if (load_due(&p) < 0) {
		free(p.msgs);
		free(p.rcpts);
		return -1;
	}
	drop_held(&p);
	drop_missing(&p);
	if (p.nrcpts > 0) {
		qsort(p.rcpts, p.nrcpts, sizeof(p.rcpts[0]), rcpt_compare);
		deliver_all(&p);
	}
	send_bounces(&p);
	send_delay_warnings(&p);
	remove_finished();
	for (size_t i = 0; i < p.nrcpts; i++)
		sent += p.rcpts[i].reported;
	log_event(LOG_INFO, "event=pass result=done messages=%zu rcpts=%zu reported=%zu now=%lld",
		  p.nmsgs, p.nrcpts, sent, pass_now);
	*stalled = p.nrcpts > 0 && sent == 0;
	free(p.msgs);
	free(p.rcpts);
	return 0;
}

static int due_now(void)
{
	sqlite3_stmt *s = db_stmt("SELECT 1 FROM queue_recipients WHERE state = 'queued' "
				  "AND next_attempt <= ?1 LIMIT 1");
	int rc;

	if (!s)
		return 0;
	sqlite3_bind_int64(s, 1, pass_now);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	return rc == SQLITE_ROW;
}

/* The lock that lets one runner work at a time. Returns its fd, -2 when
 * another runner holds it, -1 on trouble. */
static int take_lock(void)
{
	const char *spool = setting(SET_SPOOL_DIR);
	char path[PATH_MAX_POSTAGE];
	int fd;

	if (mkdir(spool, 0700) < 0 && errno != EEXIST)
		return -1;
	snprintf(path, sizeof(path), "%s/queue", spool);
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -1;
	snprintf(path, sizeof(path), "%s/queue.lock", spool);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int busy = errno == EWOULDBLOCK;
		close(fd);
		return busy ? -2 : -1;
	}
	return fd;
}

int runner_run(const struct runner_options *opt)
{
	static struct relay relay;
	struct client_auth auth;
	struct client_tls_policy relay_tls;
	int lock = take_lock();

	if (lock == -2) {
		log_event(LOG_INFO, "event=runner result=busy reason=\"another queue runner holds the lock\"");
		return 0;
	}
	if (lock < 0) {
		log_event(LOG_ERR, "event=runner result=error error=\"cannot lock %s/queue.lock: %s\"",
			  setting(SET_SPOOL_DIR), strerror(errno));
		return -1;
	}
	relay_parse(setting(SET_RELAYHOST), &relay);
	auth.login = setting(SET_RELAYHOST_LOGIN);
	auth.password = setting(SET_RELAYHOST_PASSWORD);
	relay_tls.level = relay_tls_level(setting(SET_RELAYHOST_TLS), auth.login);
	relay_tls.ca_file = setting(SET_RELAYHOST_TLS_CA);
	relay_tls.nexthop = NULL;
	sweep_orphans();
	/* Mailing lists: confirmations and held posts past their time. */
	list_expire(opt->now ? opt->now : (long long)time(NULL));
	/* Pass again while anything is due by the clock as it is now: mail
	 * queued during a pass leaves in this run, since systemd does not
	 * start the service again for a .path event while it is running. */
	for (int i = 0, held_waits = 0;; i++) {
		int stalled = 0;

		pass_now = opt->now ? opt->now : (long long)time(NULL);
		if (run_pass(&relay, &auth, &relay_tls, &stalled) < 0) {
			close(lock);
			return -1;
		}
		pass_now = opt->now ? opt->now : (long long)time(NULL);
		if (stalled && (pass_held == 0 || ++held_waits > QUEUE_HELD_WAITS_MAX))
			break;
		if (pass_unrecorded > 0) {
			/* What was sent but not written down would go again in
			 * the next pass: leave it to the next run, when the
			 * database may be well again (at-least-once, not twice
			 * in a row). */
			log_event(LOG_ERR, "event=runner result=stopped unrecorded=%zu", pass_unrecorded);
			break;
		}
		if (!due_now())
			break;
		if (i + 1 >= QUEUE_PASSES_MAX) {
			log_event(LOG_WARNING, "event=runner result=pass_limit passes=%d "
					       "reason=\"still due; the next run goes on\"", i + 1);
			break;
		}
		if (pass_held > 0) {
			/* A handler is between its queue commit and its last
			 * link (milliseconds): give it that before passing
			 * again. */
			struct timespec ts = { 0, QUEUE_HELD_WAIT_MS * 1000000L };
			nanosleep(&ts, NULL);
		}
	}
	close(lock);
	return 0;
}
