/* Dovecot's UIDLs for the snapshot, when pop3_uidl_format is set (README:
 * "Moving from Dovecot"), so that clients moved from Dovecot's POP3 do
 * not fetch everything again.
 *
 * A message listed in the Maildir's dovecot-uidlist gets the UIDL Dovecot
 * gives it: the POP3 UIDL Dovecot saved for it (P field) if any, else
 * the format filled in from its record. A message not listed yet (one
 * delivered since Dovecot last looked) is numbered as Dovecot numbers
 * one: under Dovecot's dovecot-uidlist.lock it gets the next UID and a
 * record in the file. Its UIDL then never changes: not in our next
 * session, and not when Dovecot (IMAP, kept on the same Maildirs, or
 * POP3 again) sees it, since Dovecot takes its UID from that record. A
 * Maildir without the file gets one, as Dovecot would make it.
 *
 * What cannot be done falls back, logged, never failing the login:
 *   - a format we cannot make as Dovecot does, or a dovecot-uidlist that
 *     is broken or too big: postage's own UIDLs for the whole session
 *     (Dovecot itself would start a new UIDVALIDITY, so its UIDLs would
 *     change anyway; the file is left alone for the administrator);
 *   - the lock held past UIDLIST_LOCK_WAIT_MS, or the file not writable:
 *     the messages not listed yet are left out of this session. They are
 *     not lost: a later session, with the lock free, lists them with
 *     their lasting UIDL. Giving them a stand-in UIDL now would change
 *     it later, and the client would fetch them twice.
 *   - a name no record can hold (a control character), or a second file
 *     with one base name: that message keeps postage's own UIDL. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "maildrop.h"
#include "uidlist.h"

struct uidl_match {
	struct maildrop *d;
	const struct uidl_format *fmt;
	struct uidlist_reader reader;
	size_t *slots;          /* base-name hash: message index + 1, 0 empty */
	size_t mask;
	unsigned char *matched; /* per message: a record names it */
	unsigned char *skip;    /* per message: never numbered by us */
	size_t unusable;        /* UIDLs from the file we could not send */
};

/* Dovecot's base name: the file name up to ':', flags left out. */
static size_t base_len(const char *name)
{
	return strcspn(name, ":");
}

static size_t hash_base(const char *s, size_t len)
{
	unsigned long long h = 14695981039346656037ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ULL;
	}
	return (size_t)h;
}

/* A name a record can hold (and Dovecot's v1 reader takes back as it
 * was): printable, without '/', not empty. */
static int recordable(const char *name, size_t len)
{
	if (len == 0 || len > MAILDROP_NAME_MAX)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e || name[i] == '/')
			return 0;
	return 1;
}

static size_t *find_slot(struct uidl_match *m, const char *base, size_t len)
{
	size_t i = hash_base(base, len) & m->mask;

	for (;; i = (i + 1) & m->mask) {
		const char *name;

		if (!m->slots[i])
			return &m->slots[i];
		name = m->d->msgs[m->slots[i] - 1].name;
		if (base_len(name) == len && memcmp(name, base, len) == 0)
			return &m->slots[i];
	}
}

static int index_build(struct uidl_match *m)
{
	size_t cap = 64;

	while (cap < 2 * m->d->count)
		cap *= 2;
	m->slots = calloc(cap, sizeof(*m->slots));
	m->matched = calloc(m->d->count, 1);
	m->skip = calloc(m->d->count, 1);
	if (!m->slots || !m->matched || !m->skip)
		return -1;
	m->mask = cap - 1;
	for (size_t i = 0; i < m->d->count; i++) {
		const char *name = m->d->msgs[i].name;
		size_t len = base_len(name);
		size_t *slot = find_slot(m, name, len);

		if (*slot)
			m->skip[i] = 1; /* a second file with this base name */
		else
			*slot = i + 1;
		if (!recordable(name, len))
			m->skip[i] = 1;
	}
	return 0;
}

static void clear_dovecot_uids(struct uidl_match *m)
{
	for (size_t i = 0; i < m->d->count; i++) {
		free(m->d->msgs[i].dovecot_uid);
		m->d->msgs[i].dovecot_uid = NULL;
	}
	memset(m->matched, 0, m->d->count);
	m->unusable = 0;
}

/* Sets message i's UIDL from a saved one (saved, with its length; length
 * 0: the base name) or else from the format. */
