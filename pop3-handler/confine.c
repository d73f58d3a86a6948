#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* O_PATH */
#endif
#include "confine.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/landlock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "db.h"
#include "limits.h"
#include "log.h"

/* The file system rights this ruleset takes away, by the first Landlock
 * ABI that has each. REFER (ABI 2) is denied by every ruleset even when
 * not handled, and the Maildir needs it (a message moves from new/ to
 * cur/), so ABI 1 kernels (5.13 to 5.18) are left unconfined. */
#define FS_RIGHTS_ABI2                                                                            \
	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE | \
	 LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_REMOVE_DIR |                              \
	 LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |                            \
	 LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK | \
	 LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |                             \
	 LANDLOCK_ACCESS_FS_MAKE_SYM | LANDLOCK_ACCESS_FS_REFER)
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif

/* What a session does in its own Maildir: read, mark (rename into cur/),
 * delete, rewrite its UIDL list and quota file (a new file renamed over
 * the old one). */
#define MAILDIR_RIGHTS                                                                           \
	(LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR |                              \
	 LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_FILE |                          \
	 LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_REFER |    \
	 LANDLOCK_ACCESS_FS_TRUNCATE)
/* The system's programs and libraries, which hold no secret: what a late
 * dlopen or a sanitizer's symbolizer reads. /etc is not among them (TLS
 * and DKIM keys live there). */
#define SYSTEM_RIGHTS \
	(LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_EXECUTE)

static int add_path(int ruleset, const char *path, unsigned long long rights, unsigned long long handled)
{
	struct landlock_path_beneath_attr rule = { 0 };
	int fd = open(path, O_PATH | O_CLOEXEC);
	int rc;

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	rule.parent_fd = fd;
	rule.allowed_access = rights & handled;
	rc = (int)syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
	if (rc < 0 && errno == EINVAL) {
		/* A file, not a directory: only the rights a file can have. */
		rule.allowed_access &= LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |
				       LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_TRUNCATE;
		rc = (int)syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
	}
	close(fd);
	return rc;
}

#ifdef POSTAGE_SANITIZED
/* A sanitizer writes its report to the directory of log_path= in its
 * options: keep that open, or a report after the login would be lost. */
static int add_sanitizer_log(int ruleset, const char *env, unsigned long long handled)
{
	const char *opts = getenv(env), *p, *end;
	char dir[PATH_MAX_POSTAGE];
	char *slash;

	if (!opts || !(p = strstr(opts, "log_path=")))
		return 0;
	p += strlen("log_path=");
	end = strchr(p, ':');
	if (!end)
		end = p + strlen(p);
	if ((size_t)(end - p) >= sizeof(dir))
		return -1;
	memcpy(dir, p, (size_t)(end - p));
	dir[end - p] = '\0';
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	return add_path(ruleset, dir,
			LANDLOCK_ACCESS_FS_READ_DIR | LANDLOCK_ACCESS_FS_MAKE_REG |
				LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_READ_FILE,
			handled);
}
#endif

enum confine_result confine_after_login(const char *maildir)
{
	struct landlock_ruleset_attr attr = { 0 };
	unsigned long long handled = FS_RIGHTS_ABI2;
	static const char *const system_dirs[] = { "/usr", "/lib", "/lib64", "/lib32" };
	const char *log_file = getenv("POSTAGE_LOG_FILE");
	int abi, ruleset, failed = 0;

	db_close();
	abi = (int)syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 2)
		return CONFINE_UNSUPPORTED; /* no Landlock, or ABI 1: see above */
	if (abi >= 3)
		handled |= LANDLOCK_ACCESS_FS_TRUNCATE;
	attr.handled_access_fs = handled;
	ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
	if (ruleset < 0)
		return CONFINE_ERROR;

	if (maildir && *maildir && add_path(ruleset, maildir, MAILDIR_RIGHTS, handled) < 0)
		failed = 1;
	for (size_t i = 0; i < sizeof(system_dirs) / sizeof(system_dirs[0]); i++)
		if (add_path(ruleset, system_dirs[i], SYSTEM_RIGHTS, handled) < 0)
			failed = 1;
	/* $POSTAGE_LOG_FILE (hosts without a journal, the tests): appended to,
	 * never read. The journal and syslog are sockets, not files. */
	if (log_file && *log_file &&
	    add_path(ruleset, log_file, LANDLOCK_ACCESS_FS_WRITE_FILE, handled) < 0)
		failed = 1;
#ifdef POSTAGE_SANITIZED
	if (add_sanitizer_log(ruleset, "ASAN_OPTIONS", handled) < 0 ||
	    add_sanitizer_log(ruleset, "UBSAN_OPTIONS", handled) < 0 ||
	    add_path(ruleset, "/proc", SYSTEM_RIGHTS, handled) < 0)
		failed = 1;
#endif
	if (failed || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
	    syscall(SYS_landlock_restrict_self, ruleset, 0) < 0) {
		int saved = errno;

		close(ruleset);
		errno = saved;
		return CONFINE_ERROR;
	}
	close(ruleset);
	return CONFINE_OK;
}
