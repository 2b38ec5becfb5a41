/* SPDX-License-Identifier: Apache-2.0 */
/* Fixed-capacity open-addressing hash table over byte keys; keys live in the caller's memory. */
#ifndef AMESH_CORE_HTAB_H
#define AMESH_CORE_HTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct htab_ent {
	uint64_t hash;
	const void *key; /* NULL: empty slot */
	size_t keylen;
	void *val;
};

struct htab {
	struct htab_ent *e;
	size_t cap; /* power of two, at least twice the expected count */
	size_t n;
};

/* Sizes the table for up to expected entries (it never grows: the registry knows its counts). */
void htab_init(struct htab *t, size_t expected);
void htab_free(struct htab *t);
/* Inserts key -> val. If the key is present, returns its value and inserts nothing; else NULL. */
void *htab_put(struct htab *t, const void *key, size_t keylen, void *val);
void *htab_get(const struct htab *t, const void *key, size_t keylen);
/* Key helper for NUL-terminated strings. */
static inline void *
htab_get_str(const struct htab *t, const char *s)
{
	return htab_get(t, s, strlen(s));
}

#endif
