/* One run of the queue: take the lock, then passes over what is due. A
 * pass groups the due recipients by destination (the relayhost, or the
 * recipient's domain), hands each destination to a child process (at most
 * QUEUE_PARALLEL_MAX at once, deliver.c) that sends the messages over one
 * reused connection, and records what each child reports. Only this
 * parent process touches the database. Then come the bounces, the delay
 * warnings, and the removal of messages whose every recipient is final
 * (housekeeping.c). */
#define _GNU_SOURCE /* pipe2 */
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
#include "log.h"
#include "queue.h"
#include "runner.h"
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
	struct db_q *s;

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
	s = db_stmt(SQL_QUEUE_RECORD);
	if (s) {
		db_bind_text(s, 1, m->id);
		db_bind_text(s, 2, rc->recipient);
		db_bind_text(s, 3, state);
		db_bind_int64(s, 4, next);
		db_bind_text(s, 5, st->text);
		db_bind_text(s, 6, st->status);
		if (st->mta[0])
			db_bind_text(s, 7, st->mta);
		if (st->command[0])
			db_bind_text(s, 8, st->command);
		time_t give_up = time(NULL) + QUEUE_RECORD_PATIENCE_SECONDS;
		int step;

		/* Busy beyond the busy timeout (an administrator's open
		 * transaction): keep trying rather than forget the result. */
		while ((step = db_step(s)) == DB_BUSY) {
			db_reset(s);
			if (time(NULL) >= give_up)
				break;
			log_event(LOG_WARNING, "event=delivery result=db_busy id=%s action=retry", m->id);
		}
		if (step != DB_DONE) {
			log_event(LOG_ERR, "event=delivery result=db_error id=%s error=\"%s\"", m->id,
				  db_errmsg());
			pass_unrecorded++;
		}
		db_reset(s);
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

static int load_due(struct pass *p)
{
	struct db_q *s = db_stmt(SQL_QUEUE_DUE);
	size_t cap_r = 0, cap_m = 0;
	int rc;

	if (!s)
		return -1;
	db_bind_int64(s, 1, pass_now);
	db_bind_int64(s, 2, QUEUE_PASS_RECIPIENTS_MAX);
	while ((rc = db_step(s)) == DB_ROW) {
		const char *id = db_col_text(s, 0);
		const char *rcpt = db_col_text(s, 1);
		const char *sender = db_col_text(s, 3);
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
			m->size = (unsigned long long)db_col_int64(s, 4);
			m->body_8bit = db_col_int(s, 5);
			m->smtputf8 = db_col_int(s, 6);
			m->created_at = db_col_int64(s, 7);
			m->verp = db_col_int(s, 8);
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
		db_col_copy(s, 9, r->orig_rcpt, sizeof(r->orig_rcpt));
		r->attempts = db_col_int(s, 2);
		at = strrchr(rcpt, '@');
		if (!p->relay.set && at) {
			snprintf(r->nexthop, sizeof(r->nexthop), "%s", at + 1);
			for (char *c = r->nexthop; *c; c++)
				if (*c >= 'A' && *c <= 'Z')
					*c = (char)(*c - 'A' + 'a');
		}
		p->nrcpts++;
	}
	db_reset(s);
	if (rc != DB_DONE && rc != DB_ROW) {
		log_event(LOG_ERR, "event=pass result=db_error error=\"%s\"", db_errmsg());
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
	struct db_q *s = db_stmt(SQL_QUEUE_DUE_ANY);
	int rc;

	if (!s)
		return 0;
	db_bind_int64(s, 1, pass_now);
	rc = db_step(s);
	db_reset(s);
	return rc == DB_ROW;
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