static void set_uid(struct uidl_match *m, size_t i, uint32_t uid, const char *guid, size_t guid_len,
		    const char *saved, size_t saved_len)
{
	struct pop3_message *msg = &m->d->msgs[i];
	char out[POP3_UIDL_DOVECOT_MAX + 1], base[MAILDROP_NAME_MAX + 1], g[UIDLIST_LINE_MAX + 1];
	size_t blen = base_len(msg->name);
	long len;
	int ok = 1;

	free(msg->dovecot_uid);
	msg->dovecot_uid = NULL;
	if (blen > MAILDROP_NAME_MAX)
		blen = MAILDROP_NAME_MAX;
	memcpy(base, msg->name, blen);
	base[blen] = '\0';
	if (saved && saved_len == 0) {
		len = snprintf(out, sizeof(out), "%s", base);
		ok = (size_t)len < sizeof(out);
	} else if (saved) {
		ok = saved_len < sizeof(out);
		len = ok ? (long)saved_len : 0;
		memcpy(out, saved, (size_t)len);
		out[len] = '\0';
	} else {
		struct uidl_values v = { uid, m->reader.header.uidvalidity, base, NULL };

		if (guid && guid_len < sizeof(g)) {
			memcpy(g, guid, guid_len);
			g[guid_len] = '\0';
			v.guid = g;
		}
		len = uidl_format_expand(m->fmt, &v, out, sizeof(out));
		ok = len >= 0;
	}
	/* RFC 1939 7's characters, and one line: else postage's own */
	for (long k = 0; ok && k < len; k++)
		if ((unsigned char)out[k] < 0x21 || (unsigned char)out[k] > 0x7e)
			ok = 0;
	if (!ok || len < 1 || !(msg->dovecot_uid = strdup(out)))
		m->unusable++;
}

static void on_record(void *ctx, const struct uidlist_record *r)
{
	struct uidl_match *m = ctx;
	size_t slot = *find_slot(m, r->name, r->name_len);

	if (!slot)
		return; /* expunged, or not in this snapshot */
	/* a later record for one base name replaces the earlier, as in
	 * Dovecot */
	m->matched[slot - 1] = 1;
	set_uid(m, slot - 1, r->uid, r->guid, r->guid_len, r->pop3_uidl, r->pop3_uidl_len);
}

/* Reads dir/dovecot-uidlist into the snapshot. 1 read, 0 there is none
 * (*fd -1), -1 broken or unreadable (logged). The fd stays open for a
 * rewrite. */
static int read_uidlist(struct uidl_match *m, int *fd)
{
	char path[PATH_MAX_POSTAGE + 32];
	enum uidlist_result res;

	snprintf(path, sizeof(path), "%s/%s", m->d->dir, UIDLIST_NAME);
	clear_dovecot_uids(m);
	*fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	if (*fd < 0) {
		if (errno == ENOENT)
			return 0;
		log_event(LOG_ERR, "event=uidlist result=unreadable path=%s error=\"%s\"", path,
			  strerror(errno));
		return -1;
	}
	res = uidlist_read_fd(&m->reader, *fd);
	if (res == UIDLIST_OK)
		return 1;
	if (res == UIDLIST_BROKEN)
		log_event(LOG_ERR, "event=uidlist result=broken path=%s line=%lu reason=\"%s\"", path,
			  m->reader.lines, m->reader.why);
	else if (res == UIDLIST_TOO_BIG)
		log_event(LOG_ERR, "event=uidlist result=too_big path=%s limit=%d", path,
			  UIDLIST_BYTES_MAX);
	else
		log_event(LOG_ERR, "event=uidlist result=unreadable path=%s error=\"%s\"", path,
			  strerror(errno));
	close(*fd);
	*fd = -1;
	clear_dovecot_uids(m);
	return -1;
}

static size_t count_unlisted(const struct uidl_match *m)
{
	size_t n = 0;

	for (size_t i = 0; i < m->d->count; i++)
		if (!m->matched[i] && !m->skip[i])
			n++;
	return n;
}

/* Leaves the unlisted messages out of this session. */
static size_t hide_unlisted(struct uidl_match *m)
{
	struct maildrop *d = m->d;
	size_t kept = 0, hidden = 0;

	for (size_t i = 0; i < d->count; i++) {
		if (!m->matched[i] && !m->skip[i]) {
			free(d->msgs[i].name);
			free(d->msgs[i].dovecot_uid);
			hidden++;
			continue;
		}
		d->msgs[kept] = d->msgs[i];
		m->matched[kept] = m->matched[i];
		m->skip[kept] = m->skip[i];
		kept++;
	}
	d->count = kept;
	return hidden;
}

enum number_result { NUMBERED, NUMBER_LATER, NUMBER_OWN };

/* Under Dovecot's lock, reads the file again (it may have changed) and
 * records the messages still unlisted. */
static enum number_result number_unlisted(struct uidl_match *m, size_t *assigned)
{
	struct uidlist_lock lock;
	enum uidlist_lock_result lr;
	const char **names = NULL;
	uint32_t first, uidvalidity;
	size_t n = 0, k = 0;
	int fd, r;

