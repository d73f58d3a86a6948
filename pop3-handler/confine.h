#ifndef POSTAGE_CONFINE_H
#define POSTAGE_CONFINE_H

/* Least privilege after a POP3 login: the process closes the database
 * (the settings stay loaded) and gives up every file but its own Maildir
 * (and the system's libraries), with Landlock (Linux 5.19 and later;
 * Debian 12's kernel has it). A parser bug reached after the login then
 * cannot read another mailbox, a password hash, a TLS or DKIM key, or
 * the SRS secret. Other files already open stay open (the TLS session's
 * keys are in memory anyway). */

enum confine_result {
	CONFINE_OK = 0,
	CONFINE_UNSUPPORTED, /* no Landlock (or only its first ABI) here */
	CONFINE_ERROR,       /* errno set; the process is not confined */
};

/* maildir: the mailbox's Maildir, or NULL/"" when it has none yet. The
 * database is closed whatever the result. */
enum confine_result confine_after_login(const char *maildir);
#endif
