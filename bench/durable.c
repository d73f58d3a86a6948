/* The machine's ceiling for making a message durable the way a Maildir
 * delivery does: create a file in tmp/, write 4 KiB, fsync it, rename it
 * into new/, fsync new/. Usage: durable DIR COUNT WRITERS
 * Prints "ops SECONDS" for COUNT operations spread over WRITERS processes. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char payload[4096];

static void die(const char *what)
{
	perror(what);
	_exit(1);
}

static void one(const char *dir, int writer, int i)
{
	char tmp[4096], dst[4096], newdir[4096];
	int fd;

	snprintf(tmp, sizeof(tmp), "%s/tmp/%d.%d", dir, writer, i);
	snprintf(dst, sizeof(dst), "%s/new/%d.%d", dir, writer, i);
	snprintf(newdir, sizeof(newdir), "%s/new", dir);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		die("open");
	if (write(fd, payload, sizeof(payload)) != (ssize_t)sizeof(payload))
		die("write");
	if (fsync(fd) < 0)
		die("fsync");
	if (close(fd) < 0)
		die("close");
	if (rename(tmp, dst) < 0)
		die("rename");
	fd = open(newdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		die("open dir");
	if (fsync(fd) < 0)
		die("fsync dir");
	close(fd);
}

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	int count, writers, status, failed = 0;

	if (argc != 4)
		return 2;
	count = atoi(argv[2]);
	writers = atoi(argv[3]);
	if (count < 1 || writers < 1)
		return 2;
	memset(payload, 'x', sizeof(payload));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int w = 0; w < writers; w++) {
		pid_t pid = fork();

		if (pid < 0)
			die("fork");
		if (pid == 0) {
			for (int i = w; i < count; i += writers)
				one(argv[1], w, i);
			_exit(0);
		}
	}
	while (wait(&status) > 0)
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			failed = 1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (failed)
		return 1;
	printf("%d %.6f\n", count, (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
	return 0;
}
