/* What a pass does after delivery, and a run before its first pass:
 * the bounces and delay warnings (made by dsn.c), a list's failures
 * counted against its members, the removal of messages whose every
 * recipient is final, and the sweep of files a crash left behind. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "limits.h"
#include "list.h"
#include "listmail.h"
#include "log.h"
#include "maildir.h"
#include "queue.h"
#include "runner.h"
#include "spool.h"

/* ---- after delivery: notices and removal ---------------------------- */

struct dsn_row {
	char recipient[ADDRESS_PATH_MAX + 1];
	char orig_rcpt[ADDRESS_PATH_MAX + 1];
	char status[16];
	char text[CLIENT_REPLY_TEXT_MAX + 1];
	char command[16];
	char mta[ADDRESS_DOMAIN_MAX + 72];
};

/* Up to max message ids from a query (?1, if it has one, bound to arg). */
static size_t select_ids(enum sql_id id, long long arg, char (*ids)[QUEUE_ID_LEN + 1], size_t max)
{
	struct db_q *s = db_stmt(id);
	size_t n = 0;

	if (!s)
		return 0;
	if (db_param_count(s) > 0)
		db_bind_int64(s, 1, arg);
	while (n < max && db_step(s) == DB_ROW)
		db_col_copy(s, 0, ids[n++], QUEUE_ID_LEN + 1);
	db_reset(s);
	return n;
}

static int load_message(const char *id, struct qmsg *m)
{
	struct db_q *s = db_stmt(SQL_QUEUE_MESSAGE_LOAD);
	int rc;

	if (!s)
		return -1;
	memset(m, 0, sizeof(*m));
	snprintf(m->id, sizeof(m->id), "%s", id);
	db_bind_text(s, 1, id);
	rc = db_step(s);
	if (rc == DB_ROW) {
		db_col_copy(s, 0, m->sender, sizeof(m->sender));
		m->created_at = db_col_int64(s, 1);
		m->verp = db_col_int(s, 2);
	}
	db_reset(s);
	return rc == DB_ROW ? 0 : -1;
}

/* The recipients of a message a notice is about: bounced and not yet
 * told (failed), or deferred at least once (delayed). */
static size_t load_notice_rows(const char *id, enum dsn_kind kind, struct dsn_row *rows,
			       struct dsn_rcpt *out, size_t max, long long lifetime)
{
	struct db_q *s = db_stmt(kind == DSN_FAILED ? SQL_QUEUE_BOUNCED_UNTOLD : SQL_QUEUE_DEFERRED);
	size_t n = 0;

