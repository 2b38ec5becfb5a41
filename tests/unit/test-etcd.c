/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for config/etcdurl.c and etcd/kv.c: the etcd:// source and etcd's gateway JSON, no etcd. */
#include "config.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/etcdurl.h"
#include "config/registry.h"
#include "core/err.h"
#include "etcd/kv.h"
#include "etcd/regstore.h"
#include "runner.h"

TEST(etcd_url_parse)
{
	struct etcd_url u;
	char why[256];

	ASSERT(etcd_url_is("etcd://h/x"));
	ASSERT(!etcd_url_is("/etc/amesh/registry.d"));
	ASSERT_EQ(etcd_url_parse("etcd://a.example:2379,10.0.0.2,[fd00::1]:23790/amesh/prod", &u,
	    why, sizeof(why)), 0);
	ASSERT_EQ(u.n, 3);
	ASSERT_STREQ(u.endpoints[0], "a.example:2379");
	ASSERT_STREQ(u.endpoints[1], "10.0.0.2:2379");
	ASSERT_STREQ(u.endpoints[2], "[fd00::1]:23790");
	ASSERT_STREQ(u.prefix, "/amesh/prod");
	etcd_url_free(&u);
	static const char *const bad[] = {
		"etcd://", "etcd:///amesh", "etcd://h", "etcd://h/", "etcd://h/a/", "etcd://h//a",
		"etcd://h:0/a", "etcd://h:65536/a", "etcd://h:x/a", "etcd://fd00::1/a", "etcd://h,/a",
		"etcd://,h/a", "etcd://h/a b", "etcd://h_h/a", "etcd://[fd00::1/a", "http://h/a",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why[0] = '\0';
		ASSERT_EQ(etcd_url_parse(bad[i], &u, why, sizeof(why)), AMESH_ERR_INVALID);
		ASSERT(why[0] != '\0');
		etcd_url_free(&u);
	}
	/* More endpoints than the limit. */
	{
		char s[512] = "etcd://";

		for (int i = 0; i <= ETCD_MAX_ENDPOINTS; i++)
			strcat(s, i ? ",h" : "h");
		strcat(s, "/a");
		ASSERT_EQ(etcd_url_parse(s, &u, why, sizeof(why)), AMESH_ERR_INVALID);
		ASSERT(strstr(why, "more than") != NULL);
		etcd_url_free(&u);
	}
}

TEST(etcd_kv_json)
{
	char *s, *d;
	size_t len;
	json_t *j;

	s = etcd_b64("/amesh/", 7);
	ASSERT_STREQ(s, "L2FtZXNoLw==");
	ASSERT_EQ(etcd_unb64(s, &d, &len), 0);
	ASSERT_EQ(len, 7);
	ASSERT_STREQ(d, "/amesh/");
	free(d);
	free(s);
	ASSERT_EQ(etcd_unb64("not base64!", &d, &len), AMESH_ERR_INVALID);
	ASSERT(d == NULL);
	ASSERT_EQ(etcd_unb64("QUI=", &d, &len), 0);
	ASSERT(len == 2 && strcmp(d, "AB") == 0);
	free(d);
	ASSERT_EQ(etcd_unb64("", &d, &len), 0);
	ASSERT(len == 0);
	free(d);
	static const char *const bad64[] = { "Q===", "QQ=A", "QQ", "QQ==QQ==", "QQ\n=" };
	for (size_t i = 0; i < sizeof(bad64) / sizeof(bad64[0]); i++)
		ASSERT_EQ(etcd_unb64(bad64[i], &d, &len), AMESH_ERR_INVALID);
	s = etcd_prefix_end("/amesh/");
	ASSERT_STREQ(s, "/amesh0");
	free(s);
	/* 64-bit numbers come as strings; numbers are accepted too. */
	j = json_loads("{\"a\":\"42\",\"b\":7,\"c\":\"x\",\"d\":\"\"}", 0, NULL);
	ASSERT_EQ(etcd_int(json_object_get(j, "a")), 42);
	ASSERT_EQ(etcd_int(json_object_get(j, "b")), 7);
	ASSERT_EQ(etcd_int(json_object_get(j, "c")), -1);
	ASSERT_EQ(etcd_int(json_object_get(j, "d")), -1);
	ASSERT_EQ(etcd_int(json_object_get(j, "missing")), 0);
	json_decref(j);
	s = etcd_range_request("/a/", "/a0", 12, 100);
	j = json_loads(s, 0, NULL);
	ASSERT_STREQ(json_string_value(json_object_get(j, "key")), "L2Ev");
	ASSERT_EQ(json_integer_value(json_object_get(j, "revision")), 12);
	json_decref(j);
	free(s);
	s = etcd_watch_request("/a/", "/a0", 0);
	ASSERT(strstr(s, "start_revision") == NULL && strstr(s, "create_request") != NULL);
	free(s);
}

