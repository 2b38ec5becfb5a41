/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One bounded byte buffer (after OpenSSH's sshbuf): bytes are appended at the end and read from a
 * read offset, so a partial write consumes without moving the rest; storage grows by doubling, so
 * appends are amortized O(1); and the bytes it holds never exceed its limit.
 *
 * The limit: buf_put() that would make the unread bytes exceed b->max appends nothing and
 * returns AMESH_ERR_TOOLONG; the buffer is unchanged and stays usable (a later, smaller append,
 * or one after buf_consume(), may succeed). A failed allocation is AMESH_ERR_NOMEM, with the
 * same guarantee.
 *
 * Ownership: a struct buf is embedded in its owner and owns its storage; buf_reset() frees it.
 * Pointers from buf_ptr() are borrowed and valid until the next buf_put(), buf_consume(),
 * buf_take_str() or buf_reset() on the same buffer. Not thread-safe; no callbacks.
 */
#ifndef AMESH_CORE_BUF_H
#define AMESH_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *d;  /* storage, cap bytes, owned (NULL when empty and released) */
	size_t off;  /* first unread byte */
	size_t len;  /* end of the bytes held: d[off..len) are unread */
	size_t cap;
	size_t max;  /* limit on the unread bytes (len - off) */
};

/* Storage larger than this is released when the buffer empties; smaller storage is kept for the
 * next append. */
#define BUF_KEEP (4u * 1024)

/* An empty buffer holding at most max bytes (max > 0). Allocates nothing. */
void buf_init(struct buf *b, size_t max);
/* Frees the storage; the buffer is empty again, with the same limit. b may be NULL. */
void buf_reset(struct buf *b);
/* Unread bytes. */
size_t buf_len(const struct buf *b);
/* The first unread byte (borrowed; NULL when empty). */
const uint8_t *buf_ptr(const struct buf *b);
/* How many more bytes an append may bring before the limit. */
size_t buf_room(const struct buf *b);
/*
 * Appends n bytes of data (copied). 0; AMESH_ERR_TOOLONG when the unread bytes would exceed the
 * limit; AMESH_ERR_NOMEM. On an error nothing is appended. n == 0 always succeeds.
 */
int buf_put(struct buf *b, const void *data, size_t n);
/* Drops the first n unread bytes (n is capped at buf_len()). Never moves memory: the read offset
 * advances; an emptied buffer starts again at offset 0 (and releases storage over BUF_KEEP). */
void buf_consume(struct buf *b, size_t n);
/*
 * The unread bytes as a NUL-terminated string the caller owns (free()), their length in *len
 * (without the NUL); the buffer is left empty. The NUL does not count against the limit. NULL
 * (and *len 0) on AMESH_ERR_NOMEM; an empty buffer gives "" (allocated).
 */
char *buf_take_str(struct buf *b, size_t *len);

/* Tests only: the allocator buf uses (NULL: realloc), so a test can make it fail. */
extern void *(*buf_test_realloc)(void *ptr, size_t size);

#endif
