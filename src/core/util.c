/* SPDX-License-Identifier: Apache-2.0 */
/* Allocation and string helpers. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/log.h"
#include "core/util.h"

/* Weak: src/failalloc.c's takes its place in a --enable-failalloc build. */
__attribute__((weak)) void *
amesh_nghttp2_mem(void)
{
	return NULL;
}

static void *
check(void *p)
{
	if (p == NULL)
		fatalx("out of memory");
	return p;
}

void *
xmalloc(size_t n)
{
	return check(malloc(n ? n : 1));
}

void *
xcalloc(size_t nmemb, size_t size)
{
	return check(calloc(nmemb ? nmemb : 1, size ? size : 1));
}

void *
xrealloc(void *p, size_t nmemb, size_t size)
{
	if (size != 0 && nmemb > (size_t)-1 / size)
		fatalx("allocation size overflow");
	return check(realloc(p, nmemb * size != 0 ? nmemb * size : 1));
}

char *
xstrdup(const char *s)
{
	return check(strdup(s));
}

char *
xstrndup(const char *s, size_t n)
{
	return check(strndup(s, n));
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (r < 0)
		fatalx("out of memory");
	return s;
}

char *
strtrim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
		*--e = '\0';
	return s;
}

bool
str_has_suffix(const char *s, const char *suffix)
{
	size_t ls = strlen(s), lx = strlen(suffix);

	return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

char *
path_join(const char *dir, const char *rel)
{
	if (rel[0] == '/' || dir == NULL || dir[0] == '\0')
		return xstrdup(rel);
	return xasprintf("%s/%s", dir, rel);
}

char *
path_dirname(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return xstrdup(".");
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

const char *
iso_time(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "@%lld", (long long)t);
	return buf;
}

bool
str_is_word(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return false;
	return true;
}

int
path_mkdir_parents(const char *path, mode_t mode, char **failed)
{
	char *buf = xstrdup(path), *p;
	size_t n = strlen(buf);
	int r = 0;

	if (failed != NULL)
		*failed = NULL;
	/* A trailing slash would make path itself look like a parent. */
	while (n > 1 && buf[n - 1] == '/')
		buf[--n] = '\0';
	for (p = strchr(buf + 1, '/'); p != NULL && r == 0; p = strchr(p + 1, '/')) {
		struct stat st;

		if (p[-1] == '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) != 0) {
			if (errno != EEXIST)
				r = -errno;
			else if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
				r = -ENOTDIR;
			if (r != 0 && failed != NULL)
				*failed = xstrdup(buf);
		}
		*p = '/';
	}
	free(buf);
	return r;
}
