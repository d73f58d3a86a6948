/* What a bounce to a list's -bounces@ address says: the RFC 3464 scan
 * (list_dsn_scan) over any bytes, and the List-Id comparison over the
 * same bytes as a field value. Checked: counts are consistent (failed
 * within the Action fields, recipients within the failed and within
 * LIST_DSN_RECIPIENTS_MAX), each recipient is an address in normal form
 * and distinct; the List-Id match answers 0 or 1, and 1 only when the id
 * stands in the value between angle brackets. */
#include "fuzz.h"

#include <strings.h>

#include "address.h"
#include "list.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct list_dsn d;
	const char *id = "team.example.org";
	int m;

	if (size > LIST_BODY_SCAN_MAX)
		return 0;
	list_dsn_scan((const char *)data, size, &d);
	FUZZ_ASSERT(d.failed <= d.actions);
	FUZZ_ASSERT(d.nrcpts <= d.failed && d.nrcpts <= LIST_DSN_RECIPIENTS_MAX);
	for (size_t i = 0; i < d.nrcpts; i++) {
		struct address a;
		char norm[ADDRESS_PATH_MAX + 1];

		FUZZ_ASSERT(address_parse_plain(d.rcpts[i], 1, &a) == ADDRESS_OK);
		address_format(&a, norm, sizeof(norm));
		FUZZ_ASSERT(strcmp(norm, d.rcpts[i]) == 0);
		for (size_t k = 0; k < i; k++)
			FUZZ_ASSERT(strcasecmp(d.rcpts[k], d.rcpts[i]) != 0);
	}
	m = list_id_matches((const char *)data, size, id);
	FUZZ_ASSERT(m == 0 || m == 1);
	if (m) {
		const char *hit = memmem(data, size, "<", 1);
		FUZZ_ASSERT(hit != NULL);
		FUZZ_ASSERT(size >= strlen(id) + 2);
	}
	return 0;
}
