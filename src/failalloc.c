/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Allocation failure injection for the amesh binary (configure --enable-failalloc; failslab style):
 * with AMESH_FAILALLOC set, some allocations fail as on ENOMEM, so that the error paths of a
 * running proxy are exercised under real traffic (tests/e2e/test-failalloc.sh). Unset, every call
 * goes straight to the real allocator. The value is a comma-separated list:
 *
 *	random=N   each allocation fails with probability 1/N
 *	nth=N      the Nth allocation (counting from 1 after "after") fails, once
 *	seed=S     the random generator's seed (default 1): a run can be repeated
 *	after=MS   nothing fails during the first MS milliseconds (start-up), default 0
 *
 * What goes through here: amesh's own malloc, calloc, realloc, strdup, strndup, asprintf and
 * vasprintf (the binary is linked with -Wl,--wrap for them), libuv's allocations
 * (uv_replace_allocator), jansson's (json_set_alloc_funcs), OpenSSL's (CRYPTO_set_mem_functions)
 * and nghttp2's sessions (amesh_nghttp2_mem). Not mbedTLS: Debian builds it without
 * MBEDTLS_PLATFORM_MEMORY, so it has no allocator hook. free is not wrapped.
 * At exit the counts go to stderr: "failalloc: F of N allocations failed".
 */
#include "config.h"

#include <errno.h>
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "core/util.h"

void *__real_malloc(size_t size);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t size);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_vasprintf(char **out, const char *fmt, va_list ap);

void *__wrap_malloc(size_t size);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t size);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);
int __wrap_vasprintf(char **out, const char *fmt, va_list ap);
int __wrap_asprintf(char **out, const char *fmt, ...);

static uint64_t fa_random, fa_nth, fa_after_ms, fa_start_ms;
static uint64_t fa_calls, fa_failed; /* atomics: allocation may happen on any thread */
static uint64_t fa_seed = 1;
static __thread uint64_t fa_state;
static bool fa_on;

static uint64_t
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* True when this call is to fail. */
static bool
fail(void)
{
	uint64_t n;

	if (!fa_on)
		return false;
	if (fa_after_ms > 0 && now_ms() - fa_start_ms < fa_after_ms)
		return false;
	n = __atomic_add_fetch(&fa_calls, 1, __ATOMIC_RELAXED);
	if (fa_nth > 0) {
		if (n != fa_nth)
			return false;
	} else {
		if (fa_state == 0) /* each thread its own sequence, from the seed */
			fa_state = fa_seed * 0x9e3779b97f4a7c15ull + (uint64_t)(uintptr_t)&fa_state;
		fa_state ^= fa_state << 13;
		fa_state ^= fa_state >> 7;
		fa_state ^= fa_state << 17;
		if (fa_state % fa_random != 0)
			return false;
	}
	__atomic_add_fetch(&fa_failed, 1, __ATOMIC_RELAXED);
	errno = ENOMEM;
	return true;
}

void *
__wrap_malloc(size_t size)
{
	return fail() ? NULL : __real_malloc(size);
}

void *
__wrap_calloc(size_t n, size_t size)
{
	return fail() ? NULL : __real_calloc(n, size);
}

void *
__wrap_realloc(void *p, size_t size)
{
	return size > 0 && fail() ? NULL : __real_realloc(p, size);
}

char *
__wrap_strdup(const char *s)
{
	return fail() ? NULL : __real_strdup(s);
}

char *
__wrap_strndup(const char *s, size_t n)
{
	return fail() ? NULL : __real_strndup(s, n);
}

int
__wrap_vasprintf(char **out, const char *fmt, va_list ap)
{
	if (fail()) {
		*out = NULL;
		return -1;
	}
	return __real_vasprintf(out, fmt, ap);
}

int
__wrap_asprintf(char **out, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = __wrap_vasprintf(out, fmt, ap);
	va_end(ap);
	return r;
}

/* nghttp2's allocator for every session (hbone/h2.c, l7/proto-h2.c). */
static void *
ng_malloc(size_t size, void *u)
{
	return __wrap_malloc(size);
}

static void
ng_free(void *p, void *u)
{
	free(p);
}

static void *
ng_calloc(size_t n, size_t size, void *u)
{
	return __wrap_calloc(n, size);
}

static void *
ng_realloc(void *p, size_t size, void *u)
{
	return __wrap_realloc(p, size);
}

static nghttp2_mem ng_mem = { NULL, ng_malloc, ng_free, ng_calloc, ng_realloc };

void *
amesh_nghttp2_mem(void)
{
	return fa_on ? &ng_mem : NULL;
}

static void *
ossl_malloc(size_t n, const char *file, int line)
{
	return __wrap_malloc(n);
}

static void *
ossl_realloc(void *p, size_t n, const char *file, int line)
{
	return __wrap_realloc(p, n);
}

static void
ossl_free(void *p, const char *file, int line)
{
	free(p);
}

static void
report(void)
{
	fprintf(stderr, "failalloc: %llu of %llu allocations failed\n",
	    (unsigned long long)__atomic_load_n(&fa_failed, __ATOMIC_RELAXED),
	    (unsigned long long)__atomic_load_n(&fa_calls, __ATOMIC_RELAXED));
}

/* Reads AMESH_FAILALLOC before main, before any library has allocated. */
__attribute__((constructor)) static void
failalloc_init(void)
{
	const char *v = getenv("AMESH_FAILALLOC");
	char buf[256], *save = NULL;

	if (v == NULL || *v == '\0')
		return;
	if (strlen(v) >= sizeof(buf)) {
		fprintf(stderr, "amesh: AMESH_FAILALLOC: too long\n");
		exit(2);
	}
	strcpy(buf, v);
	for (char *t = strtok_r(buf, ",", &save); t != NULL; t = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(t, '='), *end;
		unsigned long long n;

		if (eq == NULL)
			goto bad;
		*eq = '\0';
		errno = 0;
		n = strtoull(eq + 1, &end, 10);
		if (errno != 0 || *end != '\0' || end == eq + 1)
			goto bad;
		if (strcmp(t, "random") == 0 && n > 0)
			fa_random = n;
		else if (strcmp(t, "nth") == 0 && n > 0)
			fa_nth = n;
		else if (strcmp(t, "seed") == 0)
			fa_seed = n;
		else if (strcmp(t, "after") == 0)
			fa_after_ms = n;
		else
			goto bad;
	}
	if ((fa_random == 0) == (fa_nth == 0))
		goto bad;
	fa_start_ms = now_ms();
	uv_replace_allocator(__wrap_malloc, __wrap_realloc, __wrap_calloc, free);
	json_set_alloc_funcs(__wrap_malloc, free);
	CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
	atexit(report);
	fa_on = true;
	return;
bad:
	fprintf(stderr, "amesh: AMESH_FAILALLOC=%s: expected random=N or nth=N, and seed=S, "
	    "after=MS (failalloc.c)\n", v);
	exit(2);
}
