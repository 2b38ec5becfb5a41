/* SPDX-License-Identifier: Apache-2.0 */
/* A bounded list of "FILE:LINE: message" diagnostics collected while validating input. */
#ifndef AMESH_CORE_DIAG_H
#define AMESH_CORE_DIAG_H

#include <stddef.h>
#include <stdio.h>

/* At most this many messages are kept; later ones are counted, not stored. */
#define DIAG_MAX 64

struct diag {
	char *msg[DIAG_MAX];
	size_t n;       /* stored messages */
	size_t dropped; /* messages past DIAG_MAX */
};

void diag_init(struct diag *d);
/* Frees the stored messages; accepts NULL. */
void diag_clear(struct diag *d);
/* Adds "FILE:LINE: message" (or "FILE: message" when line is 0). */
void diag_add(struct diag *d, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
size_t diag_count(const struct diag *d);
/* First message or NULL. */
const char *diag_first(const struct diag *d);
/* Prints every message, one a line, then a count of dropped ones. */
void diag_print(const struct diag *d, FILE *fp);

#endif
