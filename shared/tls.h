/* TLS with GnuTLS, set up only when a session asks for it. The line reader
 * in io.c runs over it unchanged. */
#ifndef POSTAGE_TLS_H
#define POSTAGE_TLS_H

#include <stddef.h>

#include "io.h"

/* tls_cert and tls_key are set and readable. */
int tls_available(void);

/* Loads GnuTLS and the certificate and key (once per process). 0, or -1
 * (logged): STARTTLS is then refused before a handshake is promised. */
int tls_server_prepare(void);

/* Server handshake over io's fds (anything buffered in io is dropped
 * first: RFC 3207 4.2, CVE-2011-0411). On success io reads and writes
 * through TLS and info holds "TLSv1.3 with cipher X (256/256 bits)".
 * 0, or -1 (logged). */
int tls_server_start(struct io *io, char *info, size_t cap);

/* Client handshake (the queue runner), opportunistic: the certificate is
 * checked against servername and the outcome put in *verified. */
int tls_client_start(struct io *io, const char *servername, int *verified, char *info,
		     size_t cap);

/* Sends close_notify and drops the transport. */
void tls_end(struct io *io);

#endif
