/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Enrollment with rollback, shared by amesh cni's command line and its CNI plugin (enroll.h):
 * what a namespace holds, the transaction of an add, the order of a del, the ztunnel's list.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cni/enroll.h"
#include "config/registry.h"
#include "etcd/regstore.h"
#include "core/diag.h"
#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "net/netns.h"
#include "net/records.h"

void
cni_fail_set(struct cni_fail *f, int code, const char *msg, const char *fmt, ...)
{
	va_list ap;

	f->code = code;
	f->msg = msg;
	va_start(ap, fmt);
	vsnprintf(f->details, sizeof(f->details), fmt, ap);
	va_end(ap);
}

int
cni_fail_err(const struct cni_fail *f)
{
	switch (f->code) {
	case CNI_ERR_VERSION:
	case CNI_ERR_ENV:
	case CNI_ERR_DECODE:
	case CNI_ERR_CONFIG:
		return AMESH_ERR_INVALID;
	case CNI_ERR_IO:
	case CNI_ERR_RULES:
		return -EIO;
	case CNI_ERR_TRY_AGAIN:
	case CNI_ERR_UNAVAILABLE:
		return -EAGAIN;
	case CNI_ERR_WORKLOAD:
		return AMESH_ERR_NOTFOUND;
	case CNI_ERR_ZTUNNEL:
		return -ECONNREFUSED;
	case CNI_ERR_CONFLICT:
		return AMESH_ERR_EXISTS;
	default:
		return AMESH_ERR_INTERNAL; /* failed without saying why: a bug */
	}
}

void
cni_ctx_free(struct cni_ctx *x)
{
	registry_unref(x->reg);
	conf_free(x->conf);
	x->reg = NULL;
	x->conf = NULL;
}

/* AMESH_HANDOFF_TIMEOUT_MS overrides HANDOFF_TIMEOUT_MS (amesh-cni(8), ENVIRONMENT). */
static int
handoff_timeout(void)
{
	const char *s = getenv("AMESH_HANDOFF_TIMEOUT_MS");
	uint64_t v;
	const char *why;

	if (s != NULL && parse_uint(s, 1, 600000, &v, &why) == 0)
		return (int)v;
	return HANDOFF_TIMEOUT_MS;
}

int
cni_ctx_load(struct cni_ctx *x, const char *path, bool reg_optional, struct cni_fail *f)
{
	struct diag d;
	char what[600];
	int r;

	memset(x, 0, sizeof(*x));
	x->timeout_ms = handoff_timeout();
	diag_init(&d);
	if ((r = conf_load(path, &x->conf, &d)) != 0) {
		cni_fail_set(f, CNI_ERR_CONFIG, "invalid amesh configuration", "%s",
		    diag_count(&d) > 0 ? diag_first(&d) : amesh_strerror(r));
		diag_clear(&d);
		return cni_fail_err(f);
	}
	nft_rules_params_from_conf(&x->params, &x->conf->ztunnel.proxy);
	if (registry_source_read(x->conf, true, &x->reg, what, sizeof(what), &d) != 0) {
		if (reg_optional) {
			log_warn("registry %s: %s: going on without it", x->conf->mesh.registry,
			    diag_count(&d) > 0 ? diag_first(&d) : "invalid");
		} else {
			cni_fail_set(f, CNI_ERR_CONFIG, "invalid registry", "registry %s: %s",
			    x->conf->mesh.registry, diag_count(&d) > 0 ? diag_first(&d) : "invalid");
			diag_clear(&d);
			conf_free(x->conf);
			x->conf = NULL;
			return cni_fail_err(f);
		}
	}
	diag_clear(&d);
	return 0;
}

/* --- the ztunnel side: requests, enrolled list, records ------------------------------------ */

const struct handoff_entry *
cni_enrolled_in(const struct handoff_list *l, const struct netns_id *id)
{
	for (size_t i = 0; i < l->n; i++)
		if (netns_path_is(l->v[i].netns, id))
			return &l->v[i];
	return NULL;
}

static int
zt_request(const struct cni_ctx *x, const struct handoff_msg *m, char *buf, size_t len,
    bool *reached)
{
	return handoff_request(x->conf->cni.socket, m, x->timeout_ms, buf, len, reached);
}

