/* SPDX-License-Identifier: Apache-2.0 */
/* Unit-test helpers: assertions that print what differed, and temp-file helpers. */
#ifndef AMESH_TEST_RUNNER_H
#define AMESH_TEST_RUNNER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST(name) void test_##name(void); void test_##name(void)

#define ASSERT(cond)                                                                   \
	do {                                                                           \
		if (!(cond)) {                                                         \
			fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__,     \
			    __LINE__, #cond);                                          \
			exit(1);                                                       \
		}                                                                      \
	} while (0)

#define ASSERT_EQ(a, b)                                                                \
	do {                                                                           \
		long long a_ = (long long)(a), b_ = (long long)(b);                    \
		if (a_ != b_) {                                                        \
			fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n",      \
			    __FILE__, __LINE__, #a, #b, a_, b_);                       \
			exit(1);                                                       \
		}                                                                      \
	} while (0)

#define ASSERT_STREQ(a, b)                                                             \
	do {                                                                           \
		const char *a_ = (a), *b_ = (b);                                       \
		if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0) {                 \
			fprintf(stderr, "%s:%d: %s == %s failed:\n  got:  %s\n  want: %s\n", \
			    __FILE__, __LINE__, #a, #b, a_ ? a_ : "(null)",            \
			    b_ ? b_ : "(null)");                                       \
			exit(1);                                                       \
		}                                                                      \
	} while (0)

struct registry;
/* Parses text as one registry file ("reg.conf"); prints the problems and fails the test when it
 * does not parse. The caller unrefs the registry. */
struct registry *test_registry(const char *text);

/* Makes a fresh temporary directory; returns a static path reused by the calling test only. */
const char *test_tmpdir(void);
/* Writes data to dir/name (creating dir/); returns the path, valid until the next call. */
const char *test_write(const char *dir, const char *name, const char *data);

#endif
