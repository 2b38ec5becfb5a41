/* SPDX-License-Identifier: Apache-2.0 */
#include "config.h"
#include "config/conf.h"
#include "runner.h"
TEST(conf_defaults) {}
TEST(conf_sample_file) {}
TEST(conf_relative_paths) {}
TEST(conf_bad_inputs) {}
TEST(conf_all_errors_reported) {}
TEST(conf_long_line_not_truncated) {}
