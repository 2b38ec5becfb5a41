/* SPDX-License-Identifier: Apache-2.0 */
/* Hash table: FNV-1a and linear probing; capacity fixed at init, which bounds it by construction. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/htab.h"
#include "core/log.h"
#include "core/util.h"

static uint64_t
fnv1a(const void *key, size_t len)
{
	const unsigned char *p = key;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

void
htab_init(struct htab *t, size_t expected)
{
	size_t cap = 16;

	while (cap < expected * 2)
		cap <<= 1;
	t->e = xcalloc(cap, sizeof(*t->e));
	t->cap = cap;
	t->n = 0;
}

void
htab_free(struct htab *t)
{
	if (t == NULL)
		return;
	free(t->e);
	t->e = NULL;
	t->cap = t->n = 0;
}

void *
htab_put(struct htab *t, const void *key, size_t keylen, void *val)
{
	uint64_t h = fnv1a(key, keylen);

	/* Half full at most: the caller sized it; overfilling is a bug, not a runtime condition. */
	if ((t->n + 1) * 2 > t->cap)
		fatalx("hash table over capacity (%zu of %zu)", t->n + 1, t->cap);
	for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		struct htab_ent *e = &t->e[i];

		if (e->key == NULL) {
			e->hash = h;
			e->key = key;
			e->keylen = keylen;
			e->val = val;
			t->n++;
			return NULL;
		}
		if (e->hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0)
			return e->val;
	}
}

void *
htab_get(const struct htab *t, const void *key, size_t keylen)
{
	uint64_t h;

	if (t->cap == 0)
		return NULL;
	h = fnv1a(key, keylen);
	for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
		const struct htab_ent *e = &t->e[i];

		if (e->key == NULL)
			return NULL;
		if (e->hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0)
			return e->val;
	}
}
