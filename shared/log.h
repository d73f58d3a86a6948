/* Logging for the administrator: one line per event, key=value fields, to
 * the journal with structured fields, syslog as the fallback. Never to
 * stdout or stderr: under inetd both are the client's socket. */
#ifndef POSTAGE_LOG_H
#define POSTAGE_LOG_H

#include <stddef.h>
#include <syslog.h>

/* Names the program (SYSLOG_IDENTIFIER) and the session id added to every
 * line. */
void log_init(const char *program);
void log_set_session(const char *session_id);

/* fmt yields "key=value key=value ..."; each pair also becomes a journal
 * field POSTAGE_KEY=value. */
void log_event(int priority, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Copies client-supplied text into out (size cap) with every byte that is
 * not printable ASCII, a space, '"' or '\' escaped as \xNN; truncated with
 * "..." when it does not fit. Returns out. */
const char *log_printable(char *out, size_t cap, const char *in, size_t len);

#endif
