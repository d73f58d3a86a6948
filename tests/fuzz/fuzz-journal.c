/* The delivery journal's reader (shared/journal.c) on any bytes: the queue
 * runner reads spool_dir/links/<id> after a handler died while writing or
 * renaming it, so a torn or garbled file must be refused whole, never read
 * in part. Checked beyond "no crash": what is accepted names no file name
 * with a '/' (journal_parse aborts otherwise); the same bytes give the same
 * answer twice; and a journal cut short is never accepted. */
#include "fuzz.h"

#include "journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t nids = 0, ncopies = 0, nids2 = 0, ncopies2 = 0;
	int r;

	if (size > 65536)
		return 0;
	r = journal_parse((const char *)data, size, &nids, &ncopies);
	FUZZ_ASSERT(journal_parse((const char *)data, size, &nids2, &ncopies2) == r);
	if (r != 0)
		return 0;
	FUZZ_ASSERT(nids == nids2 && ncopies == ncopies2);
	/* A whole journal ends with "E\0": any shorter prefix is torn. */
	FUZZ_ASSERT(size >= 2 && data[size - 2] == 'E' && data[size - 1] == '\0');
	for (size_t cut = size > 64 ? size - 64 : 0; cut < size; cut++)
		FUZZ_ASSERT(journal_parse((const char *)data, cut, &nids2, &ncopies2) != 0);
	return 0;
}
