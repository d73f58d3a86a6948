#include "tls.h"

#include <arpa/inet.h>
#include <dlfcn.h>
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
#include "tls-crypto.h"

/* GnuTLS is loaded with dlopen when a session first needs TLS: linked in,
 * its libraries and its load-time constructor (which initialises the whole
 * library) would cost every plain session about as much as the rest of
 * the handler's start-up together (see bench/README.md). */
#define GNUTLS_SONAME "libgnutls.so.30"
#define GNUTLS_FUNCS(X)                                                                       \
	X(gnutls_global_init) X(gnutls_record_recv) X(gnutls_record_send)                      \
	X(gnutls_record_check_pending) X(gnutls_session_ticket_key_generate)                   \
	X(gnutls_protocol_get_name) X(gnutls_protocol_get_version) X(gnutls_ciphersuite_get)   \
	X(gnutls_cipher_get_key_size) X(gnutls_cipher_get) X(gnutls_transport_set_int2)        \
	X(gnutls_handshake_set_timeout) X(gnutls_handshake) X(gnutls_error_is_fatal)           \
	X(gnutls_strerror) X(gnutls_deinit) X(gnutls_session_is_resumed)                       \
	X(gnutls_certificate_allocate_credentials) X(gnutls_certificate_set_x509_key_file2)    \
	X(gnutls_certificate_free_credentials) X(gnutls_init) X(gnutls_priority_set_direct)    \
	X(gnutls_credentials_set) X(gnutls_certificate_server_set_request)                     \
	X(gnutls_session_ticket_enable_server) X(gnutls_certificate_set_x509_system_trust)     \
	X(gnutls_set_default_priority) X(gnutls_server_name_set)                               \
	X(gnutls_certificate_verify_peers3) X(gnutls_bye) X(gnutls_alert_send)

/* What only the client (the queue runner) needs besides: its own trust
 * file, and verification against an address. */
#define GNUTLS_CLIENT_FUNCS(X)                                                                \
	X(gnutls_certificate_set_x509_trust_file) X(gnutls_certificate_verify_peers)

#define TLS_DECLARE(f) static __typeof__(f) *dl_##f;
GNUTLS_FUNCS(TLS_DECLARE)
GNUTLS_CLIENT_FUNCS(TLS_DECLARE)
/* Hashes and signatures for DKIM and SRS (tls-crypto.h). */
#define TLS_DEFINE(f) __typeof__(f) *dl_##f;
GNUTLS_CRYPTO_FUNCS(TLS_DEFINE)

static gnutls_session_t session;
static gnutls_certificate_credentials_t creds;
/* The client's trust: the system's CAs, and client_ca_file when not "". */
static gnutls_certificate_credentials_t client_creds;
static char client_ca_file[SETTING_VALUE_MAX];
static gnutls_datum_t ticket_key;
static struct io_transport transport;
static int initialised;
/* Client-initiated renegotiations refused in this session, and whether
 * GnuTLS still holds the ClientHello of the last one (refuse_renegotiation). */
static unsigned renegotiations_refused;
static int hello_to_drop;

/* Outbound TLS (the queue runner) is opportunistic: when the handshake
 * fails the mail goes in clear, so unless the admin set tls_priority the
 * client offers what the server side no longer does (CBC, static RSA)
 * rather than send in clear to an old MX. */
