/* SPDX-License-Identifier: Apache-2.0 */
/* Allocation helpers for startup and config code (abort on failure) and small string utilities. */
#ifndef AMESH_CORE_UTIL_H
#define AMESH_CORE_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* These abort the process when memory runs out: config and startup only, never the data path. */
void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t nmemb, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The nghttp2_mem every HTTP/2 session is made with (a const nghttp2_mem *): NULL, libc's,
 * unless the binary is built with --enable-failalloc and AMESH_FAILALLOC is set
 * (src/failalloc.c). */
void *amesh_nghttp2_mem(void);

/* Strips leading and trailing blanks in place; returns s. */
char *strtrim(char *s);
bool str_has_suffix(const char *s, const char *suffix);
/* True when s is one word: non-empty, no blank and no control character (a hand-off token, an
 * HTTP request target). */
bool str_is_word(const char *s);

/* Joins dir and a relative path ("dir/rel"); an absolute path is copied as is. */
char *path_join(const char *dir, const char *rel);
/* Directory part of path ("." when it has none); caller frees. */
char *path_dirname(const char *path);
/*
 * Creates the missing ancestors of path with mode, as `mkdir -p` does for its parents; path itself
 * is left to the caller. Returns 0, or -errno with *failed (when failed is not NULL; the caller
 * frees it) naming the directory that could not be made: -ENOTDIR when it exists and is not one.
 */
int path_mkdir_parents(const char *path, mode_t mode, char **failed);

/* ISO 8601 UTC text of a Unix time ("2026-11-26T06:00:00Z"; "@SECONDS" if it cannot be
 * formatted) in buf; returns buf. */
const char *iso_time(time_t t, char *buf, size_t len);

#endif
