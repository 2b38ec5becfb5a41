/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The ztunnel's records of enrolled workloads, one file per workload in [ztunnel] state_dir:
 * DIR/NAME holds one line, the workload's namespace path. The ztunnel writes and removes them (so
 * a restarted ztunnel serves the same namespaces); amesh cni reads them when the ztunnel is down.
 * This module is the one owner of that format. NAME is a workload name (kw_is_hostname), so a
 * record can never name a path outside DIR.
 */
#ifndef AMESH_NET_RECORDS_H
#define AMESH_NET_RECORDS_H

#include <stdbool.h>

/* Whether name can name a record. */
bool records_name_ok(const char *name);
/* Writes DIR/NAME atomically (a temporary file, fsync, rename). Returns 0 or -errno. */
int records_write(const char *dir, const char *name, const char *netns);
/* Removes DIR/NAME. Returns 0 (also when there was none) or -errno. */
int records_remove(const char *dir, const char *name);
/* The namespace path of DIR/NAME as a new string, or NULL when there is none or it is malformed
 * (empty, blanks or control characters). */
char *records_read(const char *dir, const char *name);
/* Calls fn for each well-formed record of DIR, in readdir order; a missing DIR has none. fn may
 * remove the record it is given. */
void records_foreach(const char *dir, void (*fn)(const char *name, const char *netns, void *arg),
    void *arg);

#endif