static void
cni_zt_unreachable(const struct cni_ctx *x, int r, bool reached, struct cni_fail *f)
{
	if (!reached)
		cni_fail_set(f, CNI_ERR_TRY_AGAIN, "ztunnel unreachable", "ztunnel not reachable at %s: "
		    "%s (is amesh ztunnel running?)", x->conf->cni.socket, strerror(-r));
	else if (r == -ETIMEDOUT)
		cni_fail_set(f, CNI_ERR_TRY_AGAIN, "ztunnel did not answer", "ztunnel at %s did not "
		    "answer within %d ms", x->conf->cni.socket, x->timeout_ms);
	else
		cni_fail_set(f, CNI_ERR_TRY_AGAIN, "ztunnel connection failed", "ztunnel at %s: %s",
		    x->conf->cni.socket, strerror(-r));
}

int
cni_zt_list(const struct cni_ctx *x, struct handoff_list *out, bool *down, struct cni_fail *f)
{
	struct handoff_msg m = { .op = HANDOFF_LIST, .fd = -1 };
	char *buf = xmalloc(HANDOFF_MAX + 1);
	bool reached;
	int r = zt_request(x, &m, buf, HANDOFF_MAX + 1, &reached);
	size_t bad;

	*down = !reached;
	out->v = NULL;
	out->n = 0;
	if (r < 0) {
		cni_zt_unreachable(x, r, reached, f);
		free(buf);
		return cni_fail_err(f);
	}
	if (r == 0) {
		cni_fail_set(f, CNI_ERR_ZTUNNEL, "ztunnel refused LIST", "ztunnel at %s refused LIST: "
		    "%s", x->conf->cni.socket, buf);
		free(buf);
		return cni_fail_err(f);
	}
	if ((bad = handoff_list_parse(buf, out)) > 0)
		log_warn("ztunnel at %s: ignoring %zu malformed LIST lines", x->conf->cni.socket, bad);
	free(buf);
	return 0;
}

static void
record_remove(const struct cni_ctx *x, const char *name)
{
	int r = records_remove(x->conf->ztunnel.state_dir, name);

	if (r == 0)
		log_info("removed the record %s/%s", x->conf->ztunnel.state_dir, name);
	else
		log_warn("cannot remove the record %s/%s: %s", x->conf->ztunnel.state_dir, name,
		    strerror(-r));
}

static void
add_recorded(const char *name, const char *netns, void *arg)
{
	handoff_list_add(arg, name, netns, "recorded", "");
}

void
cni_records_list(const struct cni_ctx *x, struct handoff_list *out)
{
	out->v = NULL;
	out->n = 0;
	records_foreach(x->conf->ztunnel.state_dir, add_recorded, out);
}

int
cni_enrolled_get(const struct cni_ctx *x, struct handoff_list *out, bool *from_records,
    struct cni_fail *f)
{
	bool down;

	*from_records = false;
	if (cni_zt_list(x, out, &down, f) == 0)
		return 0;
	if (!down)
		return cni_fail_err(f);
	cni_records_list(x, out);
	*from_records = true;
	return 0;
}

/* --- workloads ------------------------------------------------------------------------------- */

enum cni_wl_state
cni_workload_state(const struct cni_ctx *x, const char *name, const struct reg_workload **out)
{
	const struct reg_workload *w = x->reg ? registry_find(x->reg, REG_WORKLOAD, name) : NULL;

	*out = w;
	if (w == NULL)
		return CNI_WL_UNKNOWN;
	if (w->node == NULL || strcmp(w->node, x->conf->mesh.node) != 0)
		return CNI_WL_OTHER_NODE;
	if (w->protocol != REG_PROTO_HBONE)
		return CNI_WL_PLAIN;
	return CNI_WL_OK;
}

