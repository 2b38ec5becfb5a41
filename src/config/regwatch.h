/* SPDX-License-Identifier: Apache-2.0 */
/* Registry hot reload shared by every role: watch the directory, parse off the loop, swap whole. */
#ifndef AMESH_CONFIG_REGWATCH_H
#define AMESH_CONFIG_REGWATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/registry.h"
#include "core/diag.h"

/* Writes the "(N workloads, ...)" part of the "reloaded" log line. */
typedef void (*regwatch_describe_fn)(const struct registry *r, char *buf, size_t n);

struct regwatch {
	uv_loop_t *loop;
	const char *dir;
	struct registry_holder *holder;
	regwatch_describe_fn describe;
	uv_fs_event_t fs;
	uv_timer_t timer;
	uv_work_t work;
	bool busy, again, stopping, watching;
	struct registry *fresh;
	struct diag diag;
};

/*
 * Starts watching dir; changes reload after a short settle delay so that a
 * multi-file edit is parsed once. A refused reload keeps the snapshot in force.
 * Returns 0, or a libuv error when the directory cannot be watched (reloads
 * then happen only through regwatch_trigger()).
 */
int regwatch_start(struct regwatch *w, uv_loop_t *loop, const char *dir,
    struct registry_holder *holder, regwatch_describe_fn describe);

/*
 * What the registry at path (a directory or a file) looks like on disk: names, sizes, inodes and
 * modification times folded into one number. A role takes it before its first load and again
 * once its watch is up: a change between the two is one the watch did not see. 0 if unreadable.
 */
uint64_t regwatch_stamp(const char *path);

/* Reloads after delay_ms (SIGHUP passes 0); coalesces with one in flight. */
void regwatch_trigger(struct regwatch *w, uint64_t delay_ms);

/* Closes the handles; a parse already on the thread pool still finishes. */
void regwatch_stop(struct regwatch *w);

#endif
