/* SPDX-License-Identifier: Apache-2.0 */
/* Typed value parsers shared by amesh.conf and the registry: ports, addresses, durations, sizes. */
#ifndef AMESH_CORE_PARSE_H
#define AMESH_CORE_PARSE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

/* An IP address without port. family is AF_INET or AF_INET6; v4 uses the first 4 bytes. */
struct ip_addr {
	uint8_t family;
	uint8_t a[16];
};

/* An address prefix, for ip_blocks. */
struct ip_prefix {
	struct ip_addr addr;
	uint8_t len;
};

/* Each parser returns 0 and sets *out, or returns -1 ("not a valid X": no code would say more,
 * core/err.h) and sets *why to a static reason. */
int parse_port(const char *s, uint16_t *out, const char **why);
/* Durations: "500ms", "10s", "5m", "2h", "1d"; the result is in milliseconds. */
int parse_duration(const char *s, uint64_t *out_ms, const char **why);
/* Sizes: "4096", "64k", "4M", "1G" (powers of 1024). */
int parse_size(const char *s, uint64_t *out, const char **why);
/* Booleans: on/off, yes/no, true/false, 1/0. */
int parse_bool(const char *s, bool *out, const char **why);
/* Unsigned integer in [min, max]. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out, const char **why);
/* IPv4 or IPv6 literal. */
int parse_ip(const char *s, struct ip_addr *out, const char **why);
/* "ADDR/LEN" or a bare address (full length). Host bits must be zero. */
int parse_prefix(const char *s, struct ip_prefix *out, const char **why);
/* "IPv4:PORT" or "[IPv6]:PORT"; port 1-65535. */
int parse_sockaddr(const char *s, struct sockaddr_storage *out, const char **why);

/* ip and port as a sockaddr (the rest of ss zeroed). */
void sockaddr_from_ip(struct sockaddr_storage *ss, const struct ip_addr *ip, uint16_t port);
/* The address of ss (family 0 when ss is unset), and its port when port is not NULL. */
void ip_from_sockaddr(const struct sockaddr_storage *ss, struct ip_addr *ip, uint16_t *port);

bool ip_equal(const struct ip_addr *a, const struct ip_addr *b);
bool ip_in_prefix(const struct ip_addr *ip, const struct ip_prefix *p);
/* Formats an address into buf (INET6_ADDRSTRLEN is enough); returns buf. */
const char *ip_str(const struct ip_addr *ip, char *buf, size_t len);
/* Formats "ip:port" or "[ip6]:port" into buf; returns buf. */
const char *sockaddr_str(const struct sockaddr_storage *ss, char *buf, size_t len);
/* Formats milliseconds back the way a user would write them ("5m", "500ms"). */
const char *duration_str(uint64_t ms, char *buf, size_t len);

/* The value of hexadecimal digit c (either case), or -1 when c is not one. */
int parse_hexdigit(int c);

#endif
