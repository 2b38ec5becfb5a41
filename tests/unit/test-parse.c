/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for core/parse.c and the pattern helpers of config/kw.c. */
#include "config.h"

#include <arpa/inet.h>

#include "config/kw.h"
#include "core/parse.h"
#include "runner.h"

TEST(parse_port)
{
	uint16_t p;
	const char *why;

	ASSERT(parse_port("15008", &p, &why) == 0 && p == 15008);
	ASSERT(parse_port("1", &p, &why) == 0 && p == 1);
	ASSERT(parse_port("65535", &p, &why) == 0 && p == 65535);
	ASSERT(parse_port("0", &p, &why) == -1);
	ASSERT_STREQ(why, "port out of range 1-65535");
	ASSERT(parse_port("65536", &p, &why) == -1);
	ASSERT(parse_port("-1", &p, &why) == -1);
	ASSERT(parse_port("80x", &p, &why) == -1);
	ASSERT(parse_port(" 80", &p, &why) == -1);
	ASSERT(parse_port("0x50", &p, &why) == -1);
	ASSERT(parse_port("99999999999999999999999", &p, &why) == -1);
}

TEST(parse_duration)
{
	uint64_t ms;
	const char *why;

	ASSERT(parse_duration("500ms", &ms, &why) == 0 && ms == 500);
	ASSERT(parse_duration("10s", &ms, &why) == 0 && ms == 10000);
	ASSERT(parse_duration("5m", &ms, &why) == 0 && ms == 300000);
	ASSERT(parse_duration("2h", &ms, &why) == 0 && ms == 7200000);
	ASSERT(parse_duration("1d", &ms, &why) == 0 && ms == 86400000);
	ASSERT(parse_duration("0s", &ms, &why) == 0 && ms == 0);
	ASSERT(parse_duration("10", &ms, &why) == -1);
	ASSERT_STREQ(why, "duration needs a unit (ms, s, m, h or d)");
	ASSERT(parse_duration("10x", &ms, &why) == -1);
	ASSERT_STREQ(why, "unknown duration unit (use ms, s, m, h or d)");
	ASSERT(parse_duration("1.5s", &ms, &why) == -1);
	ASSERT(parse_duration("s", &ms, &why) == -1);
	ASSERT(parse_duration("3651d", &ms, &why) == -1);
	ASSERT_STREQ(why, "duration too long (at most 3650d)");
	ASSERT(parse_duration("99999999999999999999ms", &ms, &why) == -1);
}

TEST(parse_size)
{
	uint64_t n;
	const char *why;

	ASSERT(parse_size("4096", &n, &why) == 0 && n == 4096);
	ASSERT(parse_size("64k", &n, &why) == 0 && n == 65536);
	ASSERT(parse_size("4M", &n, &why) == 0 && n == 4194304);
	ASSERT(parse_size("1G", &n, &why) == 0 && n == 1073741824);
	ASSERT(parse_size("1T", &n, &why) == -1);
	ASSERT(parse_size("1kb", &n, &why) == -1);
	ASSERT(parse_size("k", &n, &why) == -1);
	ASSERT(parse_size("9999999999999999999G", &n, &why) == -1);
}

TEST(parse_bool)
{
	bool b;
	const char *why;

	ASSERT(parse_bool("on", &b, &why) == 0 && b);
	ASSERT(parse_bool("Yes", &b, &why) == 0 && b);
	ASSERT(parse_bool("false", &b, &why) == 0 && !b);
	ASSERT(parse_bool("0", &b, &why) == 0 && !b);
	ASSERT(parse_bool("maybe", &b, &why) == -1);
}

