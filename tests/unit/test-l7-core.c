/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for l7/core.c, the tunnel core: a tunnel the engine cannot set up is refused and leaves
 * nothing behind. The HBONE stream is a stand-in: hbone_stream_respond is wrapped at link time
 * (-Wl,--wrap) to record the answer given to it.
 */
#include "config.h"

#include "config/conf.h"
#include "config/registry.h"
#include "failalloc.h"
#include "l7/tunnel.h"
#include "runner.h"

static const char reg_text[] =
    "[node \"node-a\"]\naddress = 192.168.10.1\n"
    "[workload \"a1\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2\n"
    "labels = app=a\n"
    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80:8080\n"
    "selector = app=a\n";

/* The stand-in stream: only its address is used. */
static struct fake_stream {
	int status; /* what hbone_stream_respond was given, 0: not called */
} fake;

int __real_hbone_stream_respond(struct hbone_stream *s, int status);
int __wrap_hbone_stream_respond(struct hbone_stream *s, int status);

int
__wrap_hbone_stream_respond(struct hbone_stream *s, int status)
{
	if (s != (struct hbone_stream *)&fake)
		return __real_hbone_stream_respond(s, status);
	fake.status = status;
	return 0;
}

/*
 * Issue 13's defect "a failed peer_id allocation leaks forwarded and baggage": a CONNECT that
 * carries Forwarded and Baggage, whose peer ID cannot be copied, is answered 503 and frees the
 * copies already made of the other two: no block allocated during the call is left (and, in the
 * ASan build, LeakSanitizer would fail the test at exit).
 */
TEST(l7_accept_peer_id_alloc_failure)
{
	static const char peer[] = "spiffe://cluster.local/ns/default/sa/front";
	struct hbone_request req = {
		.authority = "10.96.0.1:80", .host = "10.96.0.1", .port = 80, .peer_id = peer,
		.peer_addr = "10.1.1.9:40000", .forwarded = "for=\"10.1.1.9:40000\"",
		.baggage = "k8s.namespace.name=default,k8s.workload.name=front",
	};
	struct hbone_request bad = req;
	struct registry_holder holder;
	struct amesh_conf conf;
	struct waypoint wp;
	size_t shared = 0; /* with workers, max_connections' count over all of them */

	memset(&conf, 0, sizeof(conf));
	conf.waypoint.max_connections = 16;
	registry_holder_init(&holder);
	registry_holder_set(&holder, test_registry(reg_text));
	memset(&wp, 0, sizeof(wp));
	wp.role = "waypoint";
	wp.conf = &conf;
	wp.reg = &holder;
	wp.active_shared = &shared;

	failalloc_arm_strdup(peer);
	l7_accept_hbone(&wp, (struct hbone_stream *)&fake, &req);
	failalloc_disarm();
	ASSERT_STREQ(failalloc_failed(), "strdup"); /* the peer ID's copy was the one refused */
	ASSERT(failalloc_calls() >= 3);             /* forwarded and baggage were copied too */
	ASSERT_EQ(fake.status, 503);
	ASSERT_EQ(wp.st.tunnels, 0);
	ASSERT_EQ(wp.st.active, 0);
	ASSERT(wp.tuns == NULL);
	ASSERT_EQ(failalloc_live(), 0);
	ASSERT_EQ(shared, 0); /* the refused tunnel's place is given back */

	/* A CONNECT to nothing of the registry: 400, and its place is given back too. */
	bad.authority = "10.96.9.9:80";
	snprintf(bad.host, sizeof(bad.host), "10.96.9.9");
	for (int i = 0; i < 20; i++) {
		fake.status = 0;
		l7_accept_hbone(&wp, (struct hbone_stream *)&fake, &bad);
		ASSERT_EQ(fake.status, 400);
	}
	ASSERT_EQ(shared, 0);
	ASSERT(wp.tuns == NULL);

	registry_holder_destroy(&holder);
}
