#include "net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

void peer_from_fd(int fd, struct peer *peer)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	memset(peer, 0, sizeof(*peer));
	if (getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
		return;
	peer->is_socket = 1;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, peer->ip, sizeof(peer->ip));
		peer->port = ntohs(s4->sin_port);
		peer->family = AF_INET;
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], peer->ip, sizeof(peer->ip));
			peer->family = AF_INET;
		} else {
			inet_ntop(AF_INET6, &s6->sin6_addr, peer->ip, sizeof(peer->ip));
			peer->family = AF_INET6;
		}
		peer->port = ntohs(s6->sin6_port);
	}
}

/* Parses ip into 16 bytes (IPv4 as ::ffff:a.b.c.d); returns the family. */
static int parse_ip(const char *ip, unsigned char out[16])
{
	unsigned char v4[4];

	if (inet_pton(AF_INET, ip, v4) == 1) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, v4, 4);
		return AF_INET;
	}
	if (inet_pton(AF_INET6, ip, out) == 1) {
		static const unsigned char mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
		return memcmp(out, mapped, 12) == 0 ? AF_INET : AF_INET6;
	}
	return 0;
}

int cidr_match(const char *ip, const char *network)
{
	char net[64];
	const char *slash;
	unsigned char a[16], b[16];
	int fa, fb;
	long bits;

	slash = strchr(network, '/');
	if (strlen(network) >= sizeof(net) || (slash && (size_t)(slash - network) >= sizeof(net)))
		return -1;
	if (slash) {
		char *end;
		memcpy(net, network, (size_t)(slash - network));
		net[slash - network] = '\0';
		/* digits only: strtol would also take " 8", "+8", "-1" */
		if (slash[1] < '0' || slash[1] > '9')
			return -1;
		bits = strtol(slash + 1, &end, 10);
		if (*end)
			return -1;
	} else {
		snprintf(net, sizeof(net), "%s", network);
		bits = -1;
	}
	fb = parse_ip(net, b);
	if (!fb)
		return -1;
	if (bits < 0)
		bits = fb == AF_INET ? 32 : 128;
	if ((fb == AF_INET && bits > 32) || bits > 128)
		return -1;
	/* A /0 would trust the world: never. */
	if (bits == 0)
		return -1;
	if (fb == AF_INET)
		bits += 96;
	fa = parse_ip(ip, a);
	if (!fa || fa != fb)
		return 0;
	for (long i = 0; i < bits / 8; i++)
		if (a[i] != b[i])
			return 0;
	if (bits % 8) {
		unsigned char mask = (unsigned char)(0xff << (8 - bits % 8));
		if ((a[bits / 8] & mask) != (b[bits / 8] & mask))
			return 0;
	}
	return 1;
}

void ip_throttle_key(const char *ip, char *key, size_t cap)
{
	unsigned char a[16];

	if (parse_ip(ip, a) == AF_INET6) {
		char buf[INET6_ADDRSTRLEN];
		memset(a + 8, 0, 8);
		inet_ntop(AF_INET6, a, buf, sizeof(buf));
		snprintf(key, cap, "%s/64", buf);
		return;
	}
	snprintf(key, cap, "%s", ip);
}
