/* SPDX-License-Identifier: Apache-2.0 */
/* The unit binary's allocation wrappers (see failalloc.h): count, and fail the armed call. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "failalloc.h"

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
void __real_free(void *p);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
void __wrap_free(void *p);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_asprintf(char **out, const char *fmt, ...);

static bool armed;
static long fail_at = -1, calls;
static const char *fail_src; /* failalloc_arm_strdup's source */
static const char *failed;
/* What was allocated since the last arm and not freed yet (failalloc_live), stored inverted so that
 * LeakSanitizer does not take this table for a reference to a leaked block. */
static uintptr_t live[4096];
static size_t nlive;
static bool live_overflow;

void
failalloc_arm(long nth)
{
	armed = true;
	fail_at = nth;
	fail_src = NULL;
	calls = 0;
	failed = NULL;
	nlive = 0;
	live_overflow = false;
}

void
failalloc_arm_strdup(const char *s)
{
	failalloc_arm(-1);
	fail_src = s;
}

void
failalloc_disarm(void)
{
	armed = false;
	fail_at = -1;
	fail_src = NULL;
}

long
failalloc_calls(void)
{
	return calls;
}

const char *
failalloc_failed(void)
{
	return failed;
}

long
failalloc_live(void)
{
	return live_overflow ? -1 : (long)nlive;
}

static void
track(void *p)
{
	if (!armed || p == NULL)
		return;
	if (nlive < sizeof(live) / sizeof(live[0]))
		live[nlive++] = ~(uintptr_t)p;
	else
		live_overflow = true;
}

static void
untrack(void *p)
{
	for (size_t i = 0; p != NULL && i < nlive; i++)
		if (live[i] == ~(uintptr_t)p) {
			live[i] = live[--nlive];
			return;
		}
}

/* Counts one call of fn; true when it is the one to fail (then disarmed: it fails once). */
static bool
fail(const char *fn, const char *src)
{
	bool f;

	if (!armed)
		return false;
	f = fail_src != NULL ? src != NULL && strcmp(src, fail_src) == 0 : calls == fail_at;
	calls++;
	if (f) {
		failed = fn;
		fail_at = -1;
		fail_src = NULL;
		errno = ENOMEM;
	}
	return f;
}

void *
__wrap_malloc(size_t size)
{
	void *p = fail("malloc", NULL) ? NULL : __real_malloc(size);

	track(p);
	return p;
}

void *
__wrap_calloc(size_t n, size_t size)
{
	void *p = fail("calloc", NULL) ? NULL : __real_calloc(n, size);

	track(p);
	return p;
}

void *
__wrap_realloc(void *p, size_t size)
{
	void *q;

	if (fail("realloc", NULL))
		return NULL;
	q = __real_realloc(p, size);
	if (q != NULL || size == 0) {
		untrack(p);
		track(q);
	}
	return q;
}

void
__wrap_free(void *p)
{
	untrack(p);
	__real_free(p);
}

char *
__wrap_strdup(const char *s)
{
	char *p = fail("strdup", s) ? NULL : __real_strdup(s);

	track(p);
	return p;
}

char *
__wrap_strndup(const char *s, size_t n)
{
	char *p = fail("strndup", s) ? NULL : __real_strndup(s, n);

	track(p);
	return p;
}

int
__wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
	int r;

	if (fail("vasprintf", NULL))
		return -1;
	r = __real_vasprintf(out, fmt, ap);
	if (r >= 0)
		track(*out);
	return r;
}

int
__wrap_asprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	int r;

	if (fail("asprintf", NULL))
		return -1;
	va_start(ap, fmt);
	r = __real_vasprintf(out, fmt, ap);
	va_end(ap);
	if (r >= 0)
		track(*out);
	return r;
}
