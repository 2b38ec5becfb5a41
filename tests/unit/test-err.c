/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for core/err.c: one function names every error code, whichever layer made it. */
#include "config.h"

#include <errno.h>
#include <uv.h>

#include "core/err.h"
#include "runner.h"

TEST(err_strings)
{
	ASSERT_STREQ(amesh_strerror(0), "success");
	/* An amesh code where a libuv or errno code was expected printed "Unknown system error". */
	ASSERT_STREQ(amesh_strerror(AMESH_ERR_NOMEM), "out of memory");
	ASSERT_STREQ(amesh_strerror(AMESH_ERR_EXISTS), "already exists");
	ASSERT_STREQ(amesh_strerror(-ENOENT), "no such file or directory");
	ASSERT_STREQ(amesh_strerror(UV_EOF), "end of file");
	ASSERT_STREQ(amesh_strerror(UV_EADDRINUSE), "address already in use");
	ASSERT_STREQ(amesh_strerror(7), "unknown error");
}
