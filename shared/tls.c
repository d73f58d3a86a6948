#include "tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "db.h"
#include "limits.h"
#include "log.h"

static gnutls_session_t session;
static gnutls_certificate_credentials_t creds;
static gnutls_datum_t ticket_key;
static struct io_transport transport;
static int initialised;

int tls_available(void)
{
	const char *cert = setting(SET_TLS_CERT), *key = setting(SET_TLS_KEY);

	return cert[0] && key[0] && access(cert, R_OK) == 0 && access(key, R_OK) == 0;
}

static ssize_t tls_read(void *ctx, void *buf, size_t len)
{
	ssize_t n;

	(void)ctx;
	n = gnutls_record_recv(session, buf, len);
	if (n >= 0)
		return n;
	if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
		errno = EAGAIN;
		return -1;
	}
	if (n == GNUTLS_E_PREMATURE_TERMINATION)
		return 0;
	errno = EIO;
	return -1;
}

static ssize_t tls_write(void *ctx, const void *buf, size_t len)
{
	ssize_t n;

	(void)ctx;
	n = gnutls_record_send(session, buf, len);
	if (n >= 0)
		return n;
	errno = (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) ? EAGAIN : EIO;
	return -1;
}

static size_t tls_pending(void *ctx)
{
	(void)ctx;
	return gnutls_record_check_pending(session);
}

static int init_once(void)
{
	int r;

	if (initialised)
		return 0;
	r = gnutls_global_init();
	if (r < 0) {
		log_event(LOG_ERR, "event=tls result=error error=\"%s\"", gnutls_strerror(r));
		return -1;
	}
	initialised = 1;
	return 0;
}

/* The session-ticket master key shared by every handler process, kept in
 * the database and made on first use. GnuTLS derives rotating keys from it
 * by time, so tickets from any process of the last rotation periods are
 * accepted. A new master key is made once a day; the previous one is kept
 * for a day so tickets issued just before the switch still resume. */
static int ticket_key_load(void)
{
	sqlite3_stmt *st;
	time_t now = time(NULL);
	int rc, have = 0;

	st = db_stmt("SELECT key FROM tls_ticket_keys WHERE created_at > ?1 ORDER BY created_at DESC LIMIT 1");
	if (!st)
		return -1;
	sqlite3_bind_int64(st, 1, (sqlite3_int64)(now - 86400));
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		int len = sqlite3_column_bytes(st, 0);
		const void *blob = sqlite3_column_blob(st, 0);
		if (len > 0 && blob) {
			ticket_key.data = gnutls_malloc((size_t)len);
			if (ticket_key.data) {
				memcpy(ticket_key.data, blob, (size_t)len);
				ticket_key.size = (unsigned)len;
				have = 1;
			}
		}
	}
	sqlite3_reset(st);
	if (have)
		return 0;

	if (gnutls_session_ticket_key_generate(&ticket_key) < 0)
		return -1;
	if (db_begin() < 0)
		return 0; /* this process still has a working key */
	st = db_stmt("INSERT OR IGNORE INTO tls_ticket_keys (created_at, key) VALUES (?1, ?2)");
	if (st) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)now);
		sqlite3_bind_blob(st, 2, ticket_key.data, (int)ticket_key.size, SQLITE_STATIC);
		sqlite3_step(st);
		sqlite3_reset(st);
	}
	st = db_stmt("DELETE FROM tls_ticket_keys WHERE created_at < ?1");
	if (st) {
		sqlite3_bind_int64(st, 1, (sqlite3_int64)(now - 2 * 86400));
		sqlite3_step(st);
		sqlite3_reset(st);
	}
	db_commit();
	return 0;
}

static void describe(char *info, size_t cap)
{
	const char *version = gnutls_protocol_get_name(gnutls_protocol_get_version(session));
	const char *suite = gnutls_ciphersuite_get(session);
	size_t bits = gnutls_cipher_get_key_size(gnutls_cipher_get(session)) * 8;

	if (version && strncmp(version, "TLS", 3) == 0)
		snprintf(info, cap, "TLSv%s with cipher %s (%zu/%zu bits)", version + 3,
			 suite ? suite : "unknown", bits, bits);
	else
		snprintf(info, cap, "%s with cipher %s (%zu/%zu bits)", version ? version : "TLS",
			 suite ? suite : "unknown", bits, bits);
}

