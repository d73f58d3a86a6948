/* shared/config.c and db.c: settings rows over the defaults of DESIGN.md,
 * bad numbers, unknown and over-long keys; db_open's version check. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "db.h"
#include "limits.h"
#include "testdir.h"

static void read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, cap - 1);

	buf[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
}

/* db_open in a child (it keeps its verdict per process) on a database of
 * user_version version; returns what db_open said. */
static int open_version(const char *dir, int version)
{
	char path[4200], sql[128];
	pid_t pid;
	int status;

	snprintf(path, sizeof(path), "%s/v%d.db", dir, version);
	snprintf(sql, sizeof(sql), "CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT);"
				   "PRAGMA user_version = %d;", version);
	testdb_exec(path, sql);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		db_set_path(path);
		_exit((int)db_open());
	}
	REQUIRE(waitpid(pid, &status, 0) == pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_versions(const char *dir)
{
	char log[8192], logpath[4200];

	CHECK_INT("user_version 0", DB_VERSION, open_version(dir, 0));
	CHECK_INT("user_version 99", DB_VERSION, open_version(dir, 99));
	CHECK_INT("user_version of this program", DB_OK, open_version(dir, DB_SCHEMA_VERSION));
	snprintf(logpath, sizeof(logpath), "%s/log", dir);
	read_file(logpath, log, sizeof(log));
	CHECK_TRUE("log: what to run for an old database",
		   strstr(log, "result=version") && strstr(log, "schema/migrations/"));
	CHECK_TRUE("log: a newer database", strstr(log, "user_version=99"));
	{
		pid_t pid = fork();
		int status;

		REQUIRE(pid >= 0);
		if (pid == 0) {
			db_set_path("/nonexistent/dir/postage.db");
			_exit((int)db_open());
		}
		REQUIRE(waitpid(pid, &status, 0) == pid);
		CHECK_INT("missing database", DB_TEMPFAIL, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
}

int main(void)
{
	const char *dir = testdir_make("config");
	const char *db = testdb_make(dir);
	char sql[4096], logpath[4200], log[8192], longv[SETTING_VALUE_MAX + 10];

	snprintf(logpath, sizeof(logpath), "%s/log", dir);
	REQUIRE(setenv("POSTAGE_LOG_FILE", logpath, 1) == 0);
	memset(longv, 'L', sizeof(longv) - 1);
	longv[sizeof(longv) - 1] = '\0';
	snprintf(sql, sizeof(sql),
		 "INSERT INTO settings VALUES ('hostname', 'mx.test.example'),"
		 " ('mail_root', '/srv/mail'), ('max_message_bytes', '1000'),"
		 " ('queue_lifetime_hours', 'soon'), ('pop_before_smtp_minutes', '-5'),"
		 " ('dmarc_reject', '12x'), ('spf_reject_fail', ''),"
		 " ('tls_cert', NULL), ('no_such_key', 'x'), ('relayhost', '%s');",
		 longv);
	testdb_exec(db, sql);

	test_versions(dir);
	CHECK_INT("db_open", DB_OK, db_open());
	CHECK_STR("hostname row", "mx.test.example", setting(SET_HOSTNAME));
	CHECK_STR("mail_root row", "/srv/mail", setting(SET_MAIL_ROOT));
	CHECK_STR("spool_dir default", "/var/spool/postage", setting(SET_SPOOL_DIR));
	CHECK_INT("max_message_bytes row", 1000, setting_int(SET_MAX_MESSAGE_BYTES));
	CHECK_STR("tls_cert NULL", "", setting(SET_TLS_CERT));
	CHECK_STR("tls_key default", "", setting(SET_TLS_KEY));
	/* bad numbers fall back to the default, and say so */
	CHECK_INT("queue_lifetime_hours 'soon'", 120, setting_int(SET_QUEUE_LIFETIME_HOURS));
	CHECK_INT("pop_before_smtp_minutes '-5'", 30, setting_int(SET_POP_BEFORE_SMTP_MINUTES));
	CHECK_INT("dmarc_reject '12x'", 1, setting_int(SET_DMARC_REJECT));
	/* an empty value is the default */
	CHECK_INT("spf_reject_fail ''", 0, setting_int(SET_SPF_REJECT_FAIL));
	CHECK_INT("max_messages_per_hour_per_login default", 500,
		  setting_int(SET_MAX_MESSAGES_PER_HOUR_PER_LOGIN));
	/* a value over SETTING_VALUE_MAX is ignored, not cut */
	CHECK_STR("relayhost of 1033 octets", "", setting(SET_RELAYHOST));

	read_file(logpath, log, sizeof(log));
	CHECK_TRUE("log: unknown key", strstr(log, "result=unknown key=\"no_such_key\"") != NULL);
	CHECK_TRUE("log: too long", strstr(log, "key=relayhost reason=too_long") != NULL);
	CHECK_TRUE("log: bad number", strstr(log, "result=bad_number key=queue_lifetime_hours") != NULL);

	CHECK_STR("db_path from $POSTAGE_DB", db, db_path());
	db_set_path("/nonexistent/x.db");
	CHECK_STR("db_path with --db", "/nonexistent/x.db", db_path());
	/* db_open keeps its first verdict for the process */
	CHECK_INT("db_open again", DB_OK, db_open());
	return check_finish("config");
}
