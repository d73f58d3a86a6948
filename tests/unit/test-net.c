/* shared/net.c: CIDR matching for relay_networks (IPv4, IPv6, IPv4-mapped
 * IPv6; /0 and malformed networks refused), the throttle key (/64 for
 * IPv6), and the peer of fd 0 (pipes, loopback sockets). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "net.h"

static const struct {
	const char *ip, *network;
	int want;
} cidr_cases[] = {
	/* IPv4 hosts and networks */
	{ "192.0.2.1", "192.0.2.1", 1 },
	{ "192.0.2.2", "192.0.2.1", 0 },
	{ "192.0.2.1", "192.0.2.1/32", 1 },
	{ "192.0.2.0", "192.0.2.1/32", 0 },
	{ "192.0.2.200", "192.0.2.0/24", 1 },
	{ "192.0.3.1", "192.0.2.0/24", 0 },
	{ "192.0.1.255", "192.0.2.0/24", 0 },
	{ "10.255.255.255", "10.0.0.0/8", 1 },
	{ "11.0.0.0", "10.0.0.0/8", 0 },
	{ "9.255.255.255", "10.0.0.0/8", 0 },
	{ "192.0.2.129", "192.0.2.128/25", 1 },
	{ "192.0.2.127", "192.0.2.128/25", 0 },
	{ "172.31.255.1", "172.16.0.0/12", 1 },
	{ "172.32.0.1", "172.16.0.0/12", 0 },
	{ "1.2.3.4", "0.0.0.0/1", 1 },
	{ "200.0.0.1", "0.0.0.0/1", 0 },
	{ "10.1.2.3", "10.1.2.2/31", 1 },
	{ "10.1.2.4", "10.1.2.2/31", 0 },
	{ "10.9.9.9", "10.1.2.3/8", 1 }, /* host bits in the network are ignored */
	{ "127.0.0.1", "127.0.0.0/8", 1 },
	/* IPv6 */
	{ "2001:db8::1", "2001:db8::/32", 1 },
	{ "2001:db8:ffff:ffff::1", "2001:db8::/32", 1 },
	{ "2001:db9::1", "2001:db8::/32", 0 },
	{ "2001:DB8::1", "2001:db8::1", 1 },
	{ "2001:db8::2", "2001:db8::1", 0 },
	{ "2001:db8::1", "2001:db8::1/128", 1 },
	{ "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1", 1 },
	{ "::1", "::1", 1 },
	{ "::2", "::1", 0 },
	{ "fe80::1", "fe80::/10", 1 },
	{ "febf::1", "fe80::/10", 1 },
	{ "fec0::1", "fe80::/10", 0 },
	{ "2001:db8:0:0:8000::", "2001:db8::/65", 0 },
	{ "2001:db8:0:0:7fff::", "2001:db8::/65", 1 },
	{ "2001:db8::1", "2001:db8::/127", 1 },
	{ "2001:db8::2", "2001:db8::/127", 0 },
	/* IPv4-mapped IPv6 is IPv4 */
	{ "::ffff:10.1.2.3", "10.0.0.0/8", 1 },
	{ "::FFFF:10.1.2.3", "10.0.0.0/8", 1 },
	{ "::ffff:11.1.2.3", "10.0.0.0/8", 0 },
	{ "10.1.2.3", "::ffff:10.1.2.3", 1 },
	{ "10.1.2.4", "::ffff:10.1.2.3", 0 },
	{ "::ffff:a01:203", "10.1.2.3", 1 },
	/* the families do not mix otherwise */
	{ "10.1.2.3", "2001:db8::/32", 0 },
	{ "2001:db8::1", "10.0.0.0/8", 0 },
	{ "::a01:203", "10.0.0.0/8", 0 }, /* IPv4-compatible is not mapped */
	{ "::", "0.0.0.0/1", 0 },
	/* a client address that is not one never matches */
	{ "", "10.0.0.0/8", 0 },
	{ "not-an-ip", "10.0.0.0/8", 0 },
	{ "010.0.0.1", "10.0.0.0/8", 0 },
	{ "10.0.0.1 ", "10.0.0.0/8", 0 },
	{ "10.0.0.1/8", "10.0.0.0/8", 0 },
	/* /0 would trust the world: refused as malformed */
	{ "1.2.3.4", "0.0.0.0/0", -1 },
	{ "::1", "::/0", -1 },
	{ "10.0.0.1", "10.0.0.0/0", -1 },
	{ "::ffff:1.2.3.4", "::ffff:0.0.0.0/0", -1 },
	/* malformed networks */
	{ "10.0.0.1", "10.0.0.0/33", -1 },
	{ "2001:db8::1", "2001:db8::/129", -1 },
	{ "10.0.0.1", "10.0.0.0/", -1 },
	{ "10.0.0.1", "10.0.0.0/-1", -1 },
	{ "10.0.0.1", "10.0.0.0/+8", -1 },
	{ "10.0.0.1", "10.0.0.0/ 8", -1 },
	{ "10.0.0.1", "10.0.0.0/8x", -1 },
	{ "10.0.0.1", "10.0.0.0/8 ", -1 },
	{ "10.0.0.1", "10.0.0.0/8/8", -1 },
	{ "10.0.0.1", "10.0.0.0/0x8", -1 },
	{ "10.0.0.1", "10.0.0.0/99999999999999999999", -1 },
	{ "10.0.0.1", "10.0.0/8", -1 },
	{ "10.0.0.1", "10.0.0.0 /8", -1 },
	{ "10.0.0.1", " 10.0.0.0/8", -1 },
	{ "10.0.0.1", "/8", -1 },
	{ "10.0.0.1", "", -1 },
	{ "10.0.0.1", "garbage", -1 },
	{ "10.0.0.1", "10.0.0.0-10.0.0.255", -1 },
	{ "2001:db8::1", "2001:db8::/", -1 },
	{ "2001:db8::1", "2001:db8:::/32", -1 },
	{ "10.0.0.1", "0000000000000000000000000000000000000000000000000000000000000010.0.0.0/8", -1 },
	{ "10.0.0.1", "10.0.0.0/000000000000000000000000000000000000000000000000000000000000008", -1 },
};

