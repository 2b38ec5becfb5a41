/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for core/buf.c: appends and reads in order, the limit, growth, failed allocations. */
#include "config.h"

#include "core/buf.h"
#include "core/err.h"
#include "runner.h"

/* Bytes come out in the order they went in, across partial reads and appends after them. */
TEST(buf_order_and_offset)
{
	struct buf b;
	char want[3000], got[3000];
	size_t n = 0, w = 0;

	buf_init(&b, 4096);
	ASSERT_EQ(buf_len(&b), 0);
	ASSERT(buf_ptr(&b) == NULL);
	ASSERT_EQ(buf_put(&b, "x", 0), 0);
	for (int i = 0; i < 3000; i++)
		want[i] = (char)('a' + i % 26);
	while (w < sizeof(want)) {
		size_t chunk = w + 37 <= sizeof(want) ? 37 : sizeof(want) - w;

		ASSERT_EQ(buf_put(&b, want + w, chunk), 0);
		w += chunk;
		/* A partial read: less than was written, as a stream that takes part of it. */
		if (buf_len(&b) > 20) {
			memcpy(got + n, buf_ptr(&b), 20);
			buf_consume(&b, 20);
			n += 20;
		}
	}
	memcpy(got + n, buf_ptr(&b), buf_len(&b));
	n += buf_len(&b);
	buf_consume(&b, buf_len(&b) + 5); /* more than held: capped */
	ASSERT_EQ(n, sizeof(want));
	ASSERT(memcmp(got, want, n) == 0);
	ASSERT_EQ(buf_len(&b), 0);
	ASSERT_EQ(b.off, 0); /* emptied: starts again at the front */
	buf_reset(&b);
	buf_reset(&b);
	buf_reset(NULL);
}

/* The limit counts unread bytes: an append past it changes nothing and fails; reading makes
 * room. */
TEST(buf_limit)
{
	struct buf b;
	char data[100];

	memset(data, 'z', sizeof(data));
	buf_init(&b, 250);
	ASSERT_EQ(buf_put(&b, data, 100), 0);
	ASSERT_EQ(buf_put(&b, data, 100), 0);
	ASSERT_EQ(buf_room(&b), 50);
	ASSERT_EQ(buf_put(&b, data, 51), AMESH_ERR_TOOLONG);
	ASSERT_EQ(buf_len(&b), 200);
	ASSERT_EQ(buf_put(&b, data, 50), 0);
	ASSERT_EQ(buf_room(&b), 0);
	ASSERT_EQ(buf_put(&b, data, 1), AMESH_ERR_TOOLONG);
	buf_consume(&b, 100);
	ASSERT_EQ(buf_put(&b, data, 100), 0);
	ASSERT_EQ(buf_len(&b), 250);
	ASSERT_EQ(buf_put(&b, data, 0), 0); /* nothing is always possible */
	buf_reset(&b);
	ASSERT_EQ(b.max, 250);
	ASSERT_EQ(buf_put(&b, data, 100), 0);
	buf_reset(&b);
}

/* Growth is amortized: 100,000 one-byte appends reallocate a handful of times, and the storage
 * of a buffer that held much is released once it empties. */
static long reallocs;

static void *
counting_realloc(void *ptr, size_t size)
{
	reallocs++;
	return realloc(ptr, size);
}

TEST(buf_amortized_growth)
{
	struct buf b;

	buf_init(&b, 1u << 20);
	buf_test_realloc = counting_realloc;
	reallocs = 0;
	for (int i = 0; i < 100000; i++)
		ASSERT_EQ(buf_put(&b, "q", 1), 0);
	ASSERT(reallocs <= 12);
	/* Read and write in turn: the read offset takes the reads, nothing moves per read. */
	reallocs = 0;
	for (int i = 0; i < 100000; i++) {
		buf_consume(&b, 1);
		ASSERT_EQ(buf_put(&b, "r", 1), 0);
	}
	ASSERT(reallocs <= 1);
	ASSERT_EQ(buf_len(&b), 100000);
	buf_consume(&b, 100000);
	ASSERT(b.d == NULL); /* over BUF_KEEP: released */
	buf_test_realloc = NULL;
	buf_reset(&b);
}

static long fail_at = -1, allocs;

static void *
failing_realloc(void *ptr, size_t size)
{
	if (allocs++ == fail_at)
		return NULL;
	return realloc(ptr, size);
}

/* A failed allocation appends nothing and leaves what was there; the buffer stays usable. */
TEST(buf_alloc_failure)
{
	struct buf b;
	char data[1000];

	memset(data, 'k', sizeof(data));
	buf_init(&b, 1u << 16);
	ASSERT_EQ(buf_put(&b, "abc", 3), 0);
	buf_test_realloc = failing_realloc;
	allocs = 0;
	fail_at = 0;
	ASSERT_EQ(buf_put(&b, data, sizeof(data)), AMESH_ERR_NOMEM);
	ASSERT_EQ(buf_len(&b), 3);
	ASSERT(memcmp(buf_ptr(&b), "abc", 3) == 0);
	fail_at = -1;
	ASSERT_EQ(buf_put(&b, data, sizeof(data)), 0);
	ASSERT_EQ(buf_len(&b), 1003);
	buf_test_realloc = NULL;
	buf_reset(&b);
}

/* buf_take_str hands over the unread bytes NUL-terminated and leaves the buffer empty. */
TEST(buf_take_str)
{
	struct buf b;
	size_t len;
	char *s;

	buf_init(&b, 64);
	ASSERT_EQ(buf_put(&b, "hello, world", 12), 0);
	buf_consume(&b, 7);
	s = buf_take_str(&b, &len);
	ASSERT_STREQ(s, "world");
	ASSERT_EQ(len, 5);
	ASSERT_EQ(buf_len(&b), 0);
	free(s);
	s = buf_take_str(&b, &len);
	ASSERT_STREQ(s, "");
	ASSERT_EQ(len, 0);
	free(s);
	/* A full buffer still takes its NUL. */
	for (int i = 0; i < 64; i++)
		ASSERT_EQ(buf_put(&b, "0", 1), 0);
	s = buf_take_str(&b, &len);
	ASSERT_EQ(len, 64);
	ASSERT_EQ(strlen(s), 64);
	free(s);
	buf_reset(&b);
}
