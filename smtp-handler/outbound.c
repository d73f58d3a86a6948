/* Mail for remote recipients enters the queue here, once: DKIM-signed
 * when one of our users sends it, so every retry sends the same bytes. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dkim.h"
#include "headers.h"
#include "log.h"
#include "session.h"
#include "spool.h"

/* Room for the DKIM-Signature fields of one message (DKIM_SIGN_MAX
 * signatures of RSA keys up to 8192 bits). */
#define DKIM_FIELDS_MAX 16384

/* Signs a copy of the staged message when the client has the right to
 * send (AUTH, relay_networks, POP-before-SMTP) and its From: domain has
 * keys. Any trouble leaves the message unsigned, never lost. Returns the
 * copy's fd (path in path, size in *size), or -1 to queue the original. */
static int sign_copy(struct session *s, const char *qid, int fd, off_t *size, char *path,
		     size_t cap)
{
	static char fields[DKIM_FIELDS_MAX];
	char domain[ADDRESS_DOMAIN_MAX + 1], name[QUEUE_ID_LEN + 16];
	off_t signed_size;
	long n;
	int sfd;

	if (session_may_relay(s) != 1)
		return -1;
	n = dkim_sign(fd, *size, fields, sizeof(fields), domain);
	if (n <= 0) {
		if (n < 0)
			log_event(LOG_ERR, "event=dkim result=not_signed id=%s domain=%s", qid,
				  domain[0] ? domain : "-");
		return -1;
	}
	snprintf(name, sizeof(name), "%s.dkim", qid);
	sfd = header_copy_edited(fd, *size, fields, (size_t)n, NULL, 0, name, path, cap, &signed_size);
	if (sfd < 0) {
		log_event(LOG_ERR, "event=dkim result=not_signed id=%s domain=%s error=\"%s\"", qid, domain,
			  strerror(errno));
		return -1;
	}
	log_event(LOG_INFO, "event=dkim result=signed id=%s domain=%s", qid, domain);
	*size = signed_size;
	return sfd;
}

int queue_outbound(struct session *s, const char *qid, int fd, const char *staging, off_t size,
		   int eight_bit, const char *sender, const struct queue_rcpt *remote, size_t nremote)
{
	char signed_path[PATH_MAX_POSTAGE];
	int sfd, r, e;

	sfd = sign_copy(s, qid, fd, &size, signed_path, sizeof(signed_path));
	r = queue_enqueue(sfd >= 0 ? sfd : fd, sfd >= 0 ? signed_path : staging, qid, sender,
			  (unsigned long long)size, eight_bit, s->smtputf8, s->peer.ip, s->auth_login,
			  remote, nremote);
	if (sfd >= 0) {
		e = errno;
		close(sfd);
		unlink(signed_path);
		errno = e;
	}
	return r;
}
