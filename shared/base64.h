#ifndef POSTAGE_BASE64_H
#define POSTAGE_BASE64_H

/* RFC 4648 base64, the standard alphabet with padding: SASL lines in
 * and out (RFC 4954, RFC 5034), DKIM keys, signatures and body hashes
 * (RFC 6376), a new SRS secret, and a list's UTF-8 subject prefix as an
 * RFC 2047 encoded word. */

#include <stddef.h>

/* Decodes in (NUL-terminated) into out (cap bytes, NUL appended).
 * Returns the length, or -1 when malformed or too long. */
long base64_decode(const char *in, char *out, size_t cap);

/* Encodes len bytes into out (cap bytes, NUL-terminated); returns the
 * characters written, stopping at a whole quantum that fits. */
size_t base64_encode(const void *in, size_t len, char *out, size_t cap);
#endif