	lr = uidlist_lock(m->d->dir, UIDLIST_LOCK_WAIT_MS, &lock);
	if (lr != UIDLIST_LOCKED) {
		if (lr == UIDLIST_LOCK_BUSY)
			log_event(LOG_WARNING, "event=uidlist result=lock_busy path=%s waited_ms=%d",
				  lock.path, UIDLIST_LOCK_WAIT_MS);
		else
			log_event(LOG_ERR, "event=uidlist result=lock_failed path=%s error=\"%s\"",
				  lock.path, strerror(errno));
		return NUMBER_LATER;
	}
	r = read_uidlist(m, &fd);
	if (r < 0) {
		uidlist_unlock(&lock);
		return NUMBER_OWN;
	}
	n = count_unlisted(m);
	if (n == 0) {
		if (fd >= 0)
			close(fd);
		uidlist_unlock(&lock);
		return NUMBERED;
	}
	first = r ? uidlist_next_uid(&m->reader) : 1;
	names = calloc(n, sizeof(*names));
	if (!names || first == 0 || (uint64_t)first + n >= UINT32_MAX) {
		log_event(LOG_ERR, "event=uidlist result=cannot_number dir=%s messages=%zu reason=\"%s\"",
			  m->d->dir, n, names ? "no UIDs left" : "out of memory");
		goto later;
	}
	for (size_t i = 0; i < m->d->count; i++)
		if (!m->matched[i] && !m->skip[i])
			names[k++] = m->d->msgs[i].name;
	if (uidlist_append(m->d->dir, &lock, fd, r ? &m->reader : NULL, first, names, n,
			   &uidvalidity) < 0) {
		log_event(LOG_ERR, "event=uidlist result=write_failed dir=%s messages=%zu error=\"%s\"",
			  m->d->dir, n, strerror(errno));
		goto later;
	}
	if (!r) {
		/* a new file: the format's %v is its UIDVALIDITY */
		m->reader.header.uidvalidity = uidvalidity;
	}
	k = 0;
	for (size_t i = 0; i < m->d->count; i++) {
		if (m->matched[i] || m->skip[i])
			continue;
		m->matched[i] = 1;
		set_uid(m, i, first + (uint32_t)k++, NULL, 0, NULL, 0);
	}
	*assigned = n;
	free(names);
	if (fd >= 0)
		close(fd);
	uidlist_unlock(&lock);
	return NUMBERED;
later:
	free(names);
	if (fd >= 0)
		close(fd);
	uidlist_unlock(&lock);
	return NUMBER_LATER;
}

void maildrop_dovecot_uids(struct maildrop *d, const char *format)
{
	struct uidl_format fmt;
	struct uidl_match m;
	const char *why = NULL;
	size_t assigned = 0, hidden = 0, own = 0;
	int fd = -1, r;

	if (uidl_format_parse(format, &fmt, &why) < 0) {
		char safe[UIDL_FORMAT_MAX * 4 + 8];

		log_event(LOG_ERR, "event=setting result=refused key=pop3_uidl_format value=\"%s\" "
			  "reason=\"%s\" fallback=own_uidls",
			  log_printable(safe, sizeof(safe), format, strlen(format)), why);
		return;
	}
	if (d->count == 0)
		return; /* no UIDL to give: nothing to read or number */
	memset(&m, 0, sizeof(m));
	m.d = d;
	m.fmt = &fmt;
	m.reader.record = on_record;
	m.reader.ctx = &m;
	if (index_build(&m) < 0) {
		log_event(LOG_ERR, "event=uidlist result=error dir=%s error=\"out of memory\"", d->dir);
		goto own;
	}
	r = read_uidlist(&m, &fd);
	if (fd >= 0)
		close(fd);
	if (r < 0)
		goto own;
	if (count_unlisted(&m) > 0) {
		switch (number_unlisted(&m, &assigned)) {
		case NUMBERED:
			break;
		case NUMBER_LATER:
			hidden = hide_unlisted(&m);
			break;
		case NUMBER_OWN:
			goto own;
		}
	}
	for (size_t i = 0; i < d->count; i++)
		if (!d->msgs[i].dovecot_uid)
			own++;
	log_event(own || hidden ? LOG_NOTICE : LOG_INFO,
		  "event=uidlist result=ok dir=%s messages=%zu numbered=%zu hidden=%zu own_uidls=%zu "
		  "unusable=%zu",
		  d->dir, d->count, assigned, hidden, own, m.unusable);
	goto done;
own:
	if (m.matched)
		clear_dovecot_uids(&m);
	log_event(LOG_WARNING, "event=uidlist result=fallback dir=%s uidls=own", d->dir);
done:
	free(m.slots);
	free(m.matched);
	free(m.skip);
}
