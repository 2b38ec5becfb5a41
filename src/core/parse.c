/* SPDX-License-Identifier: Apache-2.0 */
/* Value parsers. Strict: no trailing garbage, no silent clamping, no hostnames where an IP is due. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/parse.h"

/* Digits only (no sign, no spaces, no hex): strtoull alone accepts too much. */
static int
parse_digits(const char *s, const char **end, uint64_t *out)
{
	uint64_t v = 0;
	const char *p = s;

	if (!isdigit((unsigned char)*p))
		return -1;
	for (; isdigit((unsigned char)*p); p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	*end = p;
	*out = v;
	return 0;
}

int
parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out, const char **why)
{
	const char *end;
	uint64_t v;

	if (parse_digits(s, &end, &v) != 0 || *end != '\0') {
		*why = "expected a non-negative integer";
		return -1;
	}
	if (v < min || v > max) {
		*why = "out of range";
		return -1;
	}
	*out = v;
	return 0;
}

int
parse_port(const char *s, uint16_t *out, const char **why)
{
	uint64_t v;
	const char *end;

	if (parse_digits(s, &end, &v) != 0 || *end != '\0') {
		*why = "expected a port number 1-65535";
		return -1;
	}
	if (v < 1 || v > 65535) {
		*why = "port out of range 1-65535";
		return -1;
	}
	*out = (uint16_t)v;
	return 0;
}

int
parse_duration(const char *s, uint64_t *out_ms, const char **why)
{
	static const struct { const char *unit; uint64_t ms; } units[] = {
		{ "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 }, { "d", 86400000 },
	};
	/* 10 years: anything longer is a typo, and the bound keeps arithmetic far from overflow. */
	const uint64_t max_ms = 3650ULL * 86400000ULL;
	const char *end;
	uint64_t v;

	if (parse_digits(s, &end, &v) != 0) {
		*why = "expected a duration such as 500ms, 10s, 5m, 2h or 1d";
		return -1;
	}
	if (*end == '.') {
		*why = "durations are whole numbers (write 1500ms, not 1.5s)";
		return -1;
	}
	if (*end == '\0') {
		*why = "duration needs a unit (ms, s, m, h or d)";
		return -1;
	}
	for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			if (v > max_ms / units[i].ms) {
				*why = "duration too long (at most 3650d)";
				return -1;
			}
			*out_ms = v * units[i].ms;
			return 0;
		}
	}
	*why = "unknown duration unit (use ms, s, m, h or d)";
	return -1;
}

int
parse_size(const char *s, uint64_t *out, const char **why)
{
	const char *end;
	uint64_t v, mul = 1;

	if (parse_digits(s, &end, &v) != 0) {
		*why = "expected a size such as 4096, 64k, 4M or 1G";
		return -1;
	}
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': mul = 1024; end++; break;
	case 'm': case 'M': mul = 1024 * 1024; end++; break;
	case 'g': case 'G': mul = 1024 * 1024 * 1024; end++; break;
	default:
		*why = "unknown size suffix (use k, M or G)";
		return -1;
	}
	if (*end != '\0') {
		*why = "unknown size suffix (use k, M or G)";
		return -1;
	}
	if (v > UINT64_MAX / mul / 2) {
		*why = "size too large";
		return -1;
	}
	*out = v * mul;
	return 0;
}

int
parse_bool(const char *s, bool *out, const char **why)
{
	static const char *const yes[] = { "on", "yes", "true", "1" };
	static const char *const no[] = { "off", "no", "false", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	*why = "expected on/off, yes/no, true/false or 1/0";
	return -1;
}

int
parse_ip(const char *s, struct ip_addr *out, const char **why)
{
	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, s, out->a) == 1) {
		out->family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, out->a) == 1) {
		out->family = AF_INET6;
		return 0;
	}
	*why = "expected an IPv4 or IPv6 address";
	return -1;
}

