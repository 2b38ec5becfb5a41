/* SPDX-License-Identifier: Apache-2.0 */
/* Every unit test, registered once: TEST_ENTRY(name) for a function test_name in a test-*.c file. */
#define TEST_LIST(X)                        \
	X(parse_port)                       \
	X(parse_duration)                   \
	X(parse_size)                       \
	X(parse_bool)                       \
	X(parse_ip_prefix)                  \
	X(parse_sockaddr)                   \
	X(pattern_match)                    \
	X(log_text_json_journal)            \
	X(htab_basic)                       \
	X(conf_defaults)                    \
	X(conf_sample_file)                 \
	X(conf_relative_paths)              \
	X(conf_bad_inputs)                  \
	X(conf_all_errors_reported)         \
	X(conf_long_line_not_truncated)     \
	X(registry_example)                 \
	X(registry_lookups)                 \
	X(registry_endpoints_and_policies)  \
	X(registry_bad_inputs)              \
	X(registry_cross_file)              \
	X(registry_reload_keeps_old)        \
	X(registry_list_keys_repeat)        \
	X(registry_all_policy_errors)       \
	X(registry_many_entries)            \
	X(cert_spiffe_id_issued)            \
	X(cert_spiffe_id_san_shapes)        \
	X(spiffe_split_cases)               \
	X(cert_check_identity_refusals)     \
	X(cert_load_errors)                 \
	X(ca_save_load)                     \
	X(ca_write_file_atomic)             \
	X(identity_load_good_only)          \
	X(identity_reload_rotation)         \
	X(identity_watch)                   \
	X(identity_watch_free_while_watching)
