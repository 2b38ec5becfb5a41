/* SPDX-License-Identifier: Apache-2.0 */
/* Text for the error codes of err.h. */
#include "config.h"

#include <uv.h>

#include "core/err.h"

const char *
amesh_strerror(int code)
{
	switch (code) {
	case 0: return "success";
	case AMESH_ERR_INTERNAL: return "internal error";
	case AMESH_ERR_INVALID: return "invalid input";
	case AMESH_ERR_NOMEM: return "out of memory";
	case AMESH_ERR_NOTFOUND: return "not found";
	case AMESH_ERR_RANGE: return "value out of range";
	case AMESH_ERR_TOOLONG: return "too long";
	case AMESH_ERR_EXISTS: return "already exists";
	}
	/* libuv's codes are -errno on Linux, plus its own (UV_EOF, UV_EAI_*): it names both. */
	if (code < 0)
		return uv_strerror(code);
	return "unknown error";
}
