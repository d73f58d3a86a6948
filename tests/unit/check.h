/* A tiny assertion kit for the unit tests. Every check names what it was
 * given, what it expected and what it got, so a failure reads on its own:
 *
 *   test-address.c:120: given "<a..b@x>": expected 1 (ADDRESS_SYNTAX), got 0
 *
 * Bytes that are not printable ASCII are shown as \xNN. A test file's
 * main() ends with `return check_finish("address");`. */
#ifndef POSTAGE_TEST_CHECK_H
#define POSTAGE_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failed;
static int check_run;

/* Prints len bytes of s, quoted and escaped, to stderr. */
static inline void check_show(const char *s, size_t len)
{
	if (!s) {
		fputs("(null)", stderr);
		return;
	}
	fputc('"', stderr);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\r')
			fputs("\\r", stderr);
		else if (c == '\n')
			fputs("\\n", stderr);
		else if (c == '\t')
			fputs("\\t", stderr);
		else if (c == '"' || c == '\\')
			fprintf(stderr, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			fprintf(stderr, "\\x%02x", c);
		else
			fputc(c, stderr);
	}
	fputc('"', stderr);
}

static inline void check_head(const char *file, int line, const char *given, size_t glen)
{
	fprintf(stderr, "%s:%d: given ", file, line);
	check_show(given, glen);
	fputs(": ", stderr);
}

static inline int check_int_at(const char *file, int line, const char *given, size_t glen,
			       long long expected, long long got, const char *what)
{
	check_run++;
	if (expected == got)
		return 1;
	check_failed++;
	check_head(file, line, given, glen);
	fprintf(stderr, "%s%sexpected %lld, got %lld\n", what ? what : "", what ? ": " : "",
		expected, got);
	return 0;
}

static inline int check_mem_at(const char *file, int line, const char *given, size_t glen,
			       const char *expected, size_t elen, const char *got, size_t len,
			       const char *what)
{
	check_run++;
	if (expected && got && elen == len && memcmp(expected, got, len) == 0)
		return 1;
	if (!expected && !got)
		return 1;
	check_failed++;
	check_head(file, line, given, glen);
	fprintf(stderr, "%s%sexpected ", what ? what : "", what ? ": " : "");
	check_show(expected, elen);
	fputs(", got ", stderr);
	check_show(got, len);
	fputc('\n', stderr);
	return 0;
}

static inline int check_str_at(const char *file, int line, const char *given,
			       const char *expected, const char *got, const char *what)
{
	return check_mem_at(file, line, given, strlen(given), expected,
			    expected ? strlen(expected) : 0, got, got ? strlen(got) : 0, what);
}

/* given is a NUL-terminated description of the input (often the input). */
#define CHECK_INT(given, expected, got) \
	check_int_at(__FILE__, __LINE__, (given), strlen(given), (long long)(expected), \
		     (long long)(got), #got)
#define CHECK_STR(given, expected, got) \
	check_str_at(__FILE__, __LINE__, (given), (expected), (got), #got)
/* For inputs and outputs that hold NUL or that are not NUL-terminated. */
#define CHECK_INT_N(given, glen, expected, got) \
	check_int_at(__FILE__, __LINE__, (given), (glen), (long long)(expected), (long long)(got), #got)
#define CHECK_MEM_N(given, glen, expected, elen, got, len) \
	check_mem_at(__FILE__, __LINE__, (given), (glen), (expected), (elen), (got), (len), #got)
#define CHECK_TRUE(given, cond) CHECK_INT(given, 1, !!(cond))

/* A step the test itself needs (a temp dir, a pipe): when it fails the
 * test cannot go on, which is a failure, never a pass. */
#define REQUIRE(cond)                                                                   \
	do {                                                                            \
		if (!(cond)) {                                                          \
			fprintf(stderr, "%s:%d: setup failed: %s\n", __FILE__, __LINE__, \
				#cond);                                                 \
			exit(1);                                                        \
		}                                                                       \
	} while (0)

static inline int check_finish(const char *module)
{
	if (check_run == 0) {
		fprintf(stderr, "test-%s: no checks ran\n", module);
		return 1;
	}
	fprintf(stderr, "test-%s: %d checks, %d failed\n", module, check_run, check_failed);
	return check_failed ? 1 : 0;
}

#endif
