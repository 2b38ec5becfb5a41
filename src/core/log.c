/* SPDX-License-Identifier: Apache-2.0 */
/* Log sink. One line per call, written with a single write(2) so lines from threads do not mix. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

static enum log_level cur_level = LOG_LVL_INFO;
static enum log_format cur_format = LOG_FMT_TEXT;
static bool journal;

static const char *const level_names[] = { "error", "warn", "info", "debug" };
/* syslog priorities for the journald "<N>" prefix. */
static const int level_prio[] = { 3, 4, 6, 7 };

/* JOURNAL_STREAM is "DEV:INODE" of the stream journald gave us; only trust it if stderr is that stream. */
static bool
detect_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (js == NULL || sscanf(js, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) != 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void
log_init(enum log_level level, enum log_format format)
{
	cur_level = level;
	cur_format = format;
	journal = detect_journal();
}

void
log_set_level(enum log_level level)
{
	cur_level = level;
}

enum log_level
log_get_level(void)
{
	return cur_level;
}

void
log_set_format(enum log_format format)
{
	cur_format = format;
}

void
log_set_journal(bool on)
{
	journal = on;
}

int
log_level_parse(const char *s)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0)
			return (int)i;
	if (strcmp(s, "warning") == 0)
		return LOG_LVL_WARN;
	return -1;
}

const char *
log_level_name(enum log_level level)
{
	return level_names[level];
}

int
log_format_parse(const char *s)
{
	if (strcmp(s, "text") == 0)
		return LOG_FMT_TEXT;
	if (strcmp(s, "json") == 0)
		return LOG_FMT_JSON;
	return -1;
}

/* Appends s to buf as JSON string content (no quotes). */
static size_t
json_escape(char *buf, size_t off, size_t cap, const char *s)
{
	for (; *s != '\0' && off + 7 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			buf[off++] = '\\';
			buf[off++] = (char)c;
		} else if (c < 0x20) {
			off += (size_t)snprintf(buf + off, cap - off, "\\u%04x", c);
		} else {
			buf[off++] = (char)c;
		}
	}
	return off;
}

static void
emit(enum log_level level, const char *func, const char *msg)
{
	char line[4096];
	char ts[96] = "";
	size_t off = 0;

	if (!journal) {
		struct timespec now;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &now);
		gmtime_r(&now.tv_sec, &tm);
		snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
	}
	if (journal)
		off += (size_t)snprintf(line, sizeof(line), "<%d>", level_prio[level]);
	if (cur_format == LOG_FMT_JSON) {
		if (!journal)
			off += (size_t)snprintf(line + off, sizeof(line) - off, "{\"time\":\"%s\",", ts);
		else
			off += (size_t)snprintf(line + off, sizeof(line) - off, "{");
		off += (size_t)snprintf(line + off, sizeof(line) - off,
		    "\"level\":\"%s\",\"func\":\"%s\",\"msg\":\"", level_names[level], func);
		off = json_escape(line, off, sizeof(line) - 3, msg);
		line[off++] = '"';
		line[off++] = '}';
	} else {
		if (!journal)
			off += (size_t)snprintf(line + off, sizeof(line) - off, "%s ", ts);
		off += (size_t)snprintf(line + off, sizeof(line) - off, "%s: %s",
		    level_names[level], msg);
		if (off > sizeof(line) - 2)
			off = sizeof(line) - 2;
	}
	line[off++] = '\n';
	/* One write keeps concurrent lines whole; a failed log write has nowhere to be reported. */
	if (write(STDERR_FILENO, line, off) < 0)
		return;
}

void
log_msg(enum log_level level, const char *func, const char *fmt, ...)
{
	char msg[3072];
	va_list ap;

	if (level > cur_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	emit(level, func, msg);
}

void
log_fatal(bool with_errno, const char *func, const char *fmt, ...)
{
	char msg[3072];
	int saved = errno;
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = strlen(msg);
	if (with_errno)
		snprintf(msg + n, sizeof(msg) - n, ": %s", strerror(saved));
	emit(LOG_LVL_ERROR, func, msg);
	exit(1);
}
