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

/* The level changes at run time (admin /logging) while worker threads log: atomic, relaxed. */
void
log_set_level(enum log_level level)
{
	__atomic_store_n(&cur_level, level, __ATOMIC_RELAXED);
}

enum log_level
log_get_level(void)
{
	return __atomic_load_n(&cur_level, __ATOMIC_RELAXED);
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

	if (level > log_get_level())
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

/* A record's line under construction; a piece that does not fit leaves the line as it was. */
struct rec {
	char line[16384];
	size_t off;
	bool full;
};

#define REC_VALUE_MAX 512
/* Room kept for what closes the line: truncated=true, '}', '\n'. */
#define REC_RESERVE 32

static bool
rec_put(struct rec *r, const char *s, size_t n)
{
	if (r->full || r->off + n + REC_RESERVE > sizeof(r->line)) {
		r->full = true;
		return false;
	}
	memcpy(r->line + r->off, s, n);
	r->off += n;
	return true;
}

/* Appends s escaped for a JSON string or a quoted text value (both use \" \\ \n \t \uXXXX). */
static void
rec_escaped(struct rec *r, const char *s)
{
	size_t n = strnlen(s, REC_VALUE_MAX);

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			rec_put(r, esc, 2);
		} else if (c == '\n') {
			rec_put(r, "\\n", 2);
		} else if (c == '\t') {
			rec_put(r, "\\t", 2);
		} else if (c < 0x20 || c == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			rec_put(r, esc, 6);
		} else {
			rec_put(r, (const char *)&c, 1);
		}
	}
}

static bool
needs_quotes(const char *s)
{
	if (*s == '\0')
		return true;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= ' ' || *s == '"' || *s == '=' || *s == '\\' || *s == 0x7f)
			return true;
	return false;
}

void
log_record(enum log_level level, const char *scope, const char *msg,
    const struct log_field *fields, size_t n)
{
	struct rec r;
	char ts[64] = "", num[32];
	bool json = cur_format == LOG_FMT_JSON;

	r.off = 0;
	r.full = false;
	if (!journal) {
		struct timespec now;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &now);
		gmtime_r(&now.tv_sec, &tm);
		snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		    tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
	}
	if (journal)
		r.off = (size_t)snprintf(r.line, sizeof(r.line), "<%d>", level_prio[level]);
	if (json) {
		if (!journal)
			r.off += (size_t)snprintf(r.line + r.off, sizeof(r.line) - r.off,
			    "{\"time\":\"%s\",", ts);
		else
			rec_put(&r, "{", 1);
		r.off += (size_t)snprintf(r.line + r.off, sizeof(r.line) - r.off,
		    "\"level\":\"%s\",\"scope\":\"", level_names[level]);
		rec_escaped(&r, scope);
		rec_put(&r, "\",\"msg\":\"", 9);
		rec_escaped(&r, msg);
		rec_put(&r, "\"", 1);
	} else {
		if (!journal)
			r.off += (size_t)snprintf(r.line + r.off, sizeof(r.line) - r.off, "%s ", ts);
		r.off += (size_t)snprintf(r.line + r.off, sizeof(r.line) - r.off, "%s: ",
		    level_names[level]);
		rec_escaped(&r, scope);
		rec_put(&r, ": ", 2);
		rec_escaped(&r, msg);
	}
	for (size_t i = 0; i < n && !r.full; i++) {
		size_t mark = r.off;
		const char *v = fields[i].str;

		if (v == NULL)
			snprintf(num, sizeof(num), "%llu", fields[i].num);
		rec_put(&r, json ? ",\"" : " ", json ? 2 : 1);
		rec_escaped(&r, fields[i].key);
		rec_put(&r, json ? "\":" : "=", json ? 2 : 1);
		if (v == NULL) {
			rec_put(&r, num, strlen(num));
		} else if (json || needs_quotes(v)) {
			rec_put(&r, "\"", 1);
			rec_escaped(&r, v);
			rec_put(&r, "\"", 1);
		} else {
			rec_escaped(&r, v);
		}
		if (r.full)
			r.off = mark; /* the field did not fit: leave it out whole */
	}
	if (r.full) {
		const char *t = json ? ",\"truncated\":true" : " truncated=true";

		memcpy(r.line + r.off, t, strlen(t));
		r.off += strlen(t);
	}
	if (json)
		r.line[r.off++] = '}';
	r.line[r.off++] = '\n';
	/* One write keeps concurrent lines whole; a failed log write has nowhere to be reported. */
	if (write(STDERR_FILENO, r.line, r.off) < 0)
		return;
}