static void test_cidr(void)
{
	for (size_t i = 0; i < sizeof(cidr_cases) / sizeof(cidr_cases[0]); i++) {
		char given[256];

		snprintf(given, sizeof(given), "ip %s in %s", cidr_cases[i].ip, cidr_cases[i].network);
		CHECK_INT(given, cidr_cases[i].want, cidr_match(cidr_cases[i].ip, cidr_cases[i].network));
	}
}

static void test_throttle_key(void)
{
	static const struct {
		const char *ip, *key;
	} cases[] = {
		{ "192.0.2.1", "192.0.2.1" },
		{ "2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64" },
		{ "2001:DB8:1:2::ffff", "2001:db8:1:2::/64" },
		{ "2001:db8::1", "2001:db8::/64" },
		{ "2001:db8:0:1::1", "2001:db8:0:1::/64" },
		{ "::1", "::/64" },
		{ "", "" },
	};
	char key[80], other[80], small[8];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ip_throttle_key(cases[i].ip, key, sizeof(key));
		CHECK_STR(cases[i].ip, cases[i].key, key);
	}
	/* one key for a whole /64, another for the next /64 */
	ip_throttle_key("2001:db8:aa:bb:1::1", key, sizeof(key));
	ip_throttle_key("2001:db8:aa:bb:ffff:ffff:ffff:ffff", other, sizeof(other));
	CHECK_STR("2001:db8:aa:bb:ffff:ffff:ffff:ffff", key, other);
	ip_throttle_key("2001:db8:aa:bc::1", other, sizeof(other));
	CHECK_INT("2001:db8:aa:bc::1 vs 2001:db8:aa:bb::", 1, strcmp(key, other) != 0);
	/* a short buffer is truncated and terminated */
	memset(small, 'X', sizeof(small));
	ip_throttle_key("2001:db8:1:2::1", small, sizeof(small));
	CHECK_STR("2001:db8:1:2::1 into 8 octets", "2001:db", small);
}

/* Connects a TCP client to a listener on the loopback address addr and
 * returns the accepted socket (the server side) in *server. */