int
parse_prefix(const char *s, struct ip_prefix *out, const char **why)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash = strchr(s, '/');
	uint64_t len;
	unsigned maxlen;

	if (strlen(s) >= sizeof(buf)) {
		*why = "expected an address or ADDRESS/LENGTH";
		return -1;
	}
	memcpy(buf, s, strlen(s) + 1);
	if (slash != NULL)
		buf[slash - s] = '\0';
	if (parse_ip(buf, &out->addr, why) != 0)
		return -1;
	maxlen = out->addr.family == AF_INET ? 32 : 128;
	if (slash == NULL) {
		out->len = (uint8_t)maxlen;
		return 0;
	}
	if (parse_uint(slash + 1, 0, maxlen, &len, why) != 0) {
		*why = "prefix length out of range";
		return -1;
	}
	out->len = (uint8_t)len;
	for (unsigned bit = out->len; bit < maxlen; bit++) {
		if (out->addr.a[bit / 8] & (0x80 >> (bit % 8))) {
			*why = "address has bits set past the prefix length";
			return -1;
		}
	}
	return 0;
}

int
parse_sockaddr(const char *s, struct sockaddr_storage *out, const char **why)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon;
	struct ip_addr ip;
	uint16_t port;
	bool bracketed = s[0] == '[';
	size_t hl;

	memset(out, 0, sizeof(*out));
	if (bracketed) {
		const char *rb = strchr(s, ']');

		if (rb == NULL || rb[1] != ':') {
			*why = "expected [IPv6]:PORT";
			return -1;
		}
		hl = (size_t)(rb - s - 1);
		colon = rb + 1;
		s++;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL) {
			*why = "expected ADDRESS:PORT";
			return -1;
		}
		hl = (size_t)(colon - s);
		if (memchr(s, ':', hl) != NULL) {
			*why = "IPv6 address needs brackets: [ADDRESS]:PORT";
			return -1;
		}
	}
	if (hl == 0 || hl >= sizeof(host)) {
		*why = "expected ADDRESS:PORT";
		return -1;
	}
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (parse_ip(host, &ip, why) != 0)
		return -1;
	if (bracketed && ip.family != AF_INET6) {
		*why = "brackets are for IPv6 addresses";
		return -1;
	}
	if (parse_port(colon + 1, &port, why) != 0)
		return -1;
	sockaddr_from_ip(out, &ip, port);
	return 0;
}

void
sockaddr_from_ip(struct sockaddr_storage *ss, const struct ip_addr *ip, uint16_t port)
{
	memset(ss, 0, sizeof(*ss));
	if (ip->family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, ip->a, 16);
		s6->sin6_port = htons(port);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, ip->a, 4);
		s4->sin_port = htons(port);
	}
}

void
ip_from_sockaddr(const struct sockaddr_storage *ss, struct ip_addr *ip, uint16_t *port)
{
	uint16_t p;

	memset(ip, 0, sizeof(*ip));
	ip->family = (uint8_t)ss->ss_family;
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

		memcpy(ip->a, &s6->sin6_addr, 16);
		p = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

		memcpy(ip->a, &s4->sin_addr, 4);
		p = ntohs(s4->sin_port);
	}
	if (port != NULL)
		*port = p;
}

bool
ip_equal(const struct ip_addr *a, const struct ip_addr *b)
{
	return a->family == b->family &&
	    memcmp(a->a, b->a, a->family == AF_INET ? 4 : 16) == 0;
}

bool
ip_in_prefix(const struct ip_addr *ip, const struct ip_prefix *p)
{
	unsigned full = p->len / 8, rest = p->len % 8;

	if (ip->family != p->addr.family)
		return false;
	if (memcmp(ip->a, p->addr.a, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((ip->a[full] ^ p->addr.a[full]) & (0xff << (8 - rest))) == 0;
}

const char *
ip_str(const struct ip_addr *ip, char *buf, size_t len)
{
	if (inet_ntop(ip->family, ip->a, buf, (socklen_t)len) == NULL)
		snprintf(buf, len, "?");
	return buf;
}

const char *
sockaddr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, len, "-");
	}
	return buf;
}

const char *
duration_str(uint64_t ms, char *buf, size_t len)
{
	if (ms != 0 && ms % 86400000 == 0)
		snprintf(buf, len, "%" PRIu64 "d", ms / 86400000);
	else if (ms != 0 && ms % 3600000 == 0)
		snprintf(buf, len, "%" PRIu64 "h", ms / 3600000);
	else if (ms != 0 && ms % 60000 == 0)
		snprintf(buf, len, "%" PRIu64 "m", ms / 60000);
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%" PRIu64 "s", ms / 1000);
	else
		snprintf(buf, len, "%" PRIu64 "ms", ms);
	return buf;
}

int
parse_hexdigit(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}