TEST(etcd_range_parse)
{
	struct etcd_range rg;
	char why[256];
	/* An answer as etcd 3.4's gateway writes it: key "/r/files/a.conf", value "[node \"n\"]\n". */
	json_t *j = json_loads("{\"header\":{\"cluster_id\":\"1\",\"revision\":\"9\"},\"kvs\":["
	    "{\"key\":\"L3IvZmlsZXMvYS5jb25m\",\"create_revision\":\"2\",\"mod_revision\":\"8\","
	    "\"version\":\"3\",\"value\":\"W25vZGUgIm4iXQo=\"}],\"count\":\"1\"}", 0, NULL);

	ASSERT(j != NULL);
	ASSERT_EQ(etcd_range_parse(j, &rg, 10, 1024, why, sizeof(why)), 0);
	ASSERT_EQ(rg.revision, 9);
	ASSERT_EQ(rg.n, 1);
	ASSERT_STREQ(rg.kvs[0].key, "/r/files/a.conf");
	ASSERT_STREQ(rg.kvs[0].value, "[node \"n\"]\n");
	ASSERT_EQ(rg.kvs[0].mod_revision, 8);
	etcd_range_free(&rg);
	/* Bounds: too many keys, a value too large. */
	ASSERT_EQ(etcd_range_parse(j, &rg, 0, 1024, why, sizeof(why)), AMESH_ERR_TOOLONG);
	etcd_range_free(&rg);
	ASSERT_EQ(etcd_range_parse(j, &rg, 10, 4, why, sizeof(why)), AMESH_ERR_TOOLONG);
	ASSERT(strstr(why, "/r/files/a.conf") != NULL);
	etcd_range_free(&rg);
	json_decref(j);
	/* No key under the prefix: no "kvs" at all. */
	j = json_loads("{\"header\":{\"revision\":\"3\"}}", 0, NULL);
	ASSERT_EQ(etcd_range_parse(j, &rg, 10, 1024, why, sizeof(why)), 0);
	ASSERT_EQ(rg.n, 0);
	ASSERT_EQ(rg.revision, 3);
	etcd_range_free(&rg);
	json_decref(j);
	static const char *const bad[] = {
		"{}", "[]", "{\"header\":{\"revision\":\"x\"}}",
		"{\"header\":{\"revision\":\"3\"},\"kvs\":{}}",
		"{\"header\":{\"revision\":\"3\"},\"kvs\":[{\"value\":\"eA==\"}]}",
		"{\"header\":{\"revision\":\"3\"},\"kvs\":[{\"key\":\"!!\"}]}",
		"{\"header\":{\"revision\":\"3\"},\"kvs\":[{\"key\":\"eA==\",\"value\":\"%%\"}]}",
		"{\"header\":{\"revision\":\"3\"},\"kvs\":[{\"key\":\"eA==\",\"mod_revision\":\"-1\"}]}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		j = json_loads(bad[i], JSON_DECODE_ANY, NULL);
		ASSERT(j != NULL);
		ASSERT(etcd_range_parse(j, &rg, 10, 1024, why, sizeof(why)) < 0);
		etcd_range_free(&rg);
		json_decref(j);
	}
}

