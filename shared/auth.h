/* Passwords (crypt(3) strings: yescrypt, sha512-crypt, bcrypt) and the
 * failed-login throttle shared by POP3 and SMTP AUTH. The throttle's counts
 * live in SQLite, since every connection is a new process. */
#ifndef POSTAGE_AUTH_H
#define POSTAGE_AUTH_H

#include <stddef.h>

enum auth_result {
	AUTH_OK = 0,
	AUTH_FAIL,      /* unknown login or wrong password: never say which */
	AUTH_DISABLED,  /* right or wrong, the mailbox is disabled: refused as FAIL */
	AUTH_THROTTLED, /* too many failures from this IP: refused unchecked */
	AUTH_TEMPFAIL,  /* database trouble */
};

/* Checks login and password for a client at ip (may be "" for a local
 * peer). Delays when the IP has failed often, records the outcome, and runs
 * a dummy hash of the same cost for an unknown login. */
enum auth_result auth_check(const char *ip, const char *login, const char *password);

/* Constant-time comparison of two NUL-terminated strings. */
int auth_equal(const char *a, const char *b);

/* Seconds to wait before the next attempt from ip, or -1 to refuse (for
 * callers that answer before reading a password). */
int auth_throttle_delay(const char *ip);



/* RFC 4616 PLAIN message: authzid NUL authcid NUL passwd. Pointers into
 * msg. -1 when malformed or authzid names someone else. */
int sasl_plain_split(const char *msg, size_t len, const char **authcid, const char **passwd);
#endif
