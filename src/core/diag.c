/* SPDX-License-Identifier: Apache-2.0 */
/* Diagnostics list: collects validation errors so a user sees all of them at once. */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/diag.h"
#include "core/util.h"

void
diag_init(struct diag *d)
{
	memset(d, 0, sizeof(*d));
}

void
diag_clear(struct diag *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->n; i++)
		free(d->msg[i]);
	diag_init(d);
}

void
diag_add(struct diag *d, const char *file, int line, const char *fmt, ...)
{
	char body[512];
	va_list ap;

	if (d->n >= DIAG_MAX) {
		d->dropped++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	if (line > 0)
		d->msg[d->n++] = xasprintf("%s:%d: %s", file, line, body);
	else
		d->msg[d->n++] = xasprintf("%s: %s", file, body);
}

size_t
diag_count(const struct diag *d)
{
	return d->n + d->dropped;
}

const char *
diag_first(const struct diag *d)
{
	return d->n > 0 ? d->msg[0] : NULL;
}

void
diag_print(const struct diag *d, FILE *fp)
{
	for (size_t i = 0; i < d->n; i++)
		fprintf(fp, "%s\n", d->msg[i]);
	if (d->dropped > 0)
		fprintf(fp, "(%zu more errors not shown)\n", d->dropped);
}
