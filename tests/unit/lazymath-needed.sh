#!/bin/sh
# Each executable given must not list libm among the libraries it needs
# (shared/lazymath.c loads it only when a math function is called), and
# must still need libc, so that an empty readelf answer cannot pass.
set -u
status=0
for exe in "$@"; do
	needed=$(readelf -d "$exe" | sed -n 's/.*(NEEDED).*\[\(.*\)\].*/\1/p')
	case " $(echo $needed) " in
	*" libc.so."*) ;;
	*) echo "$exe: no libc among NEEDED ($needed)" >&2; status=1 ;;
	esac
	case " $(echo $needed) " in
	*" libm.so."*) echo "$exe: needs libm at start-up" >&2; status=1 ;;
	esac
done
exit $status
