/* SPDX-License-Identifier: Apache-2.0 */
/* Logging: levels, text or JSON lines on stderr, journald-aware (no timestamps, <N> prefixes). */
#ifndef AMESH_CORE_LOG_H
#define AMESH_CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };
enum log_format { LOG_FMT_TEXT = 0, LOG_FMT_JSON };

/* Sets level and format; detects journald through JOURNAL_STREAM matching stderr. */
void log_init(enum log_level level, enum log_format format);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
void log_set_format(enum log_format format);
/* Forces journald style on or off (tests); log_init() detects it. */
void log_set_journal(bool on);

/* Parses "error", "warn", "info", "debug"; returns -1 if unknown. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level level);
/* Parses "text" or "json"; returns -1 if unknown. */
int log_format_parse(const char *s);

void log_msg(enum log_level level, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Logs at error level, with strerror(errno) appended for fatal(), and exits 1. */
void log_fatal(bool with_errno, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define log_error(...) log_msg(LOG_LVL_ERROR, __func__, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __func__, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __func__, __VA_ARGS__)
/* Free when debug is off: arguments are not evaluated. */
#define log_debug(...)                                             \
	do {                                                       \
		if (log_get_level() >= LOG_LVL_DEBUG)              \
			log_msg(LOG_LVL_DEBUG, __func__, __VA_ARGS__); \
	} while (0)
#define fatal(...) log_fatal(true, __func__, __VA_ARGS__)
#define fatalx(...) log_fatal(false, __func__, __VA_ARGS__)

/* One field of a structured record: a string, or the number num when str is NULL. */
struct log_field {
	const char *key;
	const char *str;
	unsigned long long num;
};

/*
 * Writes one structured record, whatever the level (a record has its own switch, such as
 * [log] access_log), at the priority of level. Text: "TIME LEVEL: SCOPE: MSG key=value ...", a
 * value quoted (with \" \\ \n escapes) when it is empty or holds a blank, '"', '=', a backslash or
 * a control character. JSON: {"time":..,"level":..,"scope":..,"msg":..,"key":value,...}, numbers bare.
 * Values are cut at 512 bytes; fields that do not fit the line are left out and a last field
 * truncated=true says so.
 */
void log_record(enum log_level level, const char *scope, const char *msg,
    const struct log_field *fields, size_t n);

#endif
