/* Public-key signature checks for DKIM (dkim.c): RSA PKCS#1 v1.5 with
 * SHA-256 and Ed25519, with nettle's hogweed (and GMP), linked
 * statically. pubkey.c is built apart from the rest of shared/: GMP's
 * gmp.h includes the C library's <limits.h>, which our limits.h would
 * hide on the include path; so this header uses plain C types only. */
#ifndef POSTAGE_PUBKEY_H
#define POSTAGE_PUBKEY_H

#include <stddef.h>

/* The size in bits of the RSA key with modulus n and exponent e
 * (big-endian octets), or -1 when nettle cannot use it. */
long pubkey_rsa_bits(const unsigned char *n, size_t nl, const unsigned char *e, size_t el);

/* 1 when sig (sl octets, as long as the modulus, RFC 8017 8.2.2) is an
 * RSASSA-PKCS1-v1_5 signature of the SHA-256 digest by that key, else 0. */
int pubkey_rsa_sha256_verify(const unsigned char *n, size_t nl, const unsigned char *e, size_t el,
			     const unsigned char digest[32], const unsigned char *sig, size_t sl);

/* 1 when sig (64 octets) is pub's (32 octets) Ed25519 signature of
 * msg, else 0. */
int pubkey_ed25519_verify(const unsigned char pub[32], const unsigned char *msg, size_t len,
			  const unsigned char sig[64]);

#endif
