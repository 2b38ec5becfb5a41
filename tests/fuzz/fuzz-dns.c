/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: the DNS proxy's query path (src/dns/msg.c) from arbitrary bytes, as a UDP and
 * as a TCP query, against a small registry: it never crashes, and what it answers is a DNS
 * response to the query (its ID, QR set) that fits what a UDP client takes. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/registry.h"
#include "core/log.h"
#include "dns/msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char reg_text[] =
    "[node \"n\"]\naddress = 192.168.0.1\n"
    "[workload \"a\"]\nnamespace = ns\nnode = n\naddresses = 10.0.0.1\nlabels = app=a\n"
    "[service \"web\"]\nnamespace = ns\nvip = 10.96.0.1, fd00:96::1\nports = 80\n"
    "selector = app=a\n"
    "[service \"auto\"]\nnamespace = ns\nports = 80\nselector = app=a\n";

static struct registry *reg;

static void
one(const uint8_t *data, size_t size, bool tcp)
{
	struct dns_zone z = { .reg = reg, .ns = "ns", .domain = "cluster.local", .ttl = 30 };
	struct dns_query_info info;
	uint8_t *out = NULL, *sf;
	size_t outlen = 0, sflen;
	enum dns_action act = dns_handle_query(&z, data, size, tcp, &out, &outlen, &info);

	if (act == DNS_REPLY) {
		if (out == NULL || outlen < DNS_HEADER_LEN || outlen > DNS_MAX_MSG ||
		    out[0] != data[0] || out[1] != data[1] || (out[2] & 0x80) == 0)
			abort();
		if (!tcp && outlen > info.max_answer)
			abort();
		(void)dns_reply_matches(data, size, out, outlen);
	} else if (out != NULL) {
		abort();
	}
	free(out);
	sf = dns_servfail(data, size, &sflen);
	if (sf != NULL && (sflen < DNS_HEADER_LEN || sf[0] != data[0] || sf[1] != data[1]))
		abort();
	free(sf);
	(void)dns_truncated(data, size);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	log_set_level(LOG_LVL_ERROR);
	if (reg == NULL) {
		struct diag d;

		diag_init(&d);
		if (registry_parse_buffer("fuzz.conf", reg_text, strlen(reg_text), &reg, &d) != 0)
			abort();
		diag_clear(&d);
	}
	if (size > DNS_MAX_MSG)
		return 0;
	one(data, size, false);
	one(data, size, true);
	return 0;
}