void
cni_workload_fail(const struct cni_ctx *x, const char *name, enum cni_wl_state st,
    const struct reg_workload *w, struct cni_fail *f)
{
	switch (st) {
	case CNI_WL_UNKNOWN:
		cni_fail_set(f, CNI_ERR_WORKLOAD, "unknown workload", "workload %s is not in the registry "
		    "%s", name, x->conf->mesh.registry);
		break;
	case CNI_WL_OTHER_NODE:
		cni_fail_set(f, CNI_ERR_WORKLOAD, "workload on another node", "workload %s/%s runs on "
		    "node %s, not on this node (%s)", w->namespace, name, w->node ? w->node : "(none)",
		    x->conf->mesh.node);
		break;
	case CNI_WL_PLAIN:
		cni_fail_set(f, CNI_ERR_WORKLOAD, "workload not captured", "workload %s/%s has protocol "
		    "tcp: it is reached in plain TCP and not captured", w->namespace, name);
		break;
	case CNI_WL_OK:
		break;
	}
}

/* --- enroll and unenroll ------------------------------------------------------------------- */

/*
 * Test hook (amesh-cni(8), ENVIRONMENT): AMESH_TEST_KILL_AT=STEP kills this process with SIGKILL
 * once it reaches STEP, so tests can see the namespace an interrupted add or del leaves.
 */
static void
kill_point(const char *step)
{
	const char *at = getenv("AMESH_TEST_KILL_AT");

	if (at != NULL && strcmp(at, step) == 0) {
		fflush(NULL);
		raise(SIGKILL);
	}
}

/* What a namespace holds before an add or a del changes anything in it. */
struct ns_view {
	const char *path;
	struct netns_id id;
	int table;                   /* 1: table inet amesh is there */
	char owner[NFT_OWNER_MAX];   /* its comment; "" when it has none (rules of amesh 0.1) */
	const struct handoff_entry *here; /* the workload the ztunnel holds (or recorded) here */
};

/* Fills v for the namespace fd (path) from the enrolled list el. Returns 0 or cni_fail_err(f). */
static int
ns_inspect(int fd, const char *path, const struct handoff_list *el, struct ns_view *v,
    struct cni_fail *f)
{
	char err[512];
	int r;

	memset(v, 0, sizeof(*v));
	v->path = path;
	if ((r = netns_id_of_fd(fd, &v->id)) != 0) {
		cni_fail_set(f, CNI_ERR_ENV, "cannot open the network namespace", "netns %s: %s", path,
		    strerror(-r));
		return cni_fail_err(f);
	}
	v->here = cni_enrolled_in(el, &v->id);
	r = nft_rules_owner(fd, path, v->owner, sizeof(v->owner), err, sizeof(err));
	if (r < 0) {
		cni_fail_set(f, CNI_ERR_RULES, "cannot read the interception rules", "%s", err);
		return cni_fail_err(f);
	}
	v->table = r;
	return 0;
}

/*
 * Whether the namespace in v may become the namespace of workload name in the given mode: it
 * must hold nothing, or only what that workload already has there. Returns 0, or
 * cni_fail_err(f) with f (CNI_ERR_CONFLICT) naming who has it and what to run.
 */
static int
ns_claimable(const struct ns_view *v, bool sidecar, const char *name, struct cni_fail *f)
{
	char own[NFT_OWNER_MAX];

	nft_rules_owner_format(own, sizeof(own), sidecar, name);
	if (v->here != NULL && (sidecar || strcmp(v->here->workload, name) != 0)) {
		cni_fail_set(f, CNI_ERR_CONFLICT, "namespace enrolled as another workload", "netns %s is "
		    "enrolled with the ztunnel as workload %s (%s): one namespace, one workload; "
		    "amesh cni del --workload %s first if that is wrong", v->path,
		    v->here->workload, v->here->state, v->here->workload);
		return cni_fail_err(f);
	}
	if (!v->table || strcmp(v->owner, own) == 0)
		return 0;
	if (v->owner[0] == '\0') {
		if (v->here != NULL)
			return 0; /* this workload's, installed by amesh 0.1 */
		cni_fail_set(f, CNI_ERR_CONFLICT, "namespace holds unrecorded rules", "netns %s holds "
		    "a table inet amesh that no enrolled workload owns: amesh cni del --netns %s "
		    "removes it, if it is stale", v->path, v->path);
	} else if (strncmp(v->owner, "sidecar ", 8) == 0) {
		cni_fail_set(f, CNI_ERR_CONFLICT, "namespace captured for a sidecar", "netns %s is "
		    "captured for the sidecar of workload %s: amesh cni del --mode sidecar --netns "
		    "%s first if that is wrong", v->path, v->owner + 8, v->path);
	} else {
		cni_fail_set(f, CNI_ERR_CONFLICT, "namespace holds another workload's rules", "netns %s "
		    "holds the interception rules of %s, left by an add or del that did not finish: "
		    "amesh cni del --netns %s first if that is stale", v->path, v->owner, v->path);
	}
	return cni_fail_err(f);
}