static const char client_priority[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2";

int tls_available(void)
{
	const char *cert = setting(SET_TLS_CERT), *key = setting(SET_TLS_KEY);

	return cert[0] && key[0] && access(cert, R_OK) == 0 && access(key, R_OK) == 0;
}

/* A TLS 1.2 peer that starts a new handshake inside the session (a
 * client's ClientHello, or a server's HelloRequest to the queue runner)
 * gets a no_renegotiation warning instead: renegotiation buys a mail
 * session nothing, and lets a client make the server redo the costly
 * half of a handshake at will ("Secure Client-Initiated Renegotiation",
 * a DoS finding of testssl.sh). TLS 1.3 has no renegotiation. RFC 5246
 * 7.2.2 leaves it to the peer whether to go on, so the session stays up
 * (OpenSSL clients then give up, a GnuTLS one may go on); a peer that
 * asks again is cut off. 0 to read on, -1 to end the session. */
static int refuse_renegotiation(void)
{
	renegotiations_refused++;
	log_event(LOG_NOTICE, "event=tls result=renegotiation_refused count=%u",
		  renegotiations_refused);
	if (dl_gnutls_alert_send(session, GNUTLS_AL_WARNING, GNUTLS_A_NO_RENEGOTIATION) < 0 ||
	    renegotiations_refused > TLS_RENEGOTIATIONS_REFUSED_MAX)
		return -1;
	/* A server's GnuTLS keeps the ClientHello in its record buffer; the
	 * next read drops it with GNUTLS_E_UNEXPECTED_PACKET, which is then
	 * no error. The buffer is read before the socket, so that read does
	 * not block. */
	hello_to_drop = dl_gnutls_record_check_pending(session) > 0;
	return 0;
}

static ssize_t tls_read(void *ctx, void *buf, size_t len)
{
	ssize_t n;

	(void)ctx;
	n = dl_gnutls_record_recv(session, buf, len);
	if (n >= 0)
		return n;
	if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
		errno = EAGAIN;
		return -1;
	}
	if (n == GNUTLS_E_UNEXPECTED_PACKET && hello_to_drop) {
		hello_to_drop = 0;
		errno = EAGAIN;
		return -1;
	}
	if (n == GNUTLS_E_REHANDSHAKE) {
		errno = refuse_renegotiation() == 0 ? EAGAIN : EIO;
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
	n = dl_gnutls_record_send(session, buf, len);
	if (n >= 0)
		return n;
	errno = (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) ? EAGAIN : EIO;
	return -1;
}

static size_t tls_pending(void *ctx)
{
	(void)ctx;
	return dl_gnutls_record_check_pending(session);
}

static int load_gnutls(void)
{
	void *h = dlopen(GNUTLS_SONAME, RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		log_event(LOG_ERR, "event=tls result=error error=\"cannot load %s: %s\"", GNUTLS_SONAME,
			  dlerror());
		return -1;
	}
#define TLS_LOAD(f)                                                                         \
	*(void **)(&dl_##f) = dlsym(h, #f);                                                 \
	if (!dl_##f) {                                                                      \
		log_event(LOG_ERR, "event=tls result=error error=\"%s lacks %s\"", GNUTLS_SONAME, #f); \
		return -1;                                                                  \
	}
	GNUTLS_FUNCS(TLS_LOAD)
	GNUTLS_CLIENT_FUNCS(TLS_LOAD)
	GNUTLS_CRYPTO_FUNCS(TLS_LOAD)
	return 0;
}

static int init_once(void)
{
	int r;

	if (initialised)
		return 0;
	if (load_gnutls() < 0)
		return -1;
	r = dl_gnutls_global_init();
	if (r < 0) {
		log_event(LOG_ERR, "event=tls result=error error=\"%s\"", dl_gnutls_strerror(r));
		return -1;
	}
	initialised = 1;
	return 0;
}

/* The newest ticket master key made within the last day, into ticket_key.
 * 1 found, 0 none, -1 trouble. */
static int ticket_key_fresh(time_t now)
{
	struct db_q *st;
	int rc, have = 0;

	st = db_stmt(SQL_TLS_TICKET_KEY_FRESH);
	if (!st)
		return -1;
	db_bind_int64(st, 1, now - 86400);
	rc = db_step(st);
	if (rc == DB_ROW) {
		size_t len = db_col_bytes(st, 0);
		const void *blob = db_col_blob(st, 0);
		if (len > 0 && blob) {
			/* ticket_key points here for the life of the process */
			static unsigned char stored[256];
			if (len <= sizeof(stored)) {
				memcpy(stored, blob, len);
				ticket_key.data = stored;
				ticket_key.size = (unsigned)len;
				have = 1;
			}
		}
	}
	db_reset(st);
	if (rc != DB_ROW && rc != DB_DONE)
		return -1;
	return have;
}

int tls_library_load(void)
{
	return init_once();
}

/* The session-ticket master key shared by every handler process, kept in
 * the database and made on first use. GnuTLS derives the keys that
 * encrypt tickets from it, rotating them by time, so a ticket issued by one
 * process resumes at any other. A new master key is made once a day (the
 * rotation); tickets made with the old one then get a full handshake.
 * Keys are made under the write lock, so processes starting together
 * agree on one. */
static int ticket_key_load(void)
{
	struct db_q *st;
	time_t now = time(NULL);
	int r;

	r = ticket_key_fresh(now);
	if (r != 0)
		return r > 0 ? 0 : -1;
	if (db_begin() < 0)
		return -1; /* no key: this session gets no tickets */
	r = ticket_key_fresh(now);
	if (r != 0) {
		db_rollback();
		return r > 0 ? 0 : -1;
	}
	if (dl_gnutls_session_ticket_key_generate(&ticket_key) < 0) {
		db_rollback();
		return -1;
	}
	st = db_stmt(SQL_TLS_TICKET_KEY_STORE);
	if (st) {
		db_bind_int64(st, 1, now);
		db_bind_blob(st, 2, ticket_key.data, ticket_key.size);
		db_step(st);
		db_reset(st);
	}
	/* Pruned on write: the table never grows. */
	db_prune(SQL_TLS_TICKET_KEYS_PRUNE, now - 2 * 86400);
	if (db_commit() < 0)
		log_event(LOG_WARNING, "event=tls result=ticket_key_not_stored");
	return 0;
}

static void describe(char *info, size_t cap)
{
	const char *version = dl_gnutls_protocol_get_name(dl_gnutls_protocol_get_version(session));
	const char *suite = dl_gnutls_ciphersuite_get(session);
	size_t bits = dl_gnutls_cipher_get_key_size(dl_gnutls_cipher_get(session)) * 8;

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

	renegotiations_refused = 0;
	hello_to_drop = 0;
	dl_gnutls_transport_set_int2(session, io->rfd, io->wfd);
	dl_gnutls_handshake_set_timeout(session, TLS_HANDSHAKE_TIMEOUT_MS);
	do {
		r = dl_gnutls_handshake(session);
	} while (r < 0 && !dl_gnutls_error_is_fatal(r));
	if (r < 0) {
		log_event(LOG_NOTICE, "event=tls result=handshake_failed error=\"%s\"", dl_gnutls_strerror(r));
		dl_gnutls_deinit(session);
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
		  dl_gnutls_session_is_resumed(session) ? 1 : 0);
	return 0;
}

int tls_server_prepare(void)
{
	int r;

	if (init_once() < 0)
		return -1;
	if (!creds) {
		if (dl_gnutls_certificate_allocate_credentials(&creds) < 0)
			return -1;
		r = dl_gnutls_certificate_set_x509_key_file2(creds, setting(SET_TLS_CERT),
							  setting(SET_TLS_KEY), GNUTLS_X509_FMT_PEM, NULL, 0);
		if (r < 0) {
			log_event(LOG_ERR, "event=tls result=bad_certificate cert=%s key=%s error=\"%s\"",
				  setting(SET_TLS_CERT), setting(SET_TLS_KEY), dl_gnutls_strerror(r));
			dl_gnutls_certificate_free_credentials(creds);
			creds = NULL;
			return -1;
		}
	}
	return 0;
}

int tls_server_start(struct io *io, char *info, size_t cap)
{
	const char *err_pos = NULL;
	int r;

	io_discard_input(io);
	if (tls_server_prepare() < 0)
		return -1;
	if (dl_gnutls_init(&session, GNUTLS_SERVER | GNUTLS_NO_SIGNAL) < 0)
		return -1;
	r = dl_gnutls_priority_set_direct(session, setting(SET_TLS_PRIORITY), &err_pos);
	if (r < 0) {
		log_event(LOG_ERR, "event=tls result=bad_priority tls_priority=\"%s\" error=\"%s\"",
			  setting(SET_TLS_PRIORITY), dl_gnutls_strerror(r));
		dl_gnutls_deinit(session);
		session = NULL;
		return -1;
	}
	dl_gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, creds);
	dl_gnutls_certificate_server_set_request(session, GNUTLS_CERT_IGNORE);
	if (ticket_key.size || ticket_key_load() == 0)
		dl_gnutls_session_ticket_enable_server(session, &ticket_key);
	return handshake(io, info, cap);
}

/* client_creds trusting the system's CAs and ca_file; made again when
 * ca_file changes. 0 or -1. */
static int client_trust(const char *ca_file)
{
	char safe[SETTING_VALUE_MAX * 4 + 8];
	int r;

	if (client_creds && strcmp(client_ca_file, ca_file) == 0)
		return 0;
	if (client_creds) {
		dl_gnutls_certificate_free_credentials(client_creds);
		client_creds = NULL;
	}
	if (dl_gnutls_certificate_allocate_credentials(&client_creds) < 0) {
		client_creds = NULL;
		return -1;
	}
	r = dl_gnutls_certificate_set_x509_system_trust(client_creds);
	if (r <= 0)
		log_event(LOG_WARNING, "event=tls result=no_system_trust error=\"%s\"",
			  r < 0 ? dl_gnutls_strerror(r) : "no certificates");
	if (ca_file[0]) {
		r = dl_gnutls_certificate_set_x509_trust_file(client_creds, ca_file, GNUTLS_X509_FMT_PEM);
		if (r <= 0)
			log_event(LOG_ERR, "event=tls result=bad_ca ca_file=\"%s\" error=\"%s\"",
				  log_printable(safe, sizeof(safe), ca_file, strlen(ca_file)),
				  r < 0 ? dl_gnutls_strerror(r) : "no certificate in it");
	}
	snprintf(client_ca_file, sizeof(client_ca_file), "%s", ca_file);
	return 0;
}

int tls_client_start(struct io *io, const char *servername, const char *ca_file, char *info,
		     size_t cap)
{
	io_discard_input(io);
	if (init_once() < 0 || client_trust(ca_file ? ca_file : "") < 0)
		return -1;
	if (dl_gnutls_init(&session, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL) < 0)
		return -1;
	if (dl_gnutls_priority_set_direct(session,
					  setting_is_set(SET_TLS_PRIORITY) ? setting(SET_TLS_PRIORITY)
									   : client_priority,
					  NULL) < 0)
		dl_gnutls_set_default_priority(session);
	dl_gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, client_creds);
	if (servername && *servername)
		dl_gnutls_server_name_set(session, GNUTLS_NAME_DNS, servername, strlen(servername));
	return handshake(io, info, cap);
}

/* The reasons in a verification status, as words for a log and a DSN. */
static void describe_status(unsigned status, const char *name, char *why, size_t cap)
{
	static const struct {
		unsigned bit;
		const char *text;
	} reasons[] = {
		{ GNUTLS_CERT_SIGNER_NOT_FOUND, "its issuer is not trusted" },
		{ GNUTLS_CERT_SIGNER_NOT_CA, "its issuer is not a CA" },
		{ GNUTLS_CERT_SIGNATURE_FAILURE, "its signature does not verify" },
		{ GNUTLS_CERT_INSECURE_ALGORITHM, "it is signed with an insecure algorithm" },
		{ GNUTLS_CERT_SIGNER_CONSTRAINTS_FAILURE, "its issuer may not issue it" },
		{ GNUTLS_CERT_NOT_ACTIVATED, "it is not valid yet" },
		{ GNUTLS_CERT_EXPIRED, "it has expired" },
		{ GNUTLS_CERT_REVOKED, "it is revoked" },
		{ GNUTLS_CERT_PURPOSE_MISMATCH, "it is not for a TLS server" },
	};
	size_t used = 0;

	why[0] = '\0';
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if ((status & reasons[i].bit) && used < cap)
			used += (size_t)snprintf(why + used, cap - used, "%s%s", used ? "; " : "",
						 reasons[i].text);
	if ((status & GNUTLS_CERT_UNEXPECTED_OWNER) && used < cap)
		used += (size_t)snprintf(why + used, cap - used, "%sit does not name %s",
					 used ? "; " : "", name);
	if (used == 0)
		snprintf(why, cap, "not trusted (GnuTLS status 0x%x)", status);
}

int tls_client_verify(const char *name, char *why, size_t cap)
{
	/* As gnutls_certificate_verify_peers3 does: a TLS server's key. */
	static char www_server[] = GNUTLS_KP_TLS_WWW_SERVER;
	unsigned char addr[16];
	unsigned status = 0;
	int r, v4;

	why[0] = '\0';
	if (!session) {
		snprintf(why, cap, "no TLS session");
		return 0;
	}
	v4 = inet_pton(AF_INET, name, addr) == 1;
	if (v4 || inet_pton(AF_INET6, name, addr) == 1) {
		/* An address is matched against the certificate's IP address
		 * entries only, never against a name or the common name. */
		gnutls_typed_vdata_st data[2] = {
			{ GNUTLS_DT_IP_ADDRESS, addr, v4 ? 4u : 16u },
			{ GNUTLS_DT_KEY_PURPOSE_OID, (unsigned char *)www_server, 0 },
		};
		r = dl_gnutls_certificate_verify_peers(session, data, 2, &status);
	} else {
		r = dl_gnutls_certificate_verify_peers3(session, name, &status);
	}
	if (r < 0) {
		snprintf(why, cap, "%s", dl_gnutls_strerror(r));
		return 0;
	}
	if (status == 0)
		return 1;
	describe_status(status, name, why, cap);
	return 0;
}

void tls_end(struct io *io)
{
	if (!session)
		return;
	io_flush(io);
	dl_gnutls_bye(session, GNUTLS_SHUT_WR);
	dl_gnutls_deinit(session);
	session = NULL;
	io_set_transport(io, NULL);
}
