/* maildir_name_size and maildir_name_uid on any file name (Maildirs are
 * shared with Dovecot, so names are not only ours). Checked: a size is
 * found only before the flags' ':', is one a file can have, and is the
 * number written after ",S=" / ",W="; the unique part is a prefix of the
 * name holding neither ':' nor ','. */
#include "fuzz.h"

#include "maildir.h"

static void check_size(const char *name, char tag)
{
	unsigned long long v = 12345;
	char pat[4] = { ',', tag, '=', '\0' }, digits[32];
	const char *colon = strchr(name, ':');
	const char *p;

	if (!maildir_name_size(name, tag, &v)) {
		FUZZ_ASSERT(v == 12345);
		return;
	}
	FUZZ_ASSERT(v <= (unsigned long long)INT64_MAX);
	/* ",S=<v>" followed by the end, ',' or ':' lies before any ':' */
	snprintf(digits, sizeof(digits), "%llu", v);
	for (p = strstr(name, pat); p; p = strstr(p + 1, pat)) {
		const char *d = p + 3, *end;

		if (colon && p > colon)
			break;
		while (*d == '0' && d[1] >= '0' && d[1] <= '9')
			d++; /* leading zeros */
		end = d + strlen(digits);
		if (strncmp(d, digits, strlen(digits)) == 0 &&
		    (*end == '\0' || *end == ',' || *end == ':'))
			return;
	}
	fprintf(stderr, "size %llu found in \"%s\" is not written there\n", v, name);
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char uid[256], small[8];
	char *name;
	size_t n;

	if (size > 4096)
		return 0;
	name = fuzz_cstring(data, size);
	check_size(name, 'S');
	check_size(name, 'W');
	if (size > 0 && data[0]) /* any tag works the same way */
		check_size(name, (char)data[0]);

	n = maildir_name_uid(name, uid, sizeof(uid));
	FUZZ_ASSERT(n == strlen(uid) && n < sizeof(uid));
	FUZZ_ASSERT(strncmp(uid, name, n) == 0);
	FUZZ_ASSERT(!strchr(uid, ':') && !strchr(uid, ','));
	FUZZ_ASSERT(n == sizeof(uid) - 1 || name[n] == '\0' || name[n] == ':' || name[n] == ',');
	n = maildir_name_uid(name, small, sizeof(small));
	FUZZ_ASSERT(n < sizeof(small) && small[n] == '\0');
	free(name);
	return 0;
}
