/* The machine's ceiling for a per-connection handler: the cheapest program
 * a supervisor can start for a connection. It writes a greeting on fd 1
 * and exits. bench/run builds it with gcc -static -O2. */
#include <unistd.h>

int main(void)
{
	static const char greeting[] = "220 ceiling ready\r\n";

	return write(1, greeting, sizeof(greeting) - 1) == sizeof(greeting) - 1 ? 0 : 1;
}
