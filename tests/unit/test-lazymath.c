/* shared/lazymath.c: the libm functions that SQLite's SQL math functions
 * call are defined in the executable and load libm on first use. Each must
 * reach the real function (the right one, with its arguments in order),
 * directly and through SQLite. That the handlers no longer depend on libm
 * is checked by lazymath-needed.sh. */
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>

#include "check.h"

typedef double (*fn1)(double);
typedef double (*fn2)(double, double);

static int near(double want, double got)
{
	return fabs(want - got) <= 1e-12 * (fabs(want) > 1 ? fabs(want) : 1);
}

static void test_direct(void)
{
	/* The values are the functions' mathematical ones, to 16 digits;
	 * the pointers keep the compiler from folding the calls. */
	static const struct {
		const char *name;
		fn1 f;
		double x, want;
	} one[] = {
		{ "acos", acos, 0.5, 1.0471975511965979 },
		{ "acosh", acosh, 2.0, 1.3169578969248166 },
		{ "asin", asin, 0.5, 0.52359877559829887 },
		{ "asinh", asinh, 1.0, 0.88137358701954303 },
		{ "atan", atan, 1.0, 0.78539816339744831 },
		{ "atanh", atanh, 0.5, 0.54930614433405489 },
		{ "cos", cos, 1.0, 0.54030230586813977 },
		{ "cosh", cosh, 1.0, 1.5430806348152437 },
		{ "exp", exp, 1.0, 2.7182818284590452 },
		{ "log", log, 10.0, 2.3025850929940457 },
		{ "sin", sin, 1.0, 0.84147098480789651 },
		{ "sinh", sinh, 1.0, 1.1752011936438014 },
		{ "sqrt", sqrt, 2.0, 1.4142135623730951 },
		{ "tan", tan, 1.0, 1.5574077246549022 },
		{ "tanh", tanh, 1.0, 0.76159415595576489 },
		{ "trunc", trunc, -2.75, -2.0 },
	};
	static const struct {
		const char *name;
		fn2 f;
		double x, y, want;
	} two[] = {
		{ "atan2", atan2, 1.0, -1.0, 2.3561944901923449 },
		{ "fmod", fmod, 7.5, 2.0, 1.5 },
		{ "pow", pow, 2.0, 10.0, 1024.0 },
	};
	volatile fn1 f1;
	volatile fn2 f2;

	for (size_t i = 0; i < sizeof(one) / sizeof(one[0]); i++) {
		f1 = one[i].f;
		CHECK_TRUE(one[i].name, near(one[i].want, f1(one[i].x)));
	}
	for (size_t i = 0; i < sizeof(two) / sizeof(two[0]); i++) {
		f2 = two[i].f;
		CHECK_TRUE(two[i].name, near(two[i].want, f2(two[i].x, two[i].y)));
	}
	f1 = sqrt;
	CHECK_TRUE("sqrt(-1) is NaN", isnan(f1(-1.0)));
}

static void test_sql(void)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	const char *sql = "SELECT sqrt(16), pow(2, 10), trunc(-2.5), atan2(0, -1), ln(exp(3))";

	CHECK_INT("open", SQLITE_OK, sqlite3_open(":memory:", &db));
	if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
		/* a SQLite built without the math functions has no libm to load */
		fprintf(stderr, "lazymath: no SQL math functions: %s\n", sqlite3_errmsg(db));
		sqlite3_close(db);
		return;
	}
	CHECK_INT(sql, SQLITE_ROW, sqlite3_step(st));
	CHECK_TRUE("sqrt(16)", near(4.0, sqlite3_column_double(st, 0)));
	CHECK_TRUE("pow(2, 10)", near(1024.0, sqlite3_column_double(st, 1)));
	CHECK_TRUE("trunc(-2.5)", near(-2.0, sqlite3_column_double(st, 2)));
	CHECK_TRUE("atan2(0, -1)", near(3.14159265358979324, sqlite3_column_double(st, 3)));
	CHECK_TRUE("ln(exp(3))", near(3.0, sqlite3_column_double(st, 4)));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

int main(void)
{
	test_sql();
	test_direct();
	return check_finish("lazymath");
}
