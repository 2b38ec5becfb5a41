/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for net/handoff.c's LIST lines and net/records.c, the formats cni and ztunnel share. */
#include "config.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/handoff.h"
#include "net/records.h"
#include "runner.h"

TEST(handoff_list_lines)
{
	struct handoff_list l = { 0 };
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);

	ASSERT(fp != NULL);
	handoff_list_line(fp, "web", "/run/netns/web", "serving", "");
	handoff_list_line(fp, "db", "/proc/42/ns/net", "failed", "no certificate for spiffe://x: "
	    "issue it");
	fputs("old /run/netns/old\n", fp); /* an older ztunnel: no state, serving */
	fputs("garbage\n", fp);
	fclose(fp);
	ASSERT_STREQ(text, "web /run/netns/web serving\ndb /proc/42/ns/net failed no certificate "
	    "for spiffe://x: issue it\nold /run/netns/old\ngarbage\n");
	ASSERT_EQ(handoff_list_parse(text, &l), 1);
	ASSERT_EQ(l.n, 3);
	ASSERT_STREQ(l.v[0].state, "serving");
	ASSERT_STREQ(l.v[0].why, "");
	ASSERT_STREQ(l.v[1].netns, "/proc/42/ns/net");
	ASSERT_STREQ(l.v[1].state, "failed");
	ASSERT_STREQ(l.v[1].why, "no certificate for spiffe://x: issue it");
	ASSERT_STREQ(l.v[2].state, "serving");
	ASSERT(handoff_list_find(&l, "db") == &l.v[1]);
	ASSERT(handoff_list_find(&l, "nope") == NULL);
	handoff_list_free(&l);
	ASSERT_EQ(l.n, 0);
	free(text);
}

static void
collect(const char *name, const char *netns, void *arg)
{
	handoff_list_add(arg, name, netns, "recorded", "");
}

TEST(records_roundtrip)
{
	char dir[] = "/tmp/amesh-records.XXXXXX", path[64];
	struct handoff_list l = { 0 };
	char *ns;
	FILE *fp;

	ASSERT(mkdtemp(dir) != NULL);
	ASSERT_EQ(records_write(dir, "web", "/run/netns/web"), 0);
	ASSERT_EQ(records_write(dir, "web", "/run/netns/web2"), 0); /* replaced whole */
	ns = records_read(dir, "web");
	ASSERT_STREQ(ns, "/run/netns/web2");
	free(ns);
	ASSERT(records_read(dir, "none") == NULL);
	/* Malformed records are not records: empty, or a path with a blank. */
	snprintf(path, sizeof(path), "%s/empty", dir);
	fp = fopen(path, "w");
	ASSERT(fp != NULL);
	fclose(fp);
	snprintf(path, sizeof(path), "%s/blank", dir);
	fp = fopen(path, "w");
	ASSERT(fp != NULL);
	fputs("/run/netns/a b\n", fp);
	fclose(fp);
	ASSERT(records_read(dir, "blank") == NULL);
	records_foreach(dir, collect, &l);
	ASSERT_EQ(l.n, 1);
	ASSERT_STREQ(l.v[0].workload, "web");
	handoff_list_free(&l);
	ASSERT(!records_name_ok(".web.tmp"));
	ASSERT(!records_name_ok("../x"));
	ASSERT(records_name_ok("web-2"));
	ASSERT_EQ(records_remove(dir, "web"), 0);
	ASSERT_EQ(records_remove(dir, "web"), 0); /* absent is fine */
	ASSERT(records_read(dir, "web") == NULL);
	unlink(path);
	snprintf(path, sizeof(path), "%s/empty", dir);
	unlink(path);
	ASSERT_EQ(rmdir(dir), 0);
}
