/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"
#include "config/registry.h"
#include "runner.h"
TEST(registry_example) {}
TEST(registry_lookups) {}
TEST(registry_endpoints_and_policies) {}
TEST(registry_bad_inputs) {}
TEST(registry_cross_file) {}
TEST(registry_reload_keeps_old) {}
TEST(registry_many_entries) {}
