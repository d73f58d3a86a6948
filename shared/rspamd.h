/* rspamd's verdict on a message: a small HTTP/1.1 client for the
 * /checkv2 API of rspamd's normal worker (a unix socket or host:port),
 * and a strictly bounded reader of its JSON reply that keeps only what
 * the SMTP handler acts on. Nothing here touches the database or the
 * settings: the caller hands in where rspamd is and what to tell it. */
#ifndef POSTAGE_RSPAMD_H
#define POSTAGE_RSPAMD_H

#include <stddef.h>
#include <sys/types.h>

#include "limits.h"

/* rspamd's actions, from the mildest. "discard" is taken as reject (we
 * never drop a message silently: the sender hears of it), "quarantine"
 * as add header (POP3 has no quarantine). */
enum rspamd_action {
	RSPAMD_NO_ACTION = 0,
	RSPAMD_GREYLIST,
	RSPAMD_ADD_HEADER,
	RSPAMD_REWRITE_SUBJECT,
	RSPAMD_SOFT_REJECT,
	RSPAMD_REJECT,
};

struct rspamd_verdict {
	enum rspamd_action action;
	char action_name[RSPAMD_ACTION_MAX];          /* as rspamd named it */
	int has_score, has_required;
	double score, required_score;                 /* finite, |x| < 1e9 */
	char subject[RSPAMD_SUBJECT_MAX + 1];         /* "" when none; UTF-8 */
	int subject_too_long;                         /* given, but longer */
	char smtp_message[RSPAMD_MESSAGE_MAX + 1];    /* messages.smtp_message, cut */
};

/* The JSON body of a /checkv2 reply into *v. Only action (required),
 * score, required_score, subject and messages.smtp_message are read;
 * everything else is walked over, at most RSPAMD_JSON_DEPTH_MAX deep.
 * Strict JSON (RFC 8259): one object, nothing after it. 0, or -1 when
 * malformed, too deep, without an action or with one we do not know. */
int rspamd_json_parse(const char *body, size_t len, struct rspamd_verdict *v);

/* An HTTP/1.x response in buf[0..len). eof: the connection is closed
 * (a body without Content-Length ends there). 1 when complete, with
 * *status and the body at buf + *body_off, *body_len long; 0 when more
 * is needed; -1 when malformed, chunked or compressed, or past
 * RSPAMD_HTTP_HEAD_MAX / RSPAMD_REPLY_MAX. */
int rspamd_http_parse(const char *buf, size_t len, int eof, int *status, size_t *body_off,
		      size_t *body_len);

/* The setting "rspamd": "/path" (a unix socket) or "host:port",
 * "[v6]:port", "host" (port 11333). 0, or -1 when malformed.
 * *is_unix: path in host. */
int rspamd_endpoint_parse(const char *where, char *host, size_t hcap, char *port, size_t pcap,
			  int *is_unix);

/* A Subject field (LF line end included) for text: controls become
 * spaces; printable ASCII is folded at spaces, anything else is encoded
 * (RFC 2047, UTF-8, B) in words of whole characters on folded lines.
 * Every line is at most 78 octets unless one word is longer, and never
 * more than 998. The length, or -1 when out is too small. */
long rspamd_subject_field(const char *text, size_t len, char *out, size_t cap);

/* Copies text into out as printable ASCII (other bytes become '?'),
 * at most RSPAMD_MESSAGE_SHOWN octets: for an SMTP reply line. */
void rspamd_reply_text(const char *text, char *out, size_t cap);

struct rspamd_request {
	const char *ip;          /* the client's address; "" when local */
	const char *hostname;    /* its verified reverse DNS name, or "unknown" */
	const char *helo;        /* "" when none */
	const char *from;        /* envelope sender without <>, "" for <> */
	const char *const *rcpts;
	size_t nrcpts;
	const char *queue_id;
	const char *user;        /* the AUTH login; "" when none */
	const char *mta_name;    /* our host name */
};

enum rspamd_status {
	RSPAMD_OK = 0,
	RSPAMD_UNREACHABLE, /* bad setting, no such socket, refused */
	RSPAMD_TIMEOUT,     /* the deadline passed */
	RSPAMD_BAD_REPLY,   /* not 200, malformed, too large, cut short */
};

/* Sends the message in fd (bytes [0, size), LF form) with the request's
 * envelope to rspamd at where, and reads its verdict into *v, all by
 * deadline (monotonic ms, dns.h's clock). On anything but RSPAMD_OK, a
 * printable reason goes to why. */
enum rspamd_status rspamd_check(const char *where, const struct rspamd_request *req, int fd,
				off_t size, long long deadline, struct rspamd_verdict *v, char *why,
				size_t whycap);

const char *rspamd_status_name(enum rspamd_status s);

#endif
