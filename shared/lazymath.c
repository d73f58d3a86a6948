/* SQLite's SQL math functions (sqrt(), pow(), sin() ...) come from libm.
 * postage never calls them, but the static libsqlite3.a refers to them, so
 * every handler would map libm.so at start-up: one more library for the
 * dynamic loader to open, map and relocate per connection, and about
 * 0.3 MB more resident per process (bench/README.md). These definitions
 * stand in for libm's in the executable: the first call loads libm with
 * dlopen and forwards to the real function, so the functions still give
 * the right answers if a query or an administrator's trigger uses them.
 * If libm cannot be loaded they return NaN with errno set to ENOSYS.
 *
 * This file is compiled into each executable (not into libpostage.a, from
 * which the linker would take libm's definitions first). The list follows
 * the undefined libm symbols of Debian's libsqlite3.a; if SQLite starts to
 * need another one, the linker keeps libm and tests/unit/lazymath-needed.sh says
 * which handler depends on it. */
#include <dlfcn.h>
#include <errno.h>
#include <gnu/lib-names.h>
#include <math.h>
#include <stddef.h>

static void *libm_symbol(const char *name)
{
	static void *libm;

	if (!libm)
		libm = dlopen(LIBM_SO, RTLD_NOW | RTLD_LOCAL);
	return libm ? dlsym(libm, name) : NULL;
}

#define LAZY_MATH1(fn)                                         \
	double fn(double x)                                    \
	{                                                      \
		static double (*real)(double);                 \
		if (!real)                                     \
			*(void **)(&real) = libm_symbol(#fn);  \
		if (!real) {                                   \
			errno = ENOSYS;                        \
			return NAN;                            \
		}                                              \
		return real(x);                                \
	}

#define LAZY_MATH2(fn)                                         \
	double fn(double x, double y)                          \
	{                                                      \
		static double (*real)(double, double);         \
		if (!real)                                     \
			*(void **)(&real) = libm_symbol(#fn);  \
		if (!real) {                                   \
			errno = ENOSYS;                        \
			return NAN;                            \
		}                                              \
		return real(x, y);                             \
	}

LAZY_MATH1(acos)
LAZY_MATH1(acosh)
LAZY_MATH1(asin)
LAZY_MATH1(asinh)
LAZY_MATH1(atan)
LAZY_MATH1(atanh)
LAZY_MATH1(cos)
LAZY_MATH1(cosh)
LAZY_MATH1(exp)
LAZY_MATH1(log)
LAZY_MATH1(sin)
LAZY_MATH1(sinh)
LAZY_MATH1(sqrt)
LAZY_MATH1(tan)
LAZY_MATH1(tanh)
LAZY_MATH1(trunc)
LAZY_MATH2(atan2)
LAZY_MATH2(fmod)
LAZY_MATH2(pow)