TEST(etcd_watch_parse)
{
	struct etcd_watch_msg m;
	char why[256];
	json_t *j;

	j = json_loads("{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}", 0, NULL);
	ASSERT_EQ(etcd_watch_parse(j, &m, why, sizeof(why)), 0);
	ASSERT(m.created && !m.canceled && m.nevents == 0 && m.revision == 5);
	json_decref(j);
	j = json_loads("{\"result\":{\"header\":{\"revision\":\"7\"},\"events\":[{\"kv\":"
	    "{\"key\":\"eA==\",\"mod_revision\":\"7\"}},{\"type\":\"DELETE\",\"kv\":{\"key\":\"eQ==\","
	    "\"mod_revision\":\"7\"}}]}}", 0, NULL);
	ASSERT_EQ(etcd_watch_parse(j, &m, why, sizeof(why)), 0);
	ASSERT_EQ(m.nevents, 2);
	ASSERT_EQ(m.event_revision, 7);
	json_decref(j);
	/* A start revision older than the compaction: cancelled, with the compact revision. */
	j = json_loads("{\"result\":{\"header\":{},\"canceled\":true,\"compact_revision\":\"3\"}}", 0,
	    NULL);
	ASSERT_EQ(etcd_watch_parse(j, &m, why, sizeof(why)), 0);
	ASSERT(m.canceled && m.compact_revision == 3);
	json_decref(j);
	j = json_loads("{\"error\":{\"grpc_code\":14,\"message\":\"etcdserver: no leader\"}}", 0, NULL);
	ASSERT_EQ(etcd_watch_parse(j, &m, why, sizeof(why)), 0);
	ASSERT(m.canceled && strstr(m.reason, "no leader") != NULL);
	json_decref(j);
	j = json_loads("{\"result\":{\"events\":{}}}", 0, NULL);
	ASSERT_EQ(etcd_watch_parse(j, &m, why, sizeof(why)), AMESH_ERR_INVALID);
	json_decref(j);
	j = json_loads("{\"nothing\":1}", 0, NULL);
	ASSERT_EQ(etcd_watch_parse(j, &m, why, sizeof(why)), AMESH_ERR_INVALID);
	json_decref(j);
}

