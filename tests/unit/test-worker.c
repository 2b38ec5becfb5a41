/* SPDX-License-Identifier: Apache-2.0 */
/* Tests for core/worker.c: calls run on the worker's own thread, posts in order, the queue bound. */
#include "config.h"

#include <pthread.h>
#include <uv.h>

#include "core/worker.h"
#include "runner.h"

struct probe {
	struct worker *w;
	bool on_thread;
	pthread_t tid;
	int seq[8];
	int n;
};

static void
where(void *arg)
{
	struct probe *p = arg;

	p->on_thread = worker_is_current(p->w);
	p->tid = pthread_self();
}

static void
append1(void *arg)
{
	struct probe *p = arg;

	p->seq[p->n++] = 1;
}

static void
append2(void *arg)
{
	struct probe *p = arg;

	p->seq[p->n++] = 2;
}

TEST(worker_call_runs_on_its_thread)
{
	struct worker *w = worker_new(1, NULL);
	struct probe p = { .w = w };

	ASSERT(!worker_is_current(w));
	worker_call(w, where, &p);
	ASSERT(p.on_thread);
	ASSERT(!pthread_equal(p.tid, pthread_self()));
	/* Posts run in order, before a later call returns. */
	ASSERT(worker_post(w, append1, &p));
	ASSERT(worker_post(w, append2, &p));
	worker_call(w, append1, &p);
	ASSERT_EQ(p.n, 3);
	ASSERT_EQ(p.seq[0], 1);
	ASSERT_EQ(p.seq[1], 2);
	ASSERT_EQ(p.seq[2], 1);
	worker_stop(w);
}

static pthread_mutex_t gate = PTHREAD_MUTEX_INITIALIZER;
static int ran, entered;

static void
block(void *arg)
{
	__atomic_store_n(&entered, 1, __ATOMIC_RELEASE);
	pthread_mutex_lock(&gate);
	pthread_mutex_unlock(&gate);
}

static void
count(void *arg)
{
	ran++;
}

TEST(worker_queue_is_bounded)
{
	struct worker *w = worker_new(1, NULL);
	size_t queued = 0;

	/* The worker is held in block() while the queue fills. */
	pthread_mutex_lock(&gate);
	ASSERT(worker_post(w, block, NULL));
	while (!__atomic_load_n(&entered, __ATOMIC_ACQUIRE))
		uv_sleep(1);
	while (queued < 2 * WORKER_QUEUE_MAX && worker_post(w, count, NULL))
		queued++;
	ASSERT_EQ(queued, (size_t)WORKER_QUEUE_MAX);
	pthread_mutex_unlock(&gate);
	worker_stop(w); /* runs what was queued, then ends */
	ASSERT_EQ((size_t)ran, queued);
}

TEST(worker_zero_is_the_callers_loop)
{
	uv_loop_t loop;
	struct worker *w;
	struct probe p;

	ASSERT_EQ(uv_loop_init(&loop), 0);
	w = worker_new(0, &loop);
	p.w = w;
	ASSERT(worker_loop(w) == &loop);
	ASSERT(worker_is_current(w));
	worker_call(w, where, &p); /* on its own thread: at once */
	ASSERT(p.on_thread);
	ASSERT(worker_post(w, count, NULL));
	ran = 0;
	uv_run(&loop, UV_RUN_NOWAIT);
	ASSERT_EQ(ran, 1);
	worker_release_main(w);
	uv_run(&loop, UV_RUN_DEFAULT); /* ends: the wakeup handle is closed */
	worker_stop(w);
	ASSERT_EQ(uv_loop_close(&loop), 0);
}