int
cni_rules_remove_owned(const char *path, bool sidecar, const char *name, bool *kept,
    struct cni_fail *f)
{
	char err[512], owner[NFT_OWNER_MAX], want[NFT_OWNER_MAX];
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;
	const char *kind = sidecar ? "sidecar " : "ztunnel ";

	if (kept != NULL)
		*kept = false;
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		cni_fail_set(f, CNI_ERR_RULES, "cannot open the network namespace", "netns %s: cannot "
		    "open: %s", path, strerror(errno));
		return cni_fail_err(f);
	}
	r = nft_rules_owner(fd, path, owner, sizeof(owner), err, sizeof(err));
	if (name != NULL)
		nft_rules_owner_format(want, sizeof(want), sidecar, name);
	if (r == 1 && owner[0] != '\0' && (name != NULL ? strcmp(owner, want) != 0 :
	    strncmp(owner, kind, strlen(kind)) != 0)) {
		log_warn("netns %s: its rules belong to %s: left in place", path, owner);
		if (kept != NULL)
			*kept = true;
		close(fd);
		return 0;
	}
	if (r >= 0)
		r = nft_rules_remove(fd, path, err, sizeof(err));
	close(fd);
	if (r != 0) {
		cni_fail_set(f, CNI_ERR_RULES, "cannot remove the interception rules", "%s", err);
		return cni_fail_err(f);
	}
	return 0;
}

/* Opens the namespace for an add, after checking its path. Returns the fd, or cni_fail_err(f). */
static int
ns_open_for_add(const char *netns_path, struct cni_fail *f)
{
	int fd;

	if (!str_is_word(netns_path) || strlen(netns_path) >= sizeof(((struct handoff_msg *)0)->netns)) {
		cni_fail_set(f, CNI_ERR_ENV, "bad namespace path", "netns '%s': the path must be a single "
		    "word (no blanks) shorter than %zu bytes", netns_path,
		    sizeof(((struct handoff_msg *)0)->netns));
		return cni_fail_err(f);
	}
	fd = open(netns_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		cni_fail_set(f, CNI_ERR_ENV, "cannot open the network namespace", "netns %s: cannot "
		    "open: %s", netns_path, strerror(errno));
		return cni_fail_err(f);
	}
	return fd;
}

/*
 * Installs w's rules (owner comment of mode) in the namespace v describes, after which it is
 * captured. On failure the namespace is put back as v found it: rules that were there stay
 * (with their owner), a namespace that had none is emptied. Returns 0 or cni_fail_err(f).
 */
static int
rules_claim(int fd, const struct ns_view *v, const struct nft_rules_params *base, bool sidecar,
    const char *name, struct cni_fail *f)
{
	struct nft_rules_params p = *base;
	char own[NFT_OWNER_MAX], err[512];

	nft_rules_owner_format(own, sizeof(own), sidecar, name);
	p.owner = own;
	if (nft_rules_install(fd, v->path, &p, err, sizeof(err)) == 0)
		return 0;
	cni_fail_set(f, CNI_ERR_RULES, "cannot install the interception rules", "%s (workload %s)",
	    err, name);
	if (!v->table)
		nft_rules_remove(fd, v->path, err, sizeof(err));
	return cni_fail_err(f);
}

/* After a failed hand-off of workload name: the namespace goes back to what v found (see
 * rules_claim). */
static void
rules_unclaim(int fd, const struct ns_view *v, const struct nft_rules_params *base, const char *name,
    struct cni_fail *f)
{
	struct nft_rules_params p = *base;
	char err[512], own[NFT_OWNER_MAX];
	size_t n = strlen(f->details);
	int r;

