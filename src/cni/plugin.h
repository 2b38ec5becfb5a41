/* SPDX-License-Identifier: Apache-2.0 */
/* amesh-cni, the chained CNI plugin (amesh-cni(8), CNI PLUGIN). */
#ifndef AMESH_CNI_PLUGIN_H
#define AMESH_CNI_PLUGIN_H

#include "config/conf.h"

/*
 * Serves one CNI request: CNI_COMMAND and the other CNI_* variables, the network configuration on
 * stdin; the result or the spec's error object on stdout. log_setup applies amesh.conf's [log]
 * once it is loaded. Returns the process exit code (0 or 1).
 */
int cni_plugin_main(void (*log_setup)(const char *conf_path, const struct amesh_conf *conf));

#endif
