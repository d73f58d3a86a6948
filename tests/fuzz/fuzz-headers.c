/* A message's header section as a client sends it: the header reader,
 * the From: domains, DKIM's tag lists and header canonicalisation.
 * Checked: fields lie inside the buffer, in order, at their offsets;
 * domains are lower-case, valid and distinct (at most the number asked
 * for); tag values lie inside the text;
 * canonical header fields are one line ending in CRLF with the name
 * lower-cased (relaxed). */
#include "fuzz.h"

#include <ctype.h>
#include <sys/mman.h>
#include <unistd.h>

#include "address.h"
#include "dkim.h"
#include "headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char canon[2 * 65536];
	char domains[4][ADDRESS_DOMAIN_MAX + 1];
	static char boxes[4][ADDRESS_PATH_MAX + 1];
	struct header_block hb;
	int fd;

	if (size > 65536)
		return 0;
	fd = memfd_create("fuzz-headers", 0);
	if (fd < 0)
		abort();
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	if (header_block_read(fd, 0, (off_t)size, &hb) == 0) {
		off_t last = -1;

		FUZZ_ASSERT(hb.body >= 0 && hb.body <= (off_t)size);
		for (size_t i = 0; i < hb.n; i++) {
			const struct header_field *f = &hb.fields[i];
			struct tag tags[TAGS_MAX];
			size_t nt, nd, unchecked;
			long n;

			FUZZ_ASSERT(f->offset > last && f->offset + (off_t)f->raw_len <= (off_t)size);
			FUZZ_ASSERT(memcmp(data + f->offset, f->raw, f->raw_len) == 0);
			FUZZ_ASSERT(f->value >= f->raw && f->value + f->value_len <= f->raw + f->raw_len);
			FUZZ_ASSERT(f->name_len > 0 && f->name_len < f->raw_len);
			last = f->offset;

			nd = header_address_domains(f, domains, 4, &unchecked);
			FUZZ_ASSERT(nd <= 4);
			FUZZ_ASSERT(unchecked <= f->value_len);
			for (size_t k = 0; k < nd; k++) {
				FUZZ_ASSERT(address_domain_valid(domains[k], strlen(domains[k]), 1));
				for (const char *c = domains[k]; *c; c++)
					FUZZ_ASSERT(!isupper((unsigned char)*c));
				for (size_t j = 0; j < k; j++)
					FUZZ_ASSERT(strcmp(domains[j], domains[k]) != 0);
			}
			/* header_mailboxes: each a local@domain with a valid
			 * domain, nul-terminated within its slot. */
			{
				int malformed = 0;
				size_t nb = header_mailboxes(f, boxes, 4, &malformed);

				FUZZ_ASSERT(nb <= 4);
				for (size_t k = 0; k < nb; k++) {
					const char *at = strrchr(boxes[k], '@');
					FUZZ_ASSERT(strlen(boxes[k]) <= ADDRESS_PATH_MAX);
					FUZZ_ASSERT(at && at > boxes[k] &&
						    address_domain_valid(at + 1, strlen(at + 1), 1));
				}
			}
			if (tags_parse(f->value, f->value_len, tags, &nt) == 0) {
				FUZZ_ASSERT(nt <= TAGS_MAX);
				for (size_t k = 0; k < nt; k++)
					FUZZ_ASSERT(tags[k].value >= f->value &&
						    tags[k].value + tags[k].len <= f->value + f->value_len);
			}
			n = dkim_canon_header(1, f->raw, f->raw_len, canon, sizeof(canon));
			if (n >= 0) {
				FUZZ_ASSERT(n >= 3 && canon[n - 2] == '\r' && canon[n - 1] == '\n');
				FUZZ_ASSERT(memchr(canon, '\n', (size_t)n - 1) == NULL);
				for (size_t k = 0; k < f->name_len; k++)
					FUZZ_ASSERT(!isupper((unsigned char)canon[k]));
			}
		}
		header_block_free(&hb);
	}
	close(fd);
	return 0;
}
