/* SPDX-License-Identifier: Apache-2.0 */
/* Error codes shared by every module: 0 is success, negative is -errno or AMESH_ERR_*. */
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
