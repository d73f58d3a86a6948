/* The floor for a handler under postage's design: the least any
 * per-connection handler must do before its greeting and for a POP3 login,
 * when the database is SQLite and the program is linked the way postage's
 * handlers must be (libc dynamically, because GnuTLS is only loadable from
 * a dynamically linked program on Debian 12: its libp11-kit has no static
 * archive, and a static glibc program that dlopens libgnutls.so loads a
 * second libc). bench/run builds it like the handlers: SQLite and libcrypt
 * from their static archives, shared/lazymath.c so that libm is not loaded,
 * -z now; and once more with -static-pie, to show what a static link would
 * allow.
 *
 *   floor smtp DB   open DB, check user_version, read every setting, greet
 *                   with the hostname setting; EHLO, NOOP, QUIT
 *   floor pop3 DB   the same, then USER, PASS (the mailbox's crypt(3) hash
 *                   from the database, the pop_logins row written as
 *                   postage does), STAT over mail_root/LOGIN/cur, QUIT
 *
 * It does nothing else: no logging, no limits, no timeouts, no TLS, no
 * error handling beyond stopping. Its connection rate and its RSS in a
 * session, measured in the same run as postage's, bound what postage's
 * handlers can reach against the static greeter and against Dovecot. */
#include <crypt.h>
#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static sqlite3 *db;
static char hostname[256] = "localhost";
static char mail_root[4096] = "/var/mail/postage";

static int say(const char *s)
{
	size_t n = strlen(s);

	return write(1, s, n) == (ssize_t)n ? 0 : -1;
}

static int setup(const char *path)
{
	sqlite3_stmt *st;
	int version = -1;

	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
		return -1;
	sqlite3_busy_timeout(db, 5000);
	/* As postage does (shared/db.c): every process that opens the
	 * database rebuilds the WAL index from the whole log. */
	sqlite3_wal_autocheckpoint(db, 32);
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (version < 1)
		return -1;
	if (sqlite3_prepare_v2(db, "SELECT key, value FROM settings", -1, &st, NULL) != SQLITE_OK)
		return -1;
	while (sqlite3_step(st) == SQLITE_ROW) {
		const char *k = (const char *)sqlite3_column_text(st, 0);
		const char *v = (const char *)sqlite3_column_text(st, 1);

		if (!k || !v)
			continue;
		if (strcmp(k, "hostname") == 0)
			snprintf(hostname, sizeof(hostname), "%s", v);
		else if (strcmp(k, "mail_root") == 0)
			snprintf(mail_root, sizeof(mail_root), "%s", v);
	}
	sqlite3_finalize(st);
	return 0;
}

/* 1 when the password matches the mailbox's hash, and the login is
 * recorded for POP-before-SMTP as postage records it. */
static int login(const char *user, const char *password)
{
	static struct crypt_data cd;
	sqlite3_stmt *st;
	int ok = 0;

	if (sqlite3_prepare_v2(db, "SELECT password FROM mailboxes WHERE login = ?1 AND enabled = 1", -1,
			       &st, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	if (sqlite3_step(st) == SQLITE_ROW) {
		const char *hash = (const char *)sqlite3_column_text(st, 0);
		const char *c = hash ? crypt_r(password, hash, &cd) : NULL;

		ok = c && strcmp(c, hash) == 0;
	}
	sqlite3_finalize(st);
	if (!ok)
		return 0;
	if (sqlite3_prepare_v2(db, "INSERT INTO pop_logins (ip, login, at) VALUES ('127.0.0.1', ?1, "
			       "unixepoch()) ON CONFLICT (ip) DO UPDATE SET login = excluded.login, "
			       "at = excluded.at",
			       -1, &st, NULL) != SQLITE_OK)
		return 0;
	sqlite3_bind_text(st, 1, user, -1, SQLITE_STATIC);
	ok = sqlite3_step(st) == SQLITE_DONE;
	sqlite3_finalize(st);
	return ok;
}

static int stat_reply(const char *user)
{
	char path[4300], line[64];
	unsigned long count = 0, bytes = 0;
	struct dirent *e;
	DIR *d;
	int fd;

	snprintf(path, sizeof(path), "%s/%s/cur", mail_root, user);
	fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	d = fd < 0 ? NULL : fdopendir(fd);
	while (d && (e = readdir(d)) != NULL) {
		struct stat s;

		if (e->d_name[0] != '.' && fstatat(fd, e->d_name, &s, 0) == 0 && S_ISREG(s.st_mode)) {
			count++;
			bytes += (unsigned long)s.st_size;
		}
	}
	if (d)
		closedir(d);
	snprintf(line, sizeof(line), "+OK %lu %lu\r\n", count, bytes);
	return say(line);
}

int main(int argc, char **argv)
{
	static char buf[1024], user[128];
	char line[400];
	size_t have = 0;
	int pop3, authed = 0;

	if (argc != 3)
		return 2;
	pop3 = strcmp(argv[1], "pop3") == 0;
	if (setup(argv[2]) < 0)
		return say(pop3 ? "-ERR [SYS/TEMP] no database\r\n" : "421 no database\r\n") < 0;
	snprintf(line, sizeof(line), pop3 ? "+OK %s floor ready\r\n" : "220 %s ESMTP floor\r\n", hostname);
	if (say(line) < 0)
		return 1;
	for (;;) {
		char *nl;
		ssize_t n;
		size_t len;

		while (!(nl = memchr(buf, '\n', have))) {
			if (have == sizeof(buf))
				return 1;
			n = read(0, buf + have, sizeof(buf) - have);
			if (n <= 0)
				return 0;
			have += (size_t)n;
		}
		len = (size_t)(nl - buf);
		if (len > 0 && buf[len - 1] == '\r')
			len--;
		buf[len] = '\0';
		if (strncasecmp(buf, "QUIT", 4) == 0)
			return say(pop3 ? "+OK bye\r\n" : "221 2.0.0 Bye\r\n") < 0;
		if (!pop3) {
			snprintf(line, sizeof(line), "250 %s\r\n", hostname);
			if (say(strncasecmp(buf, "EHLO", 4) == 0 || strncasecmp(buf, "NOOP", 4) == 0
					? line : "502 5.5.2 Not here\r\n") < 0)
				return 1;
		} else if (strncasecmp(buf, "USER ", 5) == 0 && len - 5 < sizeof(user)) {
			memcpy(user, buf + 5, len - 5 + 1);
			if (say("+OK\r\n") < 0)
				return 1;
		} else if (strncasecmp(buf, "PASS ", 5) == 0 && user[0] && !authed) {
			authed = login(user, buf + 5);
			if (say(authed ? "+OK logged in\r\n" : "-ERR [AUTH] no\r\n") < 0)
				return 1;
		} else if (strncasecmp(buf, "STAT", 4) == 0 && authed) {
			if (stat_reply(user) < 0)
				return 1;
		} else if (say("-ERR not here\r\n") < 0) {
			return 1;
		}
		have -= (size_t)(nl + 1 - buf);
		memmove(buf, nl + 1, have);
	}
}
