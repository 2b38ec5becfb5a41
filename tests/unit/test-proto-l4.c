/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tests for l7/proto-l4.c: bytes the L4 relay cannot queue reset the tunnel (counted in
 * l4_resets) instead of vanishing mid-stream while their window is returned.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "config/registry.h"
#include "core/buf.h"
#include "l7/tunnel.h"
#include "runner.h"

static const char reg_text[] =
    "[node \"node-a\"]\naddress = 192.168.10.1\n"
    "[workload \"a1\"]\nnamespace = default\nnode = node-a\naddresses = 10.1.1.2\n"
    "labels = app=a\n"
    "[service \"svc\"]\nnamespace = default\nvip = 10.96.0.1\nports = 80:8080\n"
    "selector = app=a\n";

static void *
failing_realloc(void *ptr, size_t size)
{
	return NULL;
}

/* The client's first bytes (what detection saw) cannot be queued for the upstream: the tunnel is
 * reset before any upstream is opened, and counted. */
TEST(l4_unqueued_bytes_reset)
{
	struct registry_holder holder;
	struct registry *r;
	struct waypoint wp;
	struct tun t;
	uv_loop_t loop;
	struct diag d;

	diag_init(&d);
	ASSERT_EQ(registry_parse_buffer("reg.conf", reg_text, strlen(reg_text), &r, &d), 0);
	diag_clear(&d);
	registry_holder_init(&holder);
	registry_holder_set(&holder, r);
	ASSERT_EQ(uv_loop_init(&loop), 0);
	memset(&wp, 0, sizeof(wp));
	wp.role = "waypoint";
	wp.reg = &holder;
	wp.loop = &loop;
	ASSERT_EQ(lb_new(&wp.lb), 0);
	memset(&t, 0, sizeof(t));
	t.wp = &wp;
	t.side = L7_SIDE_WAYPOINT;
	t.state = TUN_OPEN;
	t.reg = registry_holder_get(&holder);
	t.svc = registry_find(t.reg, REG_SERVICE, "svc");
	t.port = 80;
	snprintf(t.authority, sizeof(t.authority), "svc.default:80");
	t.peer_id = strdup("spiffe://cluster.local/ns/default/sa/front");
	buf_init(&t.in, WP_QUEUE_MAX);
	l7_sendq_init(&t.out);
	ASSERT_EQ(buf_put(&t.in, "SSH-2.0-x\r\n", 11), 0);
	t.proto = &l7_l4_ops;

	buf_test_realloc = failing_realloc;
	ASSERT_EQ(t.proto->start(&t), 0);
	buf_test_realloc = NULL;
	ASSERT_EQ(wp.st.l4_resets, 1);
	ASSERT_EQ(wp.st.tunnels_l4, 1);
	ASSERT_EQ(wp.st.upstream_failures, 0); /* no upstream was opened for it */

	t.proto->free(&t);
	buf_reset(&t.in);
	l7_sendq_reset(&t.out);
	free(t.peer_id);
	registry_unref(t.reg);
	lb_free(wp.lb);
	ASSERT_EQ(uv_loop_close(&loop), 0);
	registry_holder_destroy(&holder);
}