TEST(parse_ip_prefix)
{
	struct ip_addr ip;
	struct ip_prefix p;
	const char *why;
	char buf[64];

	ASSERT(parse_ip("10.1.1.2", &ip, &why) == 0 && ip.family == AF_INET);
	ASSERT_STREQ(ip_str(&ip, buf, sizeof(buf)), "10.1.1.2");
	ASSERT(parse_ip("fd00:1::2", &ip, &why) == 0 && ip.family == AF_INET6);
	ASSERT_STREQ(ip_str(&ip, buf, sizeof(buf)), "fd00:1::2");
	ASSERT(parse_ip("10.1.1", &ip, &why) == -1);
	ASSERT(parse_ip("example.com", &ip, &why) == -1);
	ASSERT(parse_prefix("10.0.0.0/8", &p, &why) == 0 && p.len == 8);
	ASSERT(parse_ip("10.200.3.4", &ip, &why) == 0 && ip_in_prefix(&ip, &p));
	ASSERT(parse_ip("11.0.0.1", &ip, &why) == 0 && !ip_in_prefix(&ip, &p));
	ASSERT(parse_prefix("10.0.0.1/8", &p, &why) == -1);
	ASSERT_STREQ(why, "address has bits set past the prefix length");
	ASSERT(parse_prefix("10.0.0.0/33", &p, &why) == -1);
	ASSERT(parse_prefix("fd00::/16", &p, &why) == 0 && p.len == 16);
	ASSERT(parse_ip("fd00:1::2", &ip, &why) == 0 && ip_in_prefix(&ip, &p));
	ASSERT(parse_prefix("10.1.2.3", &p, &why) == 0 && p.len == 32);
	ASSERT(parse_prefix("10.0.0.0/12", &p, &why) == 0);
	ASSERT(parse_ip("10.15.255.255", &ip, &why) == 0 && ip_in_prefix(&ip, &p));
	ASSERT(parse_ip("10.16.0.0", &ip, &why) == 0 && !ip_in_prefix(&ip, &p));
}

TEST(parse_sockaddr)
{
	struct sockaddr_storage ss;
	const char *why;
	char buf[80];

	ASSERT(parse_sockaddr("127.0.0.1:15000", &ss, &why) == 0);
	ASSERT_STREQ(sockaddr_str(&ss, buf, sizeof(buf)), "127.0.0.1:15000");
	ASSERT(parse_sockaddr("[::1]:15020", &ss, &why) == 0);
	ASSERT_STREQ(sockaddr_str(&ss, buf, sizeof(buf)), "[::1]:15020");
	ASSERT(parse_sockaddr("::1:15020", &ss, &why) == -1);
	ASSERT_STREQ(why, "IPv6 address needs brackets: [ADDRESS]:PORT");
	ASSERT(parse_sockaddr("[127.0.0.1]:80", &ss, &why) == -1);
	ASSERT(parse_sockaddr("127.0.0.1", &ss, &why) == -1);
	ASSERT(parse_sockaddr("127.0.0.1:0", &ss, &why) == -1);
	ASSERT(parse_sockaddr("localhost:80", &ss, &why) == -1);
	ASSERT(parse_sockaddr("[::1]80", &ss, &why) == -1);
	ASSERT(parse_sockaddr(":80", &ss, &why) == -1);
}

TEST(pattern_match)
{
	ASSERT(kw_pattern_check("cluster.local/ns/default/sa/*") == NULL);
	ASSERT(kw_pattern_check("*/sa/admin") == NULL);
	ASSERT(kw_pattern_check("*") == NULL);
	ASSERT(kw_pattern_check("a*b") != NULL);
	ASSERT(kw_pattern_check("*a*") != NULL);
	ASSERT(kw_pattern_match("/api/*", "/api/v1"));
	ASSERT(kw_pattern_match("/api/*", "/api/"));
	ASSERT(!kw_pattern_match("/api/*", "/ap"));
	ASSERT(kw_pattern_match("*.local", "a.local"));
	ASSERT(!kw_pattern_match("*.local", "a.locals"));
	ASSERT(kw_pattern_match("*", ""));
	ASSERT(kw_pattern_match("GET", "GET"));
	ASSERT(!kw_pattern_match("GET", "GETX"));
	ASSERT(kw_is_name("default") && !kw_is_name("Default") && !kw_is_name("-a"));
	ASSERT(kw_is_hostname("reviews.default.svc.cluster.local"));
	ASSERT(!kw_is_hostname("a..b") && !kw_is_hostname("a.") && !kw_is_hostname(""));
}
