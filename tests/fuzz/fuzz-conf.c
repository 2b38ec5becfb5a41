/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: amesh.conf parsing and validation from arbitrary bytes. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/conf.h"
#include "core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct amesh_conf *c = NULL;
	struct diag d;

	log_set_level(LOG_LVL_ERROR);
	diag_init(&d);
	if (conf_parse_buffer("fuzz.conf", (const char *)data, size, &c, &d) == 0) {
		/* A config that loads has its invariants. */
		if (c->mesh.trust_domain == NULL || c->mesh.registry == NULL || c->cni.socket == NULL)
			abort();
		conf_free(c);
	} else if (diag_count(&d) == 0 || c != NULL) {
		abort(); /* a failure must say why and return nothing */
	}
	diag_clear(&d);
	return 0;
}