static int handshake(struct io *io, char *info, size_t cap)
{
	int r;

	gnutls_transport_set_int2(session, io->rfd, io->wfd);
	gnutls_handshake_set_timeout(session, TLS_HANDSHAKE_TIMEOUT_MS);
	do {
		r = gnutls_handshake(session);
	} while (r < 0 && !gnutls_error_is_fatal(r));
	if (r < 0) {
		log_event(LOG_NOTICE, "event=tls result=handshake_failed error=\"%s\"", gnutls_strerror(r));
		gnutls_deinit(session);
		session = NULL;
		return -1;
	}
	transport.read = tls_read;
	transport.write = tls_write;
	transport.pending = tls_pending;
	transport.ctx = NULL;
	io_set_transport(io, &transport);
	describe(info, cap);
	log_event(LOG_INFO, "event=tls result=ok tls=\"%s\" resumed=%d", info,
		  gnutls_session_is_resumed(session) ? 1 : 0);
	return 0;
}

int tls_server_start(struct io *io, char *info, size_t cap)
{
	const char *err_pos = NULL;
	int r;

	io_discard_input(io);
	if (init_once() < 0)
		return -1;
	if (!creds) {
		if (gnutls_certificate_allocate_credentials(&creds) < 0)
			return -1;
		r = gnutls_certificate_set_x509_key_file2(creds, setting(SET_TLS_CERT),
							  setting(SET_TLS_KEY), GNUTLS_X509_FMT_PEM, NULL, 0);
		if (r < 0) {
			log_event(LOG_ERR, "event=tls result=bad_certificate cert=%s key=%s error=\"%s\"",
				  setting(SET_TLS_CERT), setting(SET_TLS_KEY), gnutls_strerror(r));
			gnutls_certificate_free_credentials(creds);
			creds = NULL;
			return -1;
		}
	}
	if (gnutls_init(&session, GNUTLS_SERVER | GNUTLS_NO_SIGNAL) < 0)
		return -1;
	r = gnutls_priority_set_direct(session, setting(SET_TLS_PRIORITY), &err_pos);
	if (r < 0) {
		log_event(LOG_ERR, "event=tls result=bad_priority tls_priority=\"%s\" error=\"%s\"",
			  setting(SET_TLS_PRIORITY), gnutls_strerror(r));
		gnutls_deinit(session);
		session = NULL;
		return -1;
	}
	gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, creds);
	gnutls_certificate_server_set_request(session, GNUTLS_CERT_IGNORE);
	if (ticket_key.size || ticket_key_load() == 0)
		gnutls_session_ticket_enable_server(session, &ticket_key);
	return handshake(io, info, cap);
}

int tls_client_start(struct io *io, const char *servername, int *verified, char *info,
		     size_t cap)
{
	unsigned status = 0;
	int r;

	*verified = 0;
	io_discard_input(io);
	if (init_once() < 0)
		return -1;
	if (!creds) {
		if (gnutls_certificate_allocate_credentials(&creds) < 0)
			return -1;
		gnutls_certificate_set_x509_system_trust(creds);
	}
	if (gnutls_init(&session, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL) < 0)
		return -1;
	if (gnutls_priority_set_direct(session, setting(SET_TLS_PRIORITY), NULL) < 0)
		gnutls_set_default_priority(session);
	gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, creds);
	if (servername && *servername)
		gnutls_server_name_set(session, GNUTLS_NAME_DNS, servername, strlen(servername));
	r = handshake(io, info, cap);
	if (r < 0)
		return -1;
	if (servername && *servername &&
	    gnutls_certificate_verify_peers3(session, servername, &status) == 0 && status == 0)
		*verified = 1;
	return 0;
}

void tls_end(struct io *io)
{
	if (!session)
		return;
	io_flush(io);
	gnutls_bye(session, GNUTLS_SHUT_WR);
	gnutls_deinit(session);
	session = NULL;
	io_set_transport(io, NULL);
}
