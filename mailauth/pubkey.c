/* RSA and Ed25519 signature checks with nettle's hogweed (pubkey.h). */
#include "pubkey.h"

#include <nettle/eddsa.h>
#include <nettle/rsa.h>

/* n and e into key, ready to use; 0, or -1 (and key cleared). */
static int rsa_key(struct rsa_public_key *key, const unsigned char *n, size_t nl,
		   const unsigned char *e, size_t el)
{
	rsa_public_key_init(key);
	mpz_import(key->n, nl, 1, 1, 1, 0, n);
	mpz_import(key->e, el, 1, 1, 1, 0, e);
	if (!rsa_public_key_prepare(key)) {
		rsa_public_key_clear(key);
		return -1;
	}
	return 0;
}

long pubkey_rsa_bits(const unsigned char *n, size_t nl, const unsigned char *e, size_t el)
{
	struct rsa_public_key key;
	long bits;

	if (rsa_key(&key, n, nl, e, el) < 0)
		return -1;
	bits = (long)mpz_sizeinbase(key.n, 2);
	rsa_public_key_clear(&key);
	return bits;
}

int pubkey_rsa_sha256_verify(const unsigned char *n, size_t nl, const unsigned char *e, size_t el,
			     const unsigned char digest[32], const unsigned char *sig, size_t sl)
{
	struct rsa_public_key key;
	mpz_t s;
	int ok;

	if (rsa_key(&key, n, nl, e, el) < 0)
		return 0;
	if (sl != key.size) {
		rsa_public_key_clear(&key);
		return 0;
	}
	mpz_init(s);
	mpz_import(s, sl, 1, 1, 1, 0, sig);
	ok = rsa_sha256_verify_digest(&key, digest, s) == 1;
	mpz_clear(s);
	rsa_public_key_clear(&key);
	return ok;
}

int pubkey_ed25519_verify(const unsigned char pub[32], const unsigned char *msg, size_t len,
			  const unsigned char sig[64])
{
	return ed25519_sha512_verify(pub, len, msg, sig) == 1;
}