	if (v->table) {
		/* It was captured before (this workload's, or one it may take over): it stays
		 * captured, fail closed, with the owner it had. */
		log_warn("workload %s: netns %s was captured before: its rules stay", name, v->path);
		nft_rules_owner_format(own, sizeof(own), false, name);
		if (strcmp(v->owner, own) == 0)
			return;
		p.owner = v->owner;
		r = nft_rules_install(fd, v->path, &p, err, sizeof(err));
	} else {
		r = nft_rules_remove(fd, v->path, err, sizeof(err));
	}
	if (r != 0)
		snprintf(f->details + n, sizeof(f->details) - n, "; and putting the namespace back "
		    "failed: %s", err);
}

int
cni_sidecar_capture(const struct cni_ctx *x, const struct reg_workload *w, const char *netns_path,
    struct cni_fail *f)
{
	struct handoff_list el = { 0 };
	const struct handoff_entry *e;
	struct nft_rules_params p;
	struct ns_view v;
	bool from_records;
	int fd, rc = AMESH_ERR_INTERNAL;

	if ((fd = ns_open_for_add(netns_path, f)) < 0)
		return cni_fail_err(f);
	if (cni_enrolled_get(x, &el, &from_records, f) != 0 || ns_inspect(fd, netns_path, &el, &v, f) != 0)
		goto out;
	/* One proxy per workload: a ztunnel's workload first leaves it (cni del), or a later del
	 * would take the rules from under the sidecar. */
	if ((e = handoff_list_find(&el, w->h.name)) != NULL) {
		cni_fail_set(f, CNI_ERR_CONFLICT, "workload enrolled with the ztunnel", "workload %s/%s "
		    "is enrolled with the ztunnel (netns %s): amesh cni del --workload %s first",
		    w->namespace, w->h.name, e->netns, w->h.name);
		goto out;
	}
	if (ns_claimable(&v, true, w->h.name, f) != 0)
		goto out;
	kill_point("inspected");
	nft_rules_params_for_sidecar(&p, &x->conf->sidecar.proxy);
	rc = rules_claim(fd, &v, &p, true, w->h.name, f);
out:
	handoff_list_free(&el);
	close(fd);
	return rc == 0 ? 0 : cni_fail_err(f); /* f says why */
}

int
cni_enroll(const struct cni_ctx *x, const struct reg_workload *w, const char *netns_path,
    struct cni_fail *f)
{
	struct handoff_msg m = { .op = HANDOFF_ADD, .fd = -1 };
	struct handoff_list el = { 0 };
	const struct handoff_entry *e;
	struct ns_view v;
	char ack[1024];
	bool down, reached;
	int fd, r, rc = AMESH_ERR_INTERNAL;

	if ((fd = ns_open_for_add(netns_path, f)) < 0)
		return cni_fail_err(f);
	/* Ask the ztunnel first: if it is not there, leave the namespace alone. */
	if (cni_zt_list(x, &el, &down, f) != 0 || ns_inspect(fd, netns_path, &el, &v, f) != 0)
		goto out;
	if (ns_claimable(&v, false, w->h.name, f) != 0)
		goto out;
	e = handoff_list_find(&el, w->h.name);
	if (e != NULL && e != v.here && access(e->netns, F_OK) == 0) {
		cni_fail_set(f, CNI_ERR_CONFLICT, "workload enrolled in another namespace", "workload "
		    "%s/%s is enrolled in netns %s (%s), which still exists: amesh cni del --workload "
		    "%s first to move it", w->namespace, w->h.name, e->netns, e->state, w->h.name);
		goto out;
	}
	kill_point("inspected");
	if (rules_claim(fd, &v, &x->params, false, w->h.name, f) != 0)
		goto out;
	kill_point("rules");
	m.fd = fd;
	snprintf(m.workload, sizeof(m.workload), "%s", w->h.name);
	snprintf(m.netns, sizeof(m.netns), "%s", netns_path);
	r = zt_request(x, &m, ack, sizeof(ack), &reached);
	if (r == 1) {
		kill_point("handoff");
		log_debug("workload %s/%s: enrolled, netns %s", w->namespace, w->h.name, netns_path);
		rc = 0;
		goto out;
	}
	if (r == 0)
		cni_fail_set(f, CNI_ERR_ZTUNNEL, "ztunnel refused the workload", "ztunnel at %s refused "
		    "workload %s/%s: %s", x->conf->cni.socket, w->namespace, w->h.name, ack);
	else
		cni_zt_unreachable(x, r, reached, f);
	rules_unclaim(fd, &v, &x->params, w->h.name, f);
out:
	handoff_list_free(&el);
	close(fd);
	return rc == 0 ? 0 : cni_fail_err(f); /* f says why */
}

