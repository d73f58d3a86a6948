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

/* Client handshake (the queue runner) over io's fds, sending servername
 * in SNI (NULL or "" for none: an address). Whatever certificate the
 * server shows, the handshake succeeds: tls_client_verify says whether
 * it is trusted, and the caller decides. Trusted are the system's CAs
 * and, unless ca_file is "", the certificates in that PEM file (an
 * unreadable one is logged and adds nothing). 0, or -1 (logged). */
int tls_client_start(struct io *io, const char *servername, const char *ca_file, char *info,
		     size_t cap);

/* Does the server's certificate, in the session tls_client_start made,
 * chain to a trusted CA and name name: a DNS name (RFC 6125), or an IP
 * address literal, which only an IP address entry of its
 * subjectAltName matches? 1 yes; 0 no, with the reasons in why
 * ("its issuer is not trusted; it does not name relay.example"). */
int tls_client_verify(const char *name, char *why, size_t cap);

/* Sends close_notify and drops the transport. */
void tls_end(struct io *io);

#endif
