/* SPDX-License-Identifier: Apache-2.0 */
/* The bounded byte buffer (buf.h): doubling growth, a read offset, a size limit. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/err.h"

#define BUF_MIN 256

void *(*buf_test_realloc)(void *ptr, size_t size);

static void *
buf_realloc(void *ptr, size_t size)
{
	return buf_test_realloc != NULL ? buf_test_realloc(ptr, size) : realloc(ptr, size);
}

void
buf_init(struct buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void
buf_reset(struct buf *b)
{
	if (b == NULL)
		return;
	free(b->d);
	b->d = NULL;
	b->off = b->len = b->cap = 0;
}

size_t
buf_len(const struct buf *b)
{
	return b->len - b->off;
}

const uint8_t *
buf_ptr(const struct buf *b)
{
	return b->len > b->off ? b->d + b->off : NULL;
}

size_t
buf_room(const struct buf *b)
{
	return b->max > buf_len(b) ? b->max - buf_len(b) : 0;
}

/* Room for n more bytes at the end: reuse the consumed head when that is enough (one move of the
 * unread bytes, amortized by the appends that filled it), else double. */
static int
reserve(struct buf *b, size_t n)
{
	size_t need = buf_len(b) + n, cap;
	uint8_t *d;

	if (b->len + n <= b->cap)
		return 0;
	if (b->off > 0 && need <= b->cap && b->off >= buf_len(b)) {
		memmove(b->d, b->d + b->off, buf_len(b));
		b->len -= b->off;
		b->off = 0;
		return 0;
	}
	cap = b->cap ? b->cap : BUF_MIN;
	while (cap < b->len + n)
		cap *= 2;
	d = buf_realloc(b->d, cap);
	if (d == NULL)
		return AMESH_ERR_NOMEM;
	b->d = d;
	b->cap = cap;
	return 0;
}

int
buf_put(struct buf *b, const void *data, size_t n)
{
	int r;

	if (n == 0)
		return 0;
	if (n > buf_room(b))
		return AMESH_ERR_TOOLONG;
	if ((r = reserve(b, n)) != 0)
		return r;
	memcpy(b->d + b->len, data, n);
	b->len += n;
	return 0;
}

void
buf_consume(struct buf *b, size_t n)
{
	if (n > buf_len(b))
		n = buf_len(b);
	b->off += n;
	if (b->off < b->len)
		return;
	b->off = b->len = 0;
	if (b->cap > BUF_KEEP)
		buf_reset(b);
}

char *
buf_take_str(struct buf *b, size_t *len)
{
	size_t n = buf_len(b);
	char *s;

	*len = 0;
	if (b->off > 0 && n > 0)
		memmove(b->d, b->d + b->off, n);
	b->len = n;
	b->off = 0;
	if (b->len + 1 > b->cap) {
		uint8_t *d = buf_realloc(b->d, b->len + 1);

		if (d == NULL)
			return NULL;
		b->d = d;
		b->cap = b->len + 1;
	}
	b->d[n] = '\0';
	s = (char *)b->d;
	b->d = NULL;
	b->off = b->len = b->cap = 0;
	*len = n;
	return s;
}