int
cni_unenroll(const struct cni_ctx *x, const char *name, const char *only_netns, bool *done,
    struct cni_fail *f)
{
	struct handoff_msg m = { .op = HANDOFF_DEL, .fd = -1 };
	struct handoff_list el = { 0 };
	const struct handoff_entry *e = NULL;
	char *netns = NULL, ack[1024];
	bool down = false, reached;
	int r, rc = AMESH_ERR_INTERNAL;

	*done = false;
	if (cni_zt_list(x, &el, &down, f) != 0 && !down)
		goto out;
	if (!down)
		e = handoff_list_find(&el, name);
	netns = e != NULL ? xstrdup(e->netns) : records_read(x->conf->ztunnel.state_dir, name);
	if (only_netns != NULL && netns != NULL && strcmp(netns, only_netns) != 0) {
		log_info("workload %s is enrolled in %s, not %s: leaving it enrolled", name, netns,
		    only_netns);
		rc = cni_rules_remove_owned(only_netns, false, name, NULL, f);
		goto out;
	}
	if (e != NULL) {
		snprintf(m.workload, sizeof(m.workload), "%s", name);
		r = zt_request(x, &m, ack, sizeof(ack), &reached);
		if (r < 0) {
			cni_zt_unreachable(x, r, reached, f);
			goto out;
		}
		if (r == 0) {
			cni_fail_set(f, CNI_ERR_ZTUNNEL, "ztunnel refused DEL", "ztunnel at %s refused to "
			    "let workload %s go: %s", x->conf->cni.socket, name, ack);
			goto out;
		}
	} else if (netns != NULL) {
		/* Not running, or it does not know the workload: the record is stale. */
		record_remove(x, name);
	}
	kill_point("released");
	if (netns == NULL && only_netns != NULL)
		netns = xstrdup(only_netns);
	if (netns != NULL && cni_rules_remove_owned(netns, false, name, NULL, f) != 0)
		goto out;
	*done = e != NULL || (netns != NULL && only_netns == NULL);
	if (*done)
		log_debug("workload %s: unenrolled%s%s", name, netns ? ", netns " : "",
		    netns ? netns : "");
	rc = 0;
out:
	free(netns);
	handoff_list_free(&el);
	return rc == 0 ? 0 : cni_fail_err(f); /* f says why */
}

int
cni_release(const struct cni_ctx *x, const char *path, bool sidecar, char **what,
    struct cni_fail *f)
{
	struct handoff_list el = { 0 };
	struct netns_id id;
	const struct handoff_entry *e = NULL;
	bool from_records, done, kept;
	int rc = AMESH_ERR_INTERNAL;

	*what = NULL;
	if (netns_id_of_path(path, &id) == 0 && cni_enrolled_get(x, &el, &from_records, f) != 0)
		return cni_fail_err(f);
	e = cni_enrolled_in(&el, &id);
	if (e != NULL && sidecar) {
		cni_fail_set(f, CNI_ERR_CONFLICT, "namespace enrolled with the ztunnel", "netns %s is "
		    "enrolled with the ztunnel as workload %s: amesh cni del --workload %s", path,
		    e->workload, e->workload);
	} else if (e != NULL) {
		*what = xstrdup(e->workload);
		rc = cni_unenroll(x, e->workload, NULL, &done, f);
	} else if ((rc = cni_rules_remove_owned(path, sidecar, NULL, &kept, f)) == 0 && kept) {
		cni_fail_set(f, CNI_ERR_CONFLICT, "rules of another kind", "netns %s: its rules are not "
		    "%s's; %s", path, sidecar ? "a sidecar" : "the ztunnel", sidecar ?
		    "amesh cni del --netns PATH removes those" : "amesh cni del --mode sidecar "
		    "--netns PATH removes a sidecar's");
		rc = cni_fail_err(f);
	}
	handoff_list_free(&el);
	return rc == 0 ? 0 : cni_fail_err(f); /* f says why */
}

