/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Error codes shared by every module, and the one error convention:
 *
 *   - A function that can fail returns 0 (or a count, an fd... when its doc says so) on success,
 *     and on failure a negative code from one table: AMESH_ERR_* below, -errno, or a libuv code
 *     (UV_* are -errno on Linux). amesh_strerror() prints any of them; a caller passes a callee's
 *     code up unchanged or picks one that says more, never a bare -1.
 *   - Detail beyond the code (file:line, the offending value) goes in the caller's record: a
 *     struct diag (core/diag.h), a "why" buffer, or a module's own failure record (struct
 *     cni_fail, whose code maps back here through cni_fail_err()).
 *   - A bare -1 is kept only where the function's doc says it is a boolean-ish "not a valid X /
 *     not found" answer and no code would say more: a parser of one value (core/parse.h,
 *     log_level_parse), an index or length lookup (conf_line, prefix_match_len), and callbacks
 *     whose contract belongs to a library (http_parser: non-zero stops it).
 */
#ifndef AMESH_CORE_ERR_H
#define AMESH_CORE_ERR_H

enum {
	AMESH_ERR_INTERNAL = -1000, /* a bug: an invariant did not hold */
	AMESH_ERR_INVALID = -1001,  /* input failed validation (details in a diag list) */
	AMESH_ERR_NOMEM = -1002,    /* allocation failed */
	AMESH_ERR_NOTFOUND = -1003, /* named object does not exist */
	AMESH_ERR_RANGE = -1004,    /* value outside its allowed range */
	AMESH_ERR_TOOLONG = -1005,  /* input longer than its limit */
	AMESH_ERR_EXISTS = -1006,   /* object already exists */
};

/* Returns a static string for a code from this table, a negative errno or a libuv code: the one
 * function that names an error, whichever layer made it. */
const char *amesh_strerror(int code);

#endif
