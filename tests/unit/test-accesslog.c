/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for telemetry/accesslog.c and log_record: the exact line in text and JSON, the switch. */
#include "config.h"

#include <fcntl.h>
#include <unistd.h>

#include "core/log.h"
#include "telemetry/accesslog.h"
#include "runner.h"

static const struct tcp_labels conn = {
	.reporter = "source",
	.source_workload = "sleep",
	.source_workload_namespace = "default",
	.source_principal = "spiffe://cluster.local/ns/default/sa/sleep",
	.destination_workload = "echo",
	.destination_workload_namespace = "default",
	.destination_service = "echo.default.svc.cluster.local",
	.destination_principal = "spiffe://cluster.local/ns/default/sa/echo",
	.response_flags = "-",
	.connection_security_policy = "mutual_tls",
};

/* Runs one access-log call with stderr going to a file; returns what was written. */
static char *
capture(enum log_format fmt, const struct tcp_labels *l, const char *flags)
{
	char path[] = "/tmp/amesh-alog.XXXXXX";
	int fd = mkstemp(path), saved = dup(2);
	static char buf[32768];
	ssize_t n;

	ASSERT(fd >= 0 && saved >= 0);
	dup2(fd, 2);
	/* Level error: access records are written whatever the level. */
	log_init(LOG_LVL_ERROR, fmt);
	log_set_journal(true);
	accesslog_tcp(l, "10.0.0.1:40000", "10.0.0.2:80", 490, 67, 12, flags);
	dup2(saved, 2);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	return buf;
}

TEST(accesslog_text_json)
{
	struct tcp_labels l = conn;

	ASSERT(!accesslog_enabled());
	ASSERT_STREQ(capture(LOG_FMT_TEXT, &conn, NULL), "");
	accesslog_set_enabled(true);
	ASSERT_STREQ(capture(LOG_FMT_TEXT, &conn, NULL),
	    "<6>info: access: connection complete src.addr=10.0.0.1:40000 src.workload=sleep "
	    "src.namespace=default src.identity=spiffe://cluster.local/ns/default/sa/sleep "
	    "dst.addr=10.0.0.2:80 dst.service=echo.default.svc.cluster.local dst.workload=echo "
	    "dst.namespace=default dst.identity=spiffe://cluster.local/ns/default/sa/echo "
	    "direction=outbound bytes_sent=67 bytes_recv=490 duration=12ms\n");
	ASSERT_STREQ(capture(LOG_FMT_JSON, &conn, "DENY"),
	    "<6>{\"level\":\"info\",\"scope\":\"access\",\"msg\":\"connection complete\","
	    "\"src.addr\":\"10.0.0.1:40000\",\"src.workload\":\"sleep\",\"src.namespace\":\"default\","
	    "\"src.identity\":\"spiffe://cluster.local/ns/default/sa/sleep\","
	    "\"dst.addr\":\"10.0.0.2:80\",\"dst.service\":\"echo.default.svc.cluster.local\","
	    "\"dst.workload\":\"echo\",\"dst.namespace\":\"default\","
	    "\"dst.identity\":\"spiffe://cluster.local/ns/default/sa/echo\","
	    "\"direction\":\"outbound\",\"bytes_sent\":67,\"bytes_recv\":490,\"duration\":\"12ms\","
	    "\"flags\":\"DENY\"}\n");
	/* Unknown values are left out; odd ones are quoted and escaped. */
	memset(&l, 0, sizeof(l));
	l.reporter = "destination";
	l.source_workload = "two words";
	l.destination_workload = "q\"=\n";
	l.response_flags = "UF";
	ASSERT_STREQ(capture(LOG_FMT_TEXT, &l, NULL),
	    "<6>info: access: connection complete src.addr=10.0.0.1:40000 "
	    "src.workload=\"two words\" dst.addr=10.0.0.2:80 dst.workload=\"q\\\"=\\n\" "
	    "direction=inbound bytes_sent=67 bytes_recv=490 duration=12ms flags=UF\n");
	accesslog_set_enabled(false);
	ASSERT_STREQ(capture(LOG_FMT_JSON, &conn, NULL), "");
}

TEST(log_record_truncates_whole_fields)
{
	char path[] = "/tmp/amesh-alog.XXXXXX";
	int fd = mkstemp(path), saved = dup(2);
	static char buf[65536], big[600];
	struct log_field f[64];
	ssize_t n;

	memset(big, 'v', sizeof(big) - 1);
	for (size_t i = 0; i < 64; i++)
		f[i] = (struct log_field){ "k", big, 0 };
	ASSERT(fd >= 0 && saved >= 0);
	dup2(fd, 2);
	log_init(LOG_LVL_INFO, LOG_FMT_JSON);
	log_set_journal(true);
	log_record(LOG_LVL_WARN, "access", "m", f, 64);
	dup2(saved, 2);
	close(saved);
	lseek(fd, 0, SEEK_SET);
	n = read(fd, buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	close(fd);
	unlink(path);
	/* One line, a valid object: values cut at 512 bytes, fields that do not fit left out. */
	{
		const char *pre = "<4>{\"level\":\"warn\",\"scope\":\"access\",\"msg\":\"m\",\"k\":\"vvv";

		ASSERT(strncmp(buf, pre, strlen(pre)) == 0);
	}
	{
		const char *suf = "vv\",\"truncated\":true}\n";

		ASSERT(strcmp(buf + strlen(buf) - strlen(suf), suf) == 0);
	}
	ASSERT(strchr(buf, '\n') == buf + strlen(buf) - 1);
	ASSERT(strstr(buf, "\"k\":\"") != NULL);
	{
		const char *v = strstr(buf, "\"k\":\"") + 5;

		ASSERT_EQ(strcspn(v, "\""), 512);
	}
	ASSERT(strlen(buf) < 16384);
}
