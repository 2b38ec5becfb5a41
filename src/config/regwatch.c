/* SPDX-License-Identifier: Apache-2.0 */
/* Registry hot reload: parsing runs on the libuv thread pool so the data path never waits. */
#include "config.h"

#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "config/regwatch.h"
#include "core/log.h"

/* Editors and `cp -r` produce bursts of events; one parse per burst. */
#define REGWATCH_SETTLE_MS 200

static void
reload_work(uv_work_t *req)
{
	struct regwatch *w = req->data;

	diag_init(&w->diag);
	w->fresh = NULL;
	registry_load_dir(w->dir, &w->fresh, &w->diag);
}

static void
reload_done(uv_work_t *req, int status)
{
	struct regwatch *w = req->data;
	char what[128];

	w->busy = false;
	if (w->fresh != NULL) {
		what[0] = '\0';
		if (w->describe != NULL)
			w->describe(w->fresh, what, sizeof(what));
		registry_holder_set(w->holder, w->fresh);
		log_info("registry %s: reloaded (%s)", w->dir, what);
		w->fresh = NULL;
	} else {
		/* Refused whole: the snapshot in force stays. */
		for (size_t i = 0; i < w->diag.n; i++)
			log_error("%s", w->diag.msg[i]);
		log_error("registry %s: reload refused; the previous registry stays in force",
		    w->dir);
	}
	diag_clear(&w->diag);
	if (w->again && !w->stopping) {
		w->again = false;
		regwatch_trigger(w, REGWATCH_SETTLE_MS);
	}
}

static void
reload_now(uv_timer_t *t)
{
	struct regwatch *w = t->data;

	if (w->stopping)
		return;
	if (w->busy) {
		w->again = true;
		return;
	}
	w->busy = true;
	w->work.data = w;
	if (uv_queue_work(w->loop, &w->work, reload_work, reload_done) != 0)
		w->busy = false;
}

static void
on_change(uv_fs_event_t *h, const char *file, int events, int status)
{
	regwatch_trigger(h->data, REGWATCH_SETTLE_MS);
}

int
regwatch_start(struct regwatch *w, uv_loop_t *loop, const char *dir,
    struct registry_holder *holder, regwatch_describe_fn describe)
{
	int rc;

	*w = (struct regwatch){ .loop = loop, .dir = dir, .holder = holder,
		.describe = describe };
	uv_timer_init(loop, &w->timer);
	w->timer.data = w;
	uv_fs_event_init(loop, &w->fs);
	w->fs.data = w;
	rc = uv_fs_event_start(&w->fs, on_change, dir, 0);
	w->watching = rc == 0;
	return rc;
}

/* FNV-1a over the bytes given. */
static uint64_t
fold(uint64_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static uint64_t
fold_stat(uint64_t h, const struct stat *st)
{
	h = fold(h, &st->st_ino, sizeof(st->st_ino));
	h = fold(h, &st->st_size, sizeof(st->st_size));
	h = fold(h, &st->st_mtim, sizeof(st->st_mtim));
	return fold(h, &st->st_ctim, sizeof(st->st_ctim));
}

uint64_t
regwatch_stamp(const char *path)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	struct stat st;
	struct dirent *e;
	DIR *d;

	if (stat(path, &st) != 0)
		return 0;
	h = fold_stat(h, &st);
	if (!S_ISDIR(st.st_mode) || (d = opendir(path)) == NULL)
		return h;
	/* readdir's order is the directory's own: the same directory gives the same stamp. */
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		h = fold(h, e->d_name, strlen(e->d_name) + 1);
		if (fstatat(dirfd(d), e->d_name, &st, 0) == 0)
			h = fold_stat(h, &st);
	}
	closedir(d);
	return h;
}

void
regwatch_trigger(struct regwatch *w, uint64_t delay_ms)
{
	if (!w->stopping)
		uv_timer_start(&w->timer, reload_now, delay_ms, 0);
}

void
regwatch_stop(struct regwatch *w)
{
	if (w->stopping)
		return;
	w->stopping = true;
	uv_close((uv_handle_t *)&w->timer, NULL);
	uv_close((uv_handle_t *)&w->fs, NULL);
}
