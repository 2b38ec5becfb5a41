/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for core/log.c: what reaches stderr in text, JSON and journald modes. */
#include "config.h"

#include <fcntl.h>
#include <unistd.h>

#include "core/log.h"
#include "runner.h"

/* Runs one log call with stderr redirected to a file and returns what was written. */
static char *
capture(enum log_level lvl, enum log_format fmt, bool journal, const char *msg)
{
	char path[] = "/tmp/amesh-log.XXXXXX";
	int fd = mkstemp(path), saved = dup(2);
	static char buf[4096];
	ssize_t n;

	ASSERT(fd >= 0 && saved >= 0);
	dup2(fd, 2);
	log_init(LOG_LVL_INFO, fmt);
	log_set_journal(journal);
	log_msg(lvl, "fn", "%s", msg);
	log_debug("debug is %s", "off");
	dup2(saved, 2);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	return buf;
}

TEST(log_text_json_journal)
{
	char *s;

	s = capture(LOG_LVL_WARN, LOG_FMT_TEXT, true, "workload default/a: bad");
	ASSERT_STREQ(s, "<4>warn: workload default/a: bad\n");
	s = capture(LOG_LVL_ERROR, LOG_FMT_JSON, true, "say \"hi\"\n");
	ASSERT_STREQ(s, "<3>{\"level\":\"error\",\"func\":\"fn\",\"msg\":\"say \\\"hi\\\"\\u000a\"}\n");
	/* Outside journald: an ISO-8601 UTC timestamp first, no priority prefix. */
	s = capture(LOG_LVL_INFO, LOG_FMT_TEXT, false, "hello");
	ASSERT(strlen(s) == strlen("2026-11-26T04:01:56.123Z info: hello\n"));
	ASSERT(s[4] == '-' && s[10] == 'T' && s[23] == 'Z');
	ASSERT(strcmp(s + 25, "info: hello\n") == 0);
	s = capture(LOG_LVL_INFO, LOG_FMT_JSON, false, "x");
	ASSERT(strncmp(s, "{\"time\":\"", 9) == 0);
	ASSERT(strstr(s, "\"level\":\"info\",\"func\":\"fn\",\"msg\":\"x\"}\n") != NULL);
	/* Below the level: nothing at all. */
	s = capture(LOG_LVL_DEBUG, LOG_FMT_TEXT, false, "hidden");
	ASSERT_STREQ(s, "");
	ASSERT_EQ(log_level_parse("debug"), LOG_LVL_DEBUG);
	ASSERT_EQ(log_level_parse("loud"), -1);
	ASSERT_EQ(log_format_parse("json"), LOG_FMT_JSON);
}
