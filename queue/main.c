/* queue-runner: drains the outbound queue. Started by postage-queue.path
 * when the spool changes, by postage-queue.timer for retries, or by hand:
 *
 *   queue-runner [--db PATH] [--once] [--now UNIXSECONDS]
 *
 * Either way the runner passes over what is due, again and again while
 * mail queued meanwhile is due, and exits when nothing it could send now
 * is left (--once is what an administrator types; it runs the same). --now makes the
 * run behave as if at that time (retries, expiry, delay warnings), for
 * tests and for an administrator who wants to flush the queue early. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "queue.h"
#include "spool.h"

/* Stopped mid-bounce: the bounce's staging file goes with us. */
static void on_sigterm(int sig)
{
	spool_staging_abandon();
	signal(sig, SIG_DFL);
	raise(sig);
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "host-db", required_argument, NULL, 'H' },
		{ "once", no_argument, NULL, 'o' },
		{ "now", required_argument, NULL, 'n' },
		{ NULL, 0, NULL, 0 },
	};
	struct runner_options opt = { 0 };
	unsigned int seed;
	enum db_status st;
	int c;

	log_init("postage-queue");
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case 'd':
			db_set_path(optarg);
			break;
		case 'H':
			db_set_host_path(optarg);
			break;
		case 'o':
			opt.once = 1;
			break;
		case 'n': {
			char *end;
			errno = 0;
			opt.now = strtoll(optarg, &end, 10);
			if (errno || end == optarg || *end || opt.now <= 0) {
				log_event(LOG_ERR, "event=start result=usage error=\"--now wants unix seconds\"");
				return 2;
			}
			break;
		}
		default:
			log_event(LOG_ERR, "event=start result=usage "
					   "usage=\"queue-runner [--db PATH] [--once] [--now UNIXSECONDS]\"");
			return 2;
		}
	}
	if (optind < argc) {
		log_event(LOG_ERR, "event=start result=usage error=\"unexpected argument\"");
		return 2;
	}
	/* A server that hangs up must not kill us mid-write. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_sigterm);
	/* Random order among MX hosts of equal preference. */
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
		seed = (unsigned int)time(NULL) ^ (unsigned int)getpid();
	srandom(seed);

	st = db_open();
	if (st != DB_OK) {
		/* db_open logged what to do. */
		return st == DB_VERSION ? 3 : 1;
	}
	return runner_run(&opt) == 0 ? 0 : 1;
}
