#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* F_OFD_SETLK */
#endif
#include "stress.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "io.h"
#include "limits.h"
#include "log.h"

static int slot_fd = -1;
static long slot = -1;

void stress_watch(struct io *io)
{
	io->slow = stress_slow;
	io->slow_ms = STRESS_SLOW_MS;
	io->slow_partial_ms = STRESS_PARTIAL_MS;
}

/* Takes a free byte of the slot file: this process is slow. */
static int register_slow(void)
{
	char path[PATH_MAX_POSTAGE];
	long start = (long)getpid() % STRESS_SLOTS;

	snprintf(path, sizeof(path), "%s/slow.lock", setting(SET_SPOOL_DIR));
	slot_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (slot_fd < 0 && errno == ENOENT && mkdir(setting(SET_SPOOL_DIR), 0700) == 0)
		slot_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (slot_fd < 0)
		return -1;
	for (long i = 0; i < STRESS_SLOTS; i++) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
				    .l_start = (start + i) % STRESS_SLOTS, .l_len = 1 };
		if (fcntl(slot_fd, F_OFD_SETLK, &fl) == 0) {
			slot = fl.l_start;
			return 0;
		}
	}
	return -1; /* every slot is taken: as slow as it gets */
}

/* Slow sessions other than this one: each F_OFD_GETLK finds the next
 * byte another process holds. */
static long count_others(void)
{
	long n = 0;
	off_t at = 0;

	while (at < STRESS_SLOTS) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = at,
				    .l_len = STRESS_SLOTS - at };
		if (fcntl(slot_fd, F_OFD_GETLK, &fl) < 0 || fl.l_type == F_UNLCK)
			break;
		n++;
		at = fl.l_start + (fl.l_len > 0 ? fl.l_len : 1);
	}
	return n;
}

int stress_slow(struct io *io)
{
	long max = setting_int(SET_SLOW_SESSIONS_MAX), others;

	(void)io;
	if (max <= 0)
		return 0;
	if (slot < 0 && register_slow() < 0) {
		if (slot_fd < 0)
			return 0; /* cannot tell: wait as usual */
		log_event(LOG_NOTICE, "event=stress result=cut slow=%d max=%ld", STRESS_SLOTS, max);
		return 1;
	}
	others = count_others();
	if (others + 1 <= max)
		return 0;
	log_event(LOG_NOTICE, "event=stress result=cut slow=%ld max=%ld", others + 1, max);
	return 1;
}
