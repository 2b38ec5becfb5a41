/* SPDX-License-Identifier: Apache-2.0 */
/* The registry holder (registry.h): publishes one snapshot at a time to the loop and readers. */
#include "config.h"

#include <stdlib.h>

#include "config/registry.h"
#include "core/err.h"
#include "core/log.h"

void
registry_holder_init(struct registry_holder *h)
{
	pthread_mutex_init(&h->mu, NULL);
	h->cur = NULL;
}

void
registry_holder_destroy(struct registry_holder *h)
{
	registry_unref(h->cur);
	h->cur = NULL;
	pthread_mutex_destroy(&h->mu);
}

struct registry *
registry_holder_get(struct registry_holder *h)
{
	struct registry *r;

	pthread_mutex_lock(&h->mu);
	r = registry_ref(h->cur);
	pthread_mutex_unlock(&h->mu);
	return r;
}

void
registry_holder_set(struct registry_holder *h, struct registry *r)
{
	struct registry *old;

	pthread_mutex_lock(&h->mu);
	old = h->cur;
	h->cur = r;
	pthread_mutex_unlock(&h->mu);
	registry_unref(old);
}

int
registry_holder_reload(struct registry_holder *h, const char *dir, struct diag *d)
{
	struct registry *r;
	int rc = registry_load_dir(dir, &r, d);

	if (rc != 0)
		return rc;
	registry_holder_set(h, r);
	return 0;
}
