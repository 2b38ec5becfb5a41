/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: registry parsing, cross-checks and index building from arbitrary bytes. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>

#include "config/registry.h"
#include "core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct registry *r = NULL;
	struct diag d;

	log_set_level(LOG_LVL_ERROR);
	diag_init(&d);
	if (registry_parse_buffer("fuzz.conf", (const char *)data, size, &r, &d) == 0) {
		/* Every indexed address must find its owner again. */
		for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++) {
			const struct reg_workload *w = REG_WORKLOADS(r)[i];

			for (size_t j = 0; j < w->addresses.n; j++)
				if (registry_workload_by_addr(r, &w->addresses.v[j]) != w)
					abort();
			if (w->node_p == NULL)
				abort();
		}
		for (size_t i = 0; i < r->n[REG_SERVICE]; i++) {
			const struct reg_service *s = REG_SERVICES(r)[i];

			for (size_t v = 0; v < s->vips.n; v++)
				for (size_t p = 0; p < s->ports.n; p++)
					if (registry_service_by_vip(r, &s->vips.v[v],
					    s->ports.v[p].port)->service != s)
						abort();
		}
		registry_unref(r);
	} else if (diag_count(&d) == 0 || r != NULL) {
		abort();
	}
	diag_clear(&d);
	return 0;
}
