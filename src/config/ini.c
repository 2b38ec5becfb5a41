/* SPDX-License-Identifier: Apache-2.0 */
/*
 * inih drives the tokenizing; our reader hands it one whole line per call, which is how we know
 * the line number inside the handler (Debian builds inih without INI_HANDLER_LINENO) and how an
 * over-long line is caught instead of being split by inih into two valid-looking lines.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/ini.h"
#include "core/err.h"
#include "core/util.h"

struct ini_state {
	const char *file;
	const char *data;
	size_t len, pos;
	int line;
	int errors;
	char section[256];
	const struct ini_callbacks *cb;
	void *user;
	struct diag *d;
};

/* Checks one line's shape; on a header calls the section callback. Returns false if invalid. */
static bool
check_line(struct ini_state *st, char *text)
{
	char *s = strtrim(text);
	char *rb, *eq;

	if (*s == '\0' || *s == ';' || *s == '#')
		return true;
	if (*s == '[') {
		rb = strchr(s, ']');
		if (rb == NULL) {
			diag_add(st->d, st->file, st->line, "section header without closing ']'");
			st->cb->section(st->user, NULL, st->line);
			return false;
		}
		for (const char *p = rb + 1; *p != '\0'; p++) {
			if (*p == ';' || *p == '#')
				break;
			if (*p != ' ' && *p != '\t') {
				diag_add(st->d, st->file, st->line, "unexpected text after section header");
				st->cb->section(st->user, NULL, st->line);
				return false;
			}
		}
		*rb = '\0';
		s = strtrim(s + 1);
		if (strlen(s) >= sizeof(st->section)) {
			diag_add(st->d, st->file, st->line, "section name too long");
			st->cb->section(st->user, NULL, st->line);
			return false;
		}
		memcpy(st->section, s, strlen(s) + 1);
		st->cb->section(st->user, st->section, st->line);
		return true;
	}
	/* inih also splits on ':'; we accept only '=' so "a: b" is not silently a key. */
	eq = s + strcspn(s, "=:");
	if (*eq != '=') {
		diag_add(st->d, st->file, st->line, "expected 'key = value' or '[section]'");
		return false;
	}
	if (eq == s) {
		diag_add(st->d, st->file, st->line, "missing key name before '='");
		return false;
	}
	return true;
}

/* fgets-like reader for inih: always one whole line, or an empty line in place of a bad one. */
static char *
reader(char *str, int num, void *stream)
{
	struct ini_state *st = stream;
	const char *start, *nl;
	size_t linelen, content;
	char *copy;
	bool ok;

	if (st->pos >= st->len || num < 3)
		return NULL;
	start = st->data + st->pos;
	nl = memchr(start, '\n', st->len - st->pos);
	linelen = nl ? (size_t)(nl - start) + 1 : st->len - st->pos;
	st->pos += linelen;
	st->line++;
	content = nl ? linelen - 1 : linelen;
	if (content > 0 && start[content - 1] == '\r')
		content--;
	if (st->line == 1 && content >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0) {
		start += 3;
		content -= 3;
	}
	str[0] = '\n';
	str[1] = '\0';
	if (memchr(start, '\0', content) != NULL) {
		diag_add(st->d, st->file, st->line, "line contains a NUL byte");
		st->errors++;
		return str;
	}
	/*
	 * inih trims with isspace(), check_line() only blanks and tabs: with a \v, \f or \r in front,
	 * "\f[log]=x" is a key line to us and a header to inih, so it would pass unreported.
	 */
	for (size_t i = 0; i < content; i++) {
		unsigned char ch = (unsigned char)start[i];

		if (ch < 0x20 && ch != '\t') {
			diag_add(st->d, st->file, st->line, "line contains a control character (0x%02x)",
			    ch);
			st->errors++;
			return str;
		}
	}
	/* inih's buffer holds num bytes: the line, '\n' and '\0'. */
	if (content > (size_t)num - 2) {
		diag_add(st->d, st->file, st->line, "line too long (%zu bytes; at most %d)",
		    content, num - 2);
		st->errors++;
		return str;
	}
	copy = xstrndup(start, content);
	ok = check_line(st, copy);
	free(copy);
	if (!ok) {
		st->errors++;
		return str;
	}
	memcpy(str, start, content);
	str[content] = '\n';
	str[content + 1] = '\0';
	return str;
}

static int
handler(void *user, const char *section, const char *name, const char *value)
{
	struct ini_state *st = user;

	st->cb->key(st->user, section, name, value, st->line);
	return 1;
}

int
ini_parse_buffer(const char *file, const char *data, size_t len,
    const struct ini_callbacks *cb, void *user, struct diag *d)
{
	struct ini_state st = {
		.file = file, .data = data, .len = len, .cb = cb, .user = user, .d = d,
	};
	int r;

	/* Continuation lines would make an indented "key = value" part of the previous value. */
	ini_allow_multiline = false;
	ini_stop_on_first_error = false;
	r = ini_parse_stream(reader, &st, handler, &st);
	if (r > 0 && st.errors == 0) {
		/* Our reader screens every line, so inih should not find one; keep it loud if it does. */
		diag_add(d, file, r, "syntax error");
		st.errors++;
	} else if (r < 0) {
		diag_add(d, file, 0, "parser failed (%d)", r);
		st.errors++;
	}
	return st.errors ? AMESH_ERR_INVALID : 0;
}

int
ini_slurp(const char *path, char **out, size_t *out_len, struct diag *d)
{
	struct stat sb;
	char *buf = NULL;
	size_t got = 0;
	int fd, r = AMESH_ERR_INVALID;

	*out = NULL;
	*out_len = 0;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		r = -errno;
		diag_add(d, path, 0, "cannot open: %s", strerror(errno));
		return r;
	}
	if (fstat(fd, &sb) != 0) {
		r = -errno;
		diag_add(d, path, 0, "cannot stat: %s", strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		diag_add(d, path, 0, "not a regular file");
		goto out;
	}
	if ((uint64_t)sb.st_size > INI_FILE_MAX) {
		r = AMESH_ERR_TOOLONG;
		diag_add(d, path, 0, "file too large (%lld bytes; at most %u)",
		    (long long)sb.st_size, INI_FILE_MAX);
		goto out;
	}
	buf = xmalloc((size_t)sb.st_size + 1);
	while (got < (size_t)sb.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)sb.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			r = -errno;
			diag_add(d, path, 0, "cannot read: %s", strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	*out = buf;
	*out_len = got;
	buf = NULL;
	r = 0;
out:
	free(buf);
	close(fd);
	return r;
}