static int loopback_pair(int family, const char *listen_on, const char *connect_to, int *client,
			 int *server)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int lfd, one = 1, zero = 0;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		if (inet_pton(AF_INET, listen_on, &s4->sin_addr) != 1)
			return -1;
		len = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		if (inet_pton(AF_INET6, listen_on, &s6->sin6_addr) != 1)
			return -1;
		len = sizeof(*s6);
	}
	lfd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (lfd < 0)
		return -1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (family == AF_INET6)
		setsockopt(lfd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	if (bind(lfd, (struct sockaddr *)&ss, len) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&ss, &len) < 0) {
		close(lfd);
		return -1;
	}
	{
		struct sockaddr_storage to;
		socklen_t tolen;
		int port = family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port) :
					       ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);

		memset(&to, 0, sizeof(to));
		if (strchr(connect_to, ':')) {
			struct sockaddr_in6 *t6 = (struct sockaddr_in6 *)&to;
			t6->sin6_family = AF_INET6;
			t6->sin6_port = htons((unsigned short)port);
			inet_pton(AF_INET6, connect_to, &t6->sin6_addr);
			tolen = sizeof(*t6);
		} else {
			struct sockaddr_in *t4 = (struct sockaddr_in *)&to;
			t4->sin_family = AF_INET;
			t4->sin_port = htons((unsigned short)port);
			inet_pton(AF_INET, connect_to, &t4->sin_addr);
			tolen = sizeof(*t4);
		}
		*client = socket(to.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (*client < 0 || connect(*client, (struct sockaddr *)&to, tolen) < 0) {
			close(lfd);
			return -1;
		}
	}
	*server = accept(lfd, NULL, NULL);
	close(lfd);
	return *server < 0 ? -1 : 0;
}

/* A client at connect_to of a listener on the IPv6 address listen_on is
 * seen as connect_to of want_family. Where no such listener can be made,
 * the note untested says what goes untested, and nothing is checked. */
static void check_ipv6_peer(const char *listen_on, const char *connect_to, const char *given,
			    int want_family, const char *untested)
{
	struct peer p;
	int c, s;

	if (loopback_pair(AF_INET6, listen_on, connect_to, &c, &s) != 0) {
		fprintf(stderr, "note: %s\n", untested);
		return;
	}
	peer_from_fd(s, &p);
	CHECK_STR(given, connect_to, p.ip);
	CHECK_INT(given, want_family, p.family);
	close(c);
	close(s);
}

static void test_peer(void)
{
	struct peer p;
	int fds[2], c, s;

	/* a pipe is a local peer */
	REQUIRE(pipe(fds) == 0);
	memset(&p, 0x5a, sizeof(p));
	peer_from_fd(fds[0], &p);
	CHECK_INT("pipe", 0, p.is_socket);
	CHECK_STR("pipe", "", p.ip);
	CHECK_INT("pipe", 0, p.family);
	close(fds[0]);
	close(fds[1]);

	/* a Unix socket is a socket with no IP: local too */
	REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
	peer_from_fd(fds[0], &p);
	CHECK_INT("unix socketpair", 1, p.is_socket);
	CHECK_STR("unix socketpair", "", p.ip);
	close(fds[0]);
	close(fds[1]);

	/* TCP over IPv4 loopback */
	if (loopback_pair(AF_INET, "127.0.0.1", "127.0.0.1", &c, &s) == 0) {
		struct sockaddr_in me;
		socklen_t len = sizeof(me);

		peer_from_fd(s, &p);
		getsockname(c, (struct sockaddr *)&me, &len);
		CHECK_INT("tcp 127.0.0.1", 1, p.is_socket);
		CHECK_STR("tcp 127.0.0.1", "127.0.0.1", p.ip);
		CHECK_INT("tcp 127.0.0.1", AF_INET, p.family);
		CHECK_INT("tcp 127.0.0.1", ntohs(me.sin_port), p.port);
		close(c);
		close(s);
	} else {
		CHECK_INT("tcp 127.0.0.1: could not connect over loopback", 0, 1);
	}

	/* an IPv4 client of an IPv6 listener arrives IPv4-mapped and is
	 * shown as IPv4 (the listener is bound to ::ffff:127.0.0.1 so that
	 * nothing listens beyond loopback) */
	check_ipv6_peer("::ffff:127.0.0.1", "127.0.0.1", "tcp 127.0.0.1 to [::ffff:127.0.0.1]",
			AF_INET, "no IPv4-mapped IPv6 listener here; IPv4-mapped peer not tested");
	check_ipv6_peer("::1", "::1", "tcp ::1", AF_INET6,
			"no IPv6 loopback here; IPv6 peer not tested");
}

int main(void)
{
	test_cidr();
	test_throttle_key();
	test_peer();
	return check_finish("net");
}
