/* smtp-handler: one ESMTP session on stdin/stdout, started per connection
 * by systemd (Accept=yes), xinetd or tcpserver. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "session.h"
#include "spool.h"

static struct session session;

/* systemd stops a session with SIGTERM (RuntimeMaxSec=, a shutdown,
 * systemctl stop): a message being received is not accepted yet, so its
 * staging file goes at once instead of waiting for the queue runner. */
static void on_sigterm(int sig)
{
	spool_staging_abandon();
	signal(sig, SIG_DFL);
	raise(sig);
}

static int parse_mode(const char *m, enum smtp_mode *mode)
{
	if (strcmp(m, "mx") == 0)
		*mode = MODE_MX;
	else if (strcmp(m, "submission") == 0)
		*mode = MODE_SUBMISSION;
	else if (strcmp(m, "submissions") == 0)
		*mode = MODE_SUBMISSIONS;
	else
		return -1;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "mode", required_argument, NULL, 'm' },
		{ "db", required_argument, NULL, 'd' },
		{ "host-db", required_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	enum smtp_mode mode = MODE_MX;
	int c;

	log_init("postage-smtp");
	/* Under inetd stderr is the client's socket: getopt must not
	 * print there; the log says what was wrong. */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case 'm':
			if (parse_mode(optarg, &mode) < 0) {
				log_event(LOG_ERR, "event=start result=usage error=\"unknown --mode\"");
				return 2;
			}
			break;
		case 'd':
			db_set_path(optarg);
			break;
		case 'H':
			db_set_host_path(optarg);
			break;
		default:
			log_event(LOG_ERR, "event=start result=usage");
			return 2;
		}
	}
	/* A client that goes away must not kill us mid-write. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGTERM, on_sigterm);

	session.mode = mode;
	return session_run(&session) == 0 ? 0 : 1;
}