/* The cache round-trips a snapshot, refuses another source's, and the build names keys. */
TEST(etcd_snapshot_cache)
{
	char dir[] = "/tmp/amesh-unit-etcd-XXXXXX", why[512], path[256];
	struct etcd_regfile files[1];
	struct etcd_snapshot s = { .revision = 42, .read_revision = 50, .files = files, .n = 1,
		.meta_revision = 42, .pushed_at_ms = 1000 }, *back = NULL;
	struct registry *r = NULL;
	struct diag d;
	const char *bad = "[node \"n\"]\naddress = 10.0.0.1\nflavour = x\n";

	ASSERT(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/sub/registry.cache", dir);
	files[0] = (struct etcd_regfile){ .key = (char *)"/r/files/a.conf", .name = "a.conf",
		.data = (char *)bad, .len = strlen(bad), .mod_revision = 42 };
	ASSERT_EQ(etcd_snapshot_save(&s, "etcd://h/r", path, why, sizeof(why)), 0);
	ASSERT_EQ(etcd_snapshot_load(path, "etcd://h/r", &back, why, sizeof(why)), 0);
	ASSERT_EQ(back->revision, 42);
	ASSERT_EQ(back->n, 1);
	ASSERT_STREQ(back->files[0].name, "a.conf");
	ASSERT(etcd_snapshot_same(&s, back));
	diag_init(&d);
	ASSERT(etcd_snapshot_build(back, &r, &d) != 0);
	ASSERT(strstr(diag_first(&d), "/r/files/a.conf:3:") != NULL);
	diag_clear(&d);
	etcd_snapshot_free(back);
	ASSERT_EQ(etcd_snapshot_load(path, "etcd://h/other", &back, why, sizeof(why)),
	    AMESH_ERR_INVALID);
	ASSERT(strstr(why, "etcd://h/r") != NULL);
	snprintf(path, sizeof(path), "%s/none", dir);
	ASSERT(etcd_snapshot_load(path, "etcd://h/r", &back, why, sizeof(why)) < 0);
	snprintf(path, sizeof(path), "rm -rf '%s'", dir);
	ASSERT(system(path) == 0);
}

/* A watch message's events applied to the snapshot before them: puts, a delete, meta, others. */
TEST(etcd_snapshot_apply_events)
{
	char why[256];
	struct etcd_regfile files[2] = {
		{ .key = (char *)"/r/files/a.conf", .name = "a.conf", .data = (char *)"A", .len = 1,
		    .mod_revision = 3 },
		{ .key = (char *)"/r/files/c.conf", .name = "c.conf", .data = (char *)"C", .len = 1,
		    .mod_revision = 4 },
	};
	struct etcd_snapshot base = { .revision = 4, .read_revision = 6, .files = files, .n = 2 }, *s;
	struct etcd_event *ev;
	size_t n;
	/* b.conf put ("B"), c.conf deleted, meta put, a key outside files/ and a dot file. */
	json_t *j = json_loads("{\"result\":{\"header\":{\"revision\":\"7\"},\"events\":["
	    "{\"kv\":{\"key\":\"L3IvZmlsZXMvYi5jb25m\",\"mod_revision\":\"7\",\"value\":\"Qg==\"}},"
	    "{\"type\":\"DELETE\",\"kv\":{\"key\":\"L3IvZmlsZXMvYy5jb25m\",\"mod_revision\":\"7\"}},"
	    "{\"kv\":{\"key\":\"L3IvbWV0YQ==\",\"mod_revision\":\"7\",\"value\":"
	    "\"eyJwdXNoZWRfYXRfbXMiOjUsInB1c2hlZF9ieSI6InUifQ==\"}},"
	    "{\"kv\":{\"key\":\"L3Ivb3RoZXI=\",\"mod_revision\":\"7\",\"value\":\"eA==\"}},"
	    "{\"kv\":{\"key\":\"L3IvZmlsZXMvLmguY29uZg==\",\"mod_revision\":\"7\",\"value\":\"eA==\"}}"
	    "]}}", 0, NULL);

	ASSERT(j != NULL);
	ASSERT_EQ(etcd_watch_events(j, 1024, &ev, &n, why, sizeof(why)), 0);
	ASSERT_EQ(n, 5);
	ASSERT(!ev[0].deleted && ev[1].deleted);
	ASSERT_EQ(etcd_snapshot_apply(&base, "/r", ev, n, &s, why, sizeof(why)), 0);
	ASSERT_EQ(s->n, 2);
	ASSERT_STREQ(s->files[0].key, "/r/files/a.conf");
	ASSERT_STREQ(s->files[1].key, "/r/files/b.conf");
	ASSERT_STREQ(s->files[1].name, "b.conf");
	ASSERT_STREQ(s->files[1].data, "B");
	ASSERT_EQ(s->revision, 7);
	ASSERT_EQ(s->read_revision, 7);
	ASSERT_EQ(s->meta_revision, 7);
	ASSERT_EQ(s->pushed_at_ms, 5);
	ASSERT_STREQ(s->pushed_by, "u");
	etcd_snapshot_free(s);
	etcd_events_free(ev, n);
	/* A value past the bound is refused, naming the key. */
	ASSERT_EQ(etcd_watch_events(j, 0, &ev, &n, why, sizeof(why)), AMESH_ERR_INVALID);
	ASSERT(strstr(why, "/r/files/b.conf") != NULL && ev == NULL && n == 0);
	json_decref(j);
}
