/* SPDX-License-Identifier: Apache-2.0 */
/* INI reading on top of inih, with what Debian's build of it lacks: line numbers and long-line detection. */
#ifndef AMESH_CONFIG_INI_H
#define AMESH_CONFIG_INI_H

#include <stddef.h>

#include "core/diag.h"

/* Files larger than this are refused: a registry of 10,000 workloads is about 1.5 MiB. */
#define INI_FILE_MAX (32u * 1024 * 1024)

struct ini_callbacks {
	/*
	 * A "[...]" header; text is what stands between the brackets, trimmed. text is NULL for a
	 * malformed header (already reported): the keys that follow belong to no valid section.
	 */
	void (*section)(void *user, const char *text, int line);
	/* A "key = value" line inside the current section ("" before any header). */
	void (*key)(void *user, const char *section, const char *key, const char *value, int line);
};

/*
 * Parses an INI document held in memory. Syntax errors (no '=', unclosed '[', over-long line,
 * NUL byte) go to d as "FILE:LINE: message" and the line is skipped, so every error in a file
 * is reported in one run. Returns 0, or AMESH_ERR_INVALID when any syntax error was found.
 */
int ini_parse_buffer(const char *file, const char *data, size_t len,
    const struct ini_callbacks *cb, void *user, struct diag *d);

/* Reads a whole file (at most INI_FILE_MAX) into *out (NUL-terminated); caller frees. */
int ini_slurp(const char *path, char **out, size_t *out_len, struct diag *d);

#endif
