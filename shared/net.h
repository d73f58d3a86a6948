/* The client's address, and CIDR matching for relay_networks. */
#ifndef POSTAGE_NET_H
#define POSTAGE_NET_H

#include <stddef.h>

struct peer {
	char ip[64];   /* printable; IPv4-mapped IPv6 shown as IPv4; "" when local */
	int port;
	int is_socket; /* fd 0 is a socket (else pipes: a local peer) */
	int family;    /* AF_INET, AF_INET6, or 0 when local */
};

/* Fills peer from getpeername(fd). */
void peer_from_fd(int fd, struct peer *peer);

/* Does ip lie in network ("10.0.0.0/8", "192.0.2.1", "2001:db8::/32")?
 * 1 yes, 0 no, -1 network malformed. IPv4-mapped IPv6 matches IPv4. */
int cidr_match(const char *ip, const char *network);

/* The key failed logins are counted under: the IP, or the /64 for IPv6. */
void ip_throttle_key(const char *ip, char *key, size_t cap);

#endif
