/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Allocation failure injection for the unit binary (failmalloc-style). The binary is linked with
 * -Wl,--wrap for malloc, calloc, realloc, free, strdup, strndup, asprintf and vasprintf, so every such
 * call made by amesh's code (libamesh.a and the tests; not the calls libc, libuv, nghttp2 or mbedTLS
 * make inside themselves) passes through a counter here. Disarmed (the default) they behave as
 * the real functions. Production code is not changed: the hook exists only in this binary.
 * (A build with _FORTIFY_SOURCE turns asprintf into __asprintf_chk, which is not wrapped.)
 */
#ifndef AMESH_TEST_FAILALLOC_H
#define AMESH_TEST_FAILALLOC_H

#include <stddef.h>

/* Counts the wrapped calls from now on; the nth of them (0: the next) fails once, as on ENOMEM
 * (NULL or -1, errno ENOMEM). A negative nth only counts. */
void failalloc_arm(long nth);
/* The next strdup or strndup whose source is equal to s fails once (s is not copied: it must
 * outlive the arming). Other calls are counted and succeed. */
void failalloc_arm_strdup(const char *s);
/* Stops failing and counting. */
void failalloc_disarm(void);
/* Wrapped calls counted since the last arm. */
long failalloc_calls(void);
/* Name of the function whose call was failed since the last arm ("strdup"...), or NULL. */
const char *failalloc_failed(void);
/* How many of the blocks allocated through the wrappers since the last arm are not freed yet (-1:
 * too many to track), to show that a failed call leaves nothing behind. Blocks freed after the
 * disarm still count as freed. */
long failalloc_live(void);

#endif
