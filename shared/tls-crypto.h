/* GnuTLS's hashes, MACs and public-key signatures, reached through the
 * same dlopen as TLS (tls.c), for DKIM (dkim.c) and SRS (srs.c). Call
 * tls_library_load() first; the dl_ pointers are set only when it
 * returned 0. A handler that never signs, verifies or rewrites a sender
 * never loads GnuTLS. */
#ifndef POSTAGE_TLS_CRYPTO_H
#define POSTAGE_TLS_CRYPTO_H

#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#define GNUTLS_CRYPTO_FUNCS(X)                                                               \
	X(gnutls_hash_init) X(gnutls_hash) X(gnutls_hash_deinit) X(gnutls_hash_fast)          \
	X(gnutls_hmac_fast) X(gnutls_free) X(gnutls_strerror_name)                                                    \
	X(gnutls_privkey_init) X(gnutls_privkey_import_x509_raw)                              \
	X(gnutls_privkey_get_pk_algorithm) X(gnutls_privkey_sign_data2)                       \
	X(gnutls_privkey_deinit)                                                              \
	X(gnutls_pubkey_init) X(gnutls_pubkey_import) X(gnutls_pubkey_import_rsa_raw)         \
	X(gnutls_pubkey_import_ecc_raw) X(gnutls_pubkey_get_pk_algorithm)                     \
	X(gnutls_pubkey_verify_data2) X(gnutls_pubkey_deinit)

#define TLS_CRYPTO_EXTERN(f) extern __typeof__(f) *dl_##f;
GNUTLS_CRYPTO_FUNCS(TLS_CRYPTO_EXTERN)

/* Loads and initialises GnuTLS once. 0, or -1 (logged). */
int tls_library_load(void);

#endif
