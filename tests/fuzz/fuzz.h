/* What every libFuzzer target here shares: the entry points (declared, for
 * -Wmissing-prototypes) and a check that aborts with a message, so that a
 * broken invariant is a crash libFuzzer keeps as a reproducer. */
#ifndef POSTAGE_FUZZ_H
#define POSTAGE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_ASSERT(cond)                                                                  \
	do {                                                                               \
		if (!(cond)) {                                                             \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, \
				#cond);                                                    \
			abort();                                                           \
		}                                                                          \
	} while (0)

/* A NUL-terminated copy of the input (free it); a NUL inside ends it
 * early, as it would for a C string from the wire. */
static inline char *fuzz_cstring(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1);

	if (!s)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	return s;
}

#endif
