/* A delivery child's work: the recipients of one destination (the
 * relayhost, or one domain), found through MX and address lookups, sent
 * over one connection that is reused for every message, each result
 * reported to the parent on the child's pipe (runner.c records it; a
 * child never touches the database). */
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "limits.h"
#include "list.h"
#include "log.h"
#include "queue.h"
#include "runner.h"
#include "spool.h"

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

void deliver_destination(const struct pass *p, size_t start, size_t end, int out)
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
