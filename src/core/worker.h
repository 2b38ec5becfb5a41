/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Worker event loops: [ztunnel] workers = N runs the proxy on N libuv loops, the main loop
 * (worker 0) and N-1 threads with a loop each.
 *
 * Design (amesh-ztunnel(8) WORKERS):
 *  - Each worker holds a complete L4 proxy of its own (src/proxy: flows, the workloads' HBONE
 *    pools and servers, the balancer); nothing of the data path is shared between loops, so
 *    the data path needs no lock. Shared and immutable: the registry snapshot and identities
 *    (refcounts are atomic, holders lock); shared and locked: the metrics store, the mbedTLS
 *    DRBG (mbedTLS's threading layer), the netns helper.
 *  - Listeners stay where they were, on worker 0 (one per namespace and port, so the hitless
 *    upgrade hands over exactly the same sockets, core/inherit.h). Worker 0 accepts and hands
 *    each connection round robin to a worker (itself included); the others adopt the
 *    descriptor. Accepting is cheap next to relaying and TLS, which is what is spread. The DNS
 *    proxy (UDP 15053), enrollment, registry, certificates and admin stay on worker 0.
 *  - Control (enroll, unenroll, stats, drain) runs on worker 0, which asks each other worker
 *    with worker_call (runs a function on that loop and waits for it): the others' state is
 *    only ever touched from their own thread. Workers never wait on worker 0.
 *
 * The waypoint ([waypoint] workers, amesh-waypoint(8) WORKERS) runs its L7 engine the same way:
 * worker 0 owns the HBONE listener and hands connections out; each worker has its engine, HBONE
 * server and pool; the balancer is shared (lb_ref), max_connections counted with atomics.
 *
 * Bounds: WORKER_MAX workers; a worker's queue of posted jobs holds WORKER_QUEUE_MAX; past it
 * worker_post refuses (the caller serves the connection itself).
 * Threads: worker_call and worker_post from any thread but the target's own for worker_call.
 */
#ifndef AMESH_CORE_WORKER_H
#define AMESH_CORE_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#define WORKER_MAX 64
#define WORKER_QUEUE_MAX 8192

struct worker;

/*
 * Worker index with loop, which the caller runs (worker 0: the main loop), or a new thread with
 * a loop of its own (index > 0), started at once. Aborts when out of memory or threads (startup).
 */
struct worker *worker_new(unsigned index, uv_loop_t *main_loop);
unsigned worker_index(const struct worker *w);
uv_loop_t *worker_loop(struct worker *w);
/* Whether the caller runs on w's loop thread. */
bool worker_is_current(const struct worker *w);

/* Runs fn(arg) on w's loop and returns once it did. On w's own thread, runs it at once. */
void worker_call(struct worker *w, void (*fn)(void *arg), void *arg);
/* Queues fn(arg) to run on w's loop. false when the queue is full or w stops (not queued). */
bool worker_post(struct worker *w, void (*fn)(void *arg), void *arg);
/* The same for control (a drain, its end): never refused for a full queue; aborts if w stopped. */
void worker_post_ctl(struct worker *w, void (*fn)(void *arg), void *arg);

/* Lets w's loop end once its other handles are closed (its wakeup handle is closed now, on
 * its thread); for a thread, waits for it to end. Then frees w. Accepts NULL. */
void worker_stop(struct worker *w);
/* Worker 0: closes its wakeup handle so that the main loop can end (from the main thread). */
void worker_release_main(struct worker *w);
/*
 * Runs fn on the calling thread when its worker loop has ended (a worker thread), so that
 * per-thread caches (free lists of buffers) are freed with their thread. Registering twice is
 * the caller's to avoid; at most WORKER_EXIT_HOOKS per thread, more are ignored. The main thread's
 * caches stay reachable until the process exits.
 */
#define WORKER_EXIT_HOOKS 8
void worker_at_thread_exit(void (*fn)(void));

#endif
