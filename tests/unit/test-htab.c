/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for core/htab.c. */
#include "config.h"

#include "core/htab.h"
#include "runner.h"

TEST(htab_basic)
{
	struct htab t;
	static char keys[1000][16];
	int vals[1000];

	htab_init(&t, 1000);
	for (int i = 0; i < 1000; i++) {
		snprintf(keys[i], sizeof(keys[i]), "key-%d", i);
		vals[i] = i;
		ASSERT(htab_put(&t, keys[i], strlen(keys[i]), &vals[i]) == NULL);
	}
	ASSERT_EQ(t.n, 1000);
	for (int i = 0; i < 1000; i++)
		ASSERT(htab_get_str(&t, keys[i]) == &vals[i]);
	ASSERT(htab_get_str(&t, "key-1000") == NULL);
	/* A second put of a present key returns the first value and changes nothing. */
	ASSERT(htab_put(&t, "key-5", 5, &vals[6]) == &vals[5]);
	ASSERT(htab_get_str(&t, "key-5") == &vals[5]);
	htab_free(&t);
	htab_free(&t);
}
