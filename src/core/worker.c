/* SPDX-License-Identifier: Apache-2.0 */
/* Worker event loops (worker.h): a loop per thread and a locked job queue woken by uv_async. */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/util.h"
#include "core/worker.h"

struct job {
	void (*fn)(void *arg);
	void *arg;
	bool *done; /* worker_call: set once it ran (the caller waits on cv), else NULL */
	struct job *next;
};

struct worker {
	unsigned index;
	uv_loop_t *loop;
	uv_loop_t own; /* index > 0 */
	uv_async_t wake;
	pthread_t tid;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job *head, *tail; /* guarded by mu */
	size_t n;
	bool stopping; /* no more jobs taken */
	pthread_mutex_t start_mu;
};

static void
run_jobs(struct worker *w)
{
	struct job *j, *next;

	pthread_mutex_lock(&w->mu);
	j = w->head;
	w->head = w->tail = NULL;
	w->n = 0;
	pthread_mutex_unlock(&w->mu);
	for (; j != NULL; j = next) {
		next = j->next;
		j->fn(j->arg);
		if (j->done != NULL) {
			pthread_mutex_lock(&w->mu);
			*j->done = true;
			pthread_cond_broadcast(&w->cv);
			pthread_mutex_unlock(&w->mu);
		} else
			free(j);
	}
}

static void
on_wake(uv_async_t *a)
{
	run_jobs(a->data);
}

static _Thread_local void (*exit_hooks[WORKER_EXIT_HOOKS])(void);
static _Thread_local unsigned n_exit_hooks;

void
worker_at_thread_exit(void (*fn)(void))
{
	if (n_exit_hooks < WORKER_EXIT_HOOKS)
		exit_hooks[n_exit_hooks++] = fn;
}

static void *
thread_main(void *arg)
{
	struct worker *w = arg;
	char name[16];

	/* Named for ps -L and /proc/PID/task/TID/comm. */
	snprintf(name, sizeof(name), "amesh-w%u", w->index);
	pthread_setname_np(pthread_self(), name);
	/* Wait until worker_new has recorded tid. */
	pthread_mutex_lock(&w->start_mu);
	pthread_mutex_unlock(&w->start_mu);
	uv_run(w->loop, UV_RUN_DEFAULT);
	while (n_exit_hooks > 0)
		exit_hooks[--n_exit_hooks]();
	return NULL;
}

struct worker *
worker_new(unsigned index, uv_loop_t *main_loop)
{
	struct worker *w = xcalloc(1, sizeof(*w));

	w->index = index;
	pthread_mutex_init(&w->mu, NULL);
	pthread_mutex_init(&w->start_mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	if (index == 0) {
		w->loop = main_loop;
		w->tid = pthread_self();
	} else {
		if (uv_loop_init(&w->own) != 0)
			fatalx("worker %u: cannot create its event loop", index);
		w->loop = &w->own;
	}
	if (uv_async_init(w->loop, &w->wake, on_wake) != 0)
		fatalx("worker %u: cannot create its wakeup handle", index);
	w->wake.data = w;
	if (index > 0) {
		pthread_mutex_lock(&w->start_mu);
		if (pthread_create(&w->tid, NULL, thread_main, w) != 0)
			fatalx("worker %u: cannot start its thread", index);
		pthread_mutex_unlock(&w->start_mu);
	}
	return w;
}

unsigned
worker_index(const struct worker *w)
{
	return w->index;
}

uv_loop_t *
worker_loop(struct worker *w)
{
	return w->loop;
}

bool
worker_is_current(const struct worker *w)
{
	return pthread_equal(pthread_self(), w->tid);
}

static bool
enqueue(struct worker *w, struct job *j, bool bounded)
{
	pthread_mutex_lock(&w->mu);
	if (w->stopping || (bounded && w->n >= WORKER_QUEUE_MAX)) {
		pthread_mutex_unlock(&w->mu);
		return false;
	}
	if (w->tail != NULL)
		w->tail->next = j;
	else
		w->head = j;
	w->tail = j;
	w->n++;
	pthread_mutex_unlock(&w->mu);
	uv_async_send(&w->wake);
	return true;
}

void
worker_call(struct worker *w, void (*fn)(void *arg), void *arg)
{
	bool done = false;
	struct job j = { fn, arg, &done, NULL };

	if (worker_is_current(w)) {
		fn(arg);
		return;
	}
	if (!enqueue(w, &j, false))
		fatalx("worker %u: called after it stopped", w->index);
	pthread_mutex_lock(&w->mu);
	while (!done)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
}

bool
worker_post(struct worker *w, void (*fn)(void *arg), void *arg)
{
	struct job *j = malloc(sizeof(*j));

	if (j == NULL)
		return false;
	*j = (struct job){ fn, arg, NULL, NULL };
	if (!enqueue(w, j, true)) {
		free(j);
		return false;
	}
	return true;
}

void
worker_post_ctl(struct worker *w, void (*fn)(void *arg), void *arg)
{
	struct job *j = xmalloc(sizeof(*j));

	*j = (struct job){ fn, arg, NULL, NULL };
	if (!enqueue(w, j, false))
		fatalx("worker %u: control message after it stopped", w->index);
}

/* On w's thread: what is queued runs, then nothing more is taken and the wakeup closes. */
static void
close_wake(void *arg)
{
	struct worker *w = arg;

	pthread_mutex_lock(&w->mu);
	w->stopping = true;
	pthread_mutex_unlock(&w->mu);
	run_jobs(w);
	uv_close((uv_handle_t *)&w->wake, NULL);
}

void
worker_release_main(struct worker *w)
{
	if (w != NULL && !uv_is_closing((uv_handle_t *)&w->wake))
		close_wake(w);
}

void
worker_stop(struct worker *w)
{
	if (w == NULL)
		return;
	if (w->index > 0) {
		/* Queued behind whatever was posted before: those run first. */
		worker_post_ctl(w, close_wake, w);
		pthread_join(w->tid, NULL);
		if (uv_loop_close(&w->own) != 0)
			log_warn("worker %u: its loop still had handles at exit", w->index);
	} else
		worker_release_main(w);
	pthread_mutex_destroy(&w->mu);
	pthread_mutex_destroy(&w->start_mu);
	pthread_cond_destroy(&w->cv);
	free(w);
}
