/* pop3-handler: one POP3 session on stdin/stdout, started per connection
 * by systemd (Accept=yes), xinetd or tcpserver. --tls speaks implicit TLS
 * from the first byte (port 995). */
#include <getopt.h>
#include <signal.h>
#include <stddef.h>
#include <unistd.h>

#include "db.h"
#include "log.h"
#include "session.h"

static struct session session;

int main(int argc, char **argv)
{
	static const struct option options[] = {
		{ "db", required_argument, NULL, 'd' },
		{ "host-db", required_argument, NULL, 'H' },
		{ "tls", no_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	log_init("postage-pop3");
	/* Under inetd stderr is the client's socket: getopt must not
	 * print there; the log says what was wrong. */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case 'd':
			db_set_path(optarg);
			break;
		case 'H':
			db_set_host_path(optarg);
			break;
		case 't':
			session.implicit_tls = 1;
			break;
		default:
			log_event(LOG_ERR, "event=start result=usage");
			return 2;
		}
	}
	if (optind != argc) {
		log_event(LOG_ERR, "event=start result=usage error=\"unexpected argument\"");
		return 2;
	}
	/* A client that goes away must not kill us mid-write. */
	signal(SIGPIPE, SIG_IGN);

	return session_run(&session) == 0 ? 0 : 1;
}