	(void)lifetime;
	if (!s)
		return 0;
	db_bind_text(s, 1, id);
	db_bind_int64(s, 2, max);
	while (n < max && db_step(s) == DB_ROW) {
		struct dsn_row *r = &rows[n];
		db_col_copy(s, 0, r->recipient, sizeof(r->recipient));
		db_col_copy(s, 1, r->orig_rcpt, sizeof(r->orig_rcpt));
		db_col_copy(s, 2, r->status, sizeof(r->status));
		db_col_copy(s, 3, r->text, sizeof(r->text));
		db_col_copy(s, 4, r->command, sizeof(r->command));
		db_col_copy(s, 5, r->mta, sizeof(r->mta));
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
	db_reset(s);
	return n;
}

static void mark_told(const char *id, const struct dsn_row *rows, size_t n)
{
	if (db_begin() < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		struct db_q *s = db_stmt(SQL_QUEUE_MARK_TOLD);
		if (!s)
			break;
		db_bind_text(s, 1, id);
		db_bind_text(s, 2, rows[i].recipient);
		db_step(s);
		db_reset(s);
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

		if (list_bounce(list, member, queue_now(), limit, &disabled) < 0)
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

/* What a notice says about message m. */
static void notice_about(const struct pass *p, const struct qmsg *m, struct dsn_message *dm)
{
	dm->id = m->id;
	dm->sender = m->sender;
	dm->created_at = m->created_at;
	dm->give_up_at = m->created_at + p->lifetime;
	dm->lifetime_hours = p->lifetime / 3600;
}

/* One bounce per message for the recipients that failed in this pass (or
 * in an earlier one that ended before telling the sender). */
void send_bounces(const struct pass *p)
{
	/* not re-entered: once per pass; dsn_send does not come back here */
	static char ids[PASS_MESSAGES_STEP][QUEUE_ID_LEN + 1];
	static struct dsn_row rows[DSN_RCPTS_MAX];
	static struct dsn_rcpt rcpts[DSN_RCPTS_MAX];
	size_t nids = select_ids(SQL_QUEUE_TO_BOUNCE, 0, ids, PASS_MESSAGES_STEP);

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
		notice_about(p, &m, &dm);
		if (dsn_send(DSN_FAILED, &dm, rcpts, n) == 0)
			mark_told(m.id, rows, n);
	}
}

/* Once per message, after QUEUE_DELAY_WARNING_SECONDS of failing. */
void send_delay_warnings(const struct pass *p)
{
	static char ids[PASS_MESSAGES_STEP][QUEUE_ID_LEN + 1];
	static struct dsn_row rows[DSN_RCPTS_MAX];
	static struct dsn_rcpt rcpts[DSN_RCPTS_MAX];
	size_t nids;

	if (p->lifetime <= QUEUE_DELAY_WARNING_SECONDS)
		return; /* it bounces before a warning would be due */
	nids = select_ids(SQL_QUEUE_TO_WARN, queue_now() - QUEUE_DELAY_WARNING_SECONDS, ids,
			  PASS_MESSAGES_STEP);
	for (size_t i = 0; i < nids; i++) {
		struct qmsg m;
		struct dsn_message dm;
		size_t n;
		struct db_q *s;

		if (load_message(ids[i], &m) < 0)
			continue;
		n = load_notice_rows(m.id, DSN_DELAYED, rows, rcpts, DSN_RCPTS_MAX, p->lifetime);
		if (n == 0)
			continue;
		notice_about(p, &m, &dm);
		/* A list's copies get no warning: only a failure counts. */
		if (m.sender[0] && !m.verp && dsn_send(DSN_DELAYED, &dm, rcpts, n) < 0)
			continue;
		s = db_stmt(SQL_QUEUE_MARK_WARNED);
		if (s) {
			db_bind_text(s, 1, m.id);
			db_step(s);
			db_reset(s);
		}
	}
}

/* Messages whose every recipient is final (and told): the file first,
 * then the rows, so a crash in between leaves rows to retry the removal,
 * never a file nobody knows about. */
void remove_finished(void)
{
	static char ids[PASS_MESSAGES_STEP][QUEUE_ID_LEN + 1];
	char dir[PATH_MAX_POSTAGE];
	size_t n = select_ids(SQL_QUEUE_FINISHED, 0, ids, PASS_MESSAGES_STEP);

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
		struct db_q *s;

		if (!ids[i][0])
			continue;
		s = db_stmt(SQL_QUEUE_RECIPIENTS_DELETE);
		if (s) {
			db_bind_text(s, 1, ids[i]);
			db_step(s);
			db_reset(s);
		}
		s = db_stmt(SQL_QUEUE_MESSAGE_DELETE);
		if (s) {
			db_bind_text(s, 1, ids[i]);
			db_step(s);
			db_reset(s);
		}
	}
	if (db_commit() == 0)
		for (size_t i = 0; i < n; i++)
			if (ids[i][0])
				log_event(LOG_INFO, "event=queue_remove result=ok id=%s", ids[i]);
}

/* ---- what a crash left ------------------------------------------------ */

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
void sweep_orphans(void)
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
				struct db_q *s = db_stmt(SQL_QUEUE_MESSAGE_EXISTS);
				int rc;
				if (!s)
					break;
				db_bind_text(s, 1, e->d_name);
				rc = db_step(s);
				db_reset(s);
				if (rc != DB_DONE)
					continue; /* known, or cannot tell */
			}
			if (unlinkat(dirfd(d), e->d_name, 0) == 0)
				log_event(LOG_NOTICE, "event=sweep result=removed file=%s/%s reason=orphan",
					  subdirs[i], e->d_name);
		}
		closedir(d);
	}
}
