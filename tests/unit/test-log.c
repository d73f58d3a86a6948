/* shared/log.c: log_printable (client text made safe for a log line) and
 * log_event's plain-line output to $POSTAGE_LOG_FILE. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "log.h"
#include "testdir.h"

static void test_printable(void)
{
	static const struct {
		const char *in;
		size_t len, cap;
		const char *want;
	} cases[] = {
		{ "abc", 3, 64, "abc" },
		{ "a b=c", 5, 64, "a b=c" },
		{ "a\nb", 3, 64, "a\\x0ab" },
		{ "a\r\nb", 4, 64, "a\\x0d\\x0ab" },
		{ "\"q\\", 3, 64, "\\x22q\\x5c" },
		{ "\x7f\x01\t", 3, 64, "\\x7f\\x01\\x09" },
		{ "caf\xc3\xa9", 5, 64, "caf\\xc3\\xa9" },
		{ "a\0b", 3, 64, "a\\x00b" },
		{ "", 0, 64, "" },
		{ "aaaaaaaaaaaaaaaaaaaa", 20, 10, "aaaaaa..." },
		{ "\n\n\n\n\n\n", 6, 12, "\\x0a\\x0a..." },
	};
	char out[64];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(out, 'X', sizeof(out));
		log_printable(out, cases[i].cap, cases[i].in, cases[i].len);
		CHECK_STR(cases[i].in, cases[i].want, out);
		CHECK_TRUE(cases[i].in, strlen(out) < cases[i].cap);
	}
	/* whatever comes in, what goes out is printable and fits */
	{
		char in[256], big[300];

		for (int i = 0; i < 256; i++)
			in[i] = (char)i;
		for (size_t cap = 1; cap < sizeof(big); cap += 7) {
			char given[32];
			int ok = 1;

			snprintf(given, sizeof(given), "all bytes, cap %zu", cap);
			memset(big, 'X', sizeof(big));
			log_printable(big, cap, in, sizeof(in));
			CHECK_TRUE(given, strlen(big) < cap);
			for (const char *c = big; *c; c++)
				ok &= (unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f;
			CHECK_TRUE(given, ok);
			CHECK_INT(given, 'X', big[cap]); /* nothing past the cap */
		}
	}
}

static void test_event(const char *dir)
{
	char path[4200], buf[8192], want[512], longv[3000];
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "%s/log", dir);
	REQUIRE(setenv("POSTAGE_LOG_FILE", path, 1) == 0);
	log_init("postage-test");
	log_set_session("0123456789ABCDEF");
	log_event(LOG_NOTICE, "event=test a=%d b=\"%s\"", 5, "x y");
	log_set_session("");
	log_event(LOG_ERR, "event=second");
	memset(longv, 'v', sizeof(longv) - 1);
	longv[sizeof(longv) - 1] = '\0';
	log_event(LOG_INFO, "event=long v=%s", longv);

	fd = open(path, O_RDONLY | O_CLOEXEC);
	REQUIRE(fd >= 0);
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	REQUIRE(n > 0);
	buf[n] = '\0';
	snprintf(want, sizeof(want),
		 "postage-test[%d]: <5> session=0123456789ABCDEF event=test a=5 b=\"x y\"\n"
		 "postage-test[%d]: <3> event=second\n",
		 (int)getpid(), (int)getpid());
	CHECK_MEM_N("two events", 10, want, strlen(want), buf, strlen(want) < (size_t)n ? strlen(want) : (size_t)n);
	/* a long event is cut, and still one line */
	{
		const char *third = buf + strlen(want);
		const char *nl = strchr(third, '\n');

		CHECK_TRUE("long event", strncmp(third, "postage-test[", 13) == 0);
		CHECK_TRUE("long event: one line", nl != NULL && nl[1] == '\0');
		CHECK_TRUE("long event: cut", nl && (size_t)(nl - third) < sizeof(longv));
	}
}

int main(void)
{
	const char *dir = testdir_make("log");

	test_printable();
	test_event(dir);
	return check_finish("log");
}
