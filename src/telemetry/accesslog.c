/* SPDX-License-Identifier: Apache-2.0 */
/* Access log records, built as log_record fields. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "telemetry/accesslog.h"

static bool enabled;

void
accesslog_set_enabled(bool on)
{
	enabled = on;
}

bool
accesslog_enabled(void)
{
	return enabled;
}

static void
add(struct log_field *f, size_t *n, const char *key, const char *v)
{
	if (v == NULL || v[0] == '\0')
		return;
	f[*n].key = key;
	f[*n].str = v;
	f[*n].num = 0;
	(*n)++;
}

static void
add_num(struct log_field *f, size_t *n, const char *key, uint64_t v)
{
	f[*n].key = key;
	f[*n].str = NULL;
	f[*n].num = v;
	(*n)++;
}

void
accesslog_tcp(const struct tcp_labels *l, const char *src_addr, const char *dst_addr,
    uint64_t sent, uint64_t received, uint64_t duration_ms, const char *flags)
{
	struct log_field f[16];
	char dur[32];
	size_t n = 0;
	const char *dir = NULL;

	if (!enabled)
		return;
	if (l->reporter != NULL)
		dir = strcmp(l->reporter, "source") == 0 ? "outbound" :
		    strcmp(l->reporter, "destination") == 0 ? "inbound" : NULL;
	if (flags == NULL || flags[0] == '\0')
		flags = l->response_flags;
	if (flags != NULL && strcmp(flags, "-") == 0)
		flags = NULL;
	snprintf(dur, sizeof(dur), "%llums", (unsigned long long)duration_ms);
	add(f, &n, "src.addr", src_addr);
	add(f, &n, "src.workload", l->source_workload);
	add(f, &n, "src.namespace", l->source_workload_namespace);
	add(f, &n, "src.identity", l->source_principal);
	add(f, &n, "dst.addr", dst_addr);
	add(f, &n, "dst.service", l->destination_service);
	add(f, &n, "dst.workload", l->destination_workload);
	add(f, &n, "dst.namespace", l->destination_workload_namespace);
	add(f, &n, "dst.identity", l->destination_principal);
	add(f, &n, "direction", dir);
	add_num(f, &n, "bytes_sent", received);
	add_num(f, &n, "bytes_recv", sent);
	add(f, &n, "duration", dur);
	add(f, &n, "flags", flags);
	log_record(LOG_LVL_INFO, "access", "connection complete", f, n);
}
