/* SPDX-License-Identifier: Apache-2.0 */
/*
 * amesh cni: installs the interception rules in a workload's network namespace and hands the
 * namespace to the local ztunnel, from the command line (add, del, list, check) or as a chained CNI
 * plugin (CNI spec 1.0.0 and 1.1.0: ADD, DEL, CHECK, VERSION, STATUS, GC). Both paths share the
 * enroll/unenroll steps below; only the way they report differs.
 */
#include "config.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmd/cmd.h"
#include "config/conf.h"
#include "config/kw.h"
#include "config/registry.h"
#include "core/diag.h"
#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "net/handoff.h"
#include "net/netns.h"
#include "nft/rules.h"

/* CNI error codes: 1-11 and 50 from the spec, 100 and up our own (amesh-cni(8)). */
enum {
	CNI_ERR_VERSION = 1,      /* incompatible CNI version */
	CNI_ERR_ENV = 4,          /* invalid necessary environment variables */
	CNI_ERR_IO = 5,           /* I/O failure */
	CNI_ERR_DECODE = 6,       /* failed to decode content */
	CNI_ERR_CONFIG = 7,       /* invalid network configuration */
	CNI_ERR_TRY_AGAIN = 11,   /* try again later: the ztunnel is unreachable or did not answer */
	CNI_ERR_UNAVAILABLE = 50, /* STATUS: the plugin cannot service ADD */
	CNI_ERR_WORKLOAD = 100,   /* the workload is not in the registry, or not on this node */
	CNI_ERR_ZTUNNEL = 101,    /* the ztunnel refused the request, or does not have the workload */
	CNI_ERR_RULES = 102,      /* the interception rules could not be installed, removed, or are wrong */
	CNI_ERR_CONFLICT = 103,   /* the namespace belongs to another workload, or the workload to
	                             another namespace that still exists: nothing was changed */
};

static const char *const cni_versions[] = { "1.0.0", "1.1.0", NULL };
#define CNI_LATEST "1.1.0"
/* Network configuration on stdin: more than this is not a configuration. */
#define STDIN_MAX (1024 * 1024)

/* Why an operation failed: the CNI code, a short summary and the whole story. */
struct fail {
	int code;
	const char *msg;
	char details[2048];
};

static void
set_fail(struct fail *f, int code, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
set_fail(struct fail *f, int code, const char *msg, const char *fmt, ...)
{
	va_list ap;

	f->code = code;
	f->msg = msg;
	va_start(ap, fmt);
	vsnprintf(f->details, sizeof(f->details), fmt, ap);
	va_end(ap);
}

struct ctx {
	struct amesh_conf *conf;
	struct registry *reg; /* NULL when it could not be loaded (DEL goes on without it) */
	struct nft_rules_params params;
	int timeout_ms;
};

static void
ctx_free(struct ctx *x)
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

/* Loads amesh.conf and, unless reg_optional and it fails, the registry. Returns 0 or -1 with f. */
static int
ctx_load(struct ctx *x, const char *path, bool reg_optional, struct fail *f)
{
	struct diag d;
	int r;

	memset(x, 0, sizeof(*x));
	x->timeout_ms = handoff_timeout();
	diag_init(&d);
	if ((r = conf_load(path, &x->conf, &d)) != 0) {
		set_fail(f, CNI_ERR_CONFIG, "invalid amesh configuration", "%s",
		    diag_count(&d) > 0 ? diag_first(&d) : amesh_strerror(r));
		diag_clear(&d);
		return -1;
	}
	nft_rules_params_from_conf(&x->params, &x->conf->ztunnel.proxy);
	if (registry_load_dir(x->conf->mesh.registry, &x->reg, &d) != 0) {
		if (reg_optional) {
			log_warn("registry %s: %s: going on without it", x->conf->mesh.registry,
			    diag_count(&d) > 0 ? diag_first(&d) : "invalid");
		} else {
			set_fail(f, CNI_ERR_CONFIG, "invalid registry", "registry %s: %s",
			    x->conf->mesh.registry, diag_count(&d) > 0 ? diag_first(&d) : "invalid");
			diag_clear(&d);
			conf_free(x->conf);
			x->conf = NULL;
			return -1;
		}
	}
	diag_clear(&d);
	return 0;
}

/* --- the ztunnel side: requests, enrolled list, records ------------------------------------ */

/* state: "serving", "failed" (held by the ztunnel, not served: why says why) or "recorded" (from
 * the records: the ztunnel is not running). Either way the namespace is the workload's. */
struct enrolled {
	char *workload, *netns, *state, *why;
};

struct enrolled_list {
	struct enrolled *v;
	size_t n;
};

static void
enrolled_free(struct enrolled_list *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->v[i].workload);
		free(l->v[i].netns);
		free(l->v[i].state);
		free(l->v[i].why);
	}
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static void
enrolled_add(struct enrolled_list *l, const char *w, const char *ns, const char *state,
    const char *why)
{
	l->v = xrealloc(l->v, l->n + 1, sizeof(*l->v));
	l->v[l->n].workload = xstrdup(w);
	l->v[l->n].netns = xstrdup(ns);
	l->v[l->n].state = xstrdup(state);
	l->v[l->n].why = xstrdup(why);
	l->n++;
}

/* The entry whose namespace path names the namespace id now; none when id is unknown. */
static const struct enrolled *
enrolled_in(const struct enrolled_list *l, const struct netns_id *id)
{
	for (size_t i = 0; i < l->n; i++)
		if (netns_path_is(l->v[i].netns, id))
			return &l->v[i];
	return NULL;
}

static const struct enrolled *
enrolled_find(const struct enrolled_list *l, const char *w)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].workload, w) == 0)
			return &l->v[i];
	return NULL;
}

/* A token for the hand-off: non-empty, no blanks or control characters. */
static bool
token_ok(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return false;
	return true;
}

/*
 * One request on its own connection. Returns 1 (OK, text in buf), 0 (ERR, message in buf), or
 * -errno; *reached tells whether the connect worked, so "not running" and "not answering" differ.
 */
static int
zt_request(const struct ctx *x, const struct handoff_msg *m, char *buf, size_t len, bool *reached)
{
	int s = handoff_connect(x->conf->cni.socket), r;

	*reached = s >= 0;
	buf[0] = '\0';
	if (s < 0)
		return s;
	r = handoff_send(s, m);
	if (r == 0)
		r = handoff_wait_ack(s, x->timeout_ms, buf, len);
	close(s);
	return r;
}

static void
zt_unreachable(const struct ctx *x, int r, bool reached, struct fail *f)
{
	if (!reached)
		set_fail(f, CNI_ERR_TRY_AGAIN, "ztunnel unreachable", "ztunnel not reachable at %s: "
		    "%s (is amesh ztunnel running?)", x->conf->cni.socket, strerror(-r));
	else if (r == -ETIMEDOUT)
		set_fail(f, CNI_ERR_TRY_AGAIN, "ztunnel did not answer", "ztunnel at %s did not "
		    "answer within %d ms", x->conf->cni.socket, x->timeout_ms);
	else
		set_fail(f, CNI_ERR_TRY_AGAIN, "ztunnel connection failed", "ztunnel at %s: %s",
		    x->conf->cni.socket, strerror(-r));
}

/*
 * The ztunnel's LIST. Returns 0 with out filled, or -1 with f set; *down is true when nothing
 * listens on the socket (the caller may fall back to the records).
 */
static int
zt_list(const struct ctx *x, struct enrolled_list *out, bool *down, struct fail *f)
{
	struct handoff_msg m = { .op = HANDOFF_LIST, .fd = -1 };
	char *buf = xmalloc(HANDOFF_MAX + 1), *save = NULL, *line;
	bool reached;
	int r = zt_request(x, &m, buf, HANDOFF_MAX + 1, &reached);

	*down = !reached;
	out->v = NULL;
	out->n = 0;
	if (r < 0) {
		zt_unreachable(x, r, reached, f);
		free(buf);
		return -1;
	}
	if (r == 0) {
		set_fail(f, CNI_ERR_ZTUNNEL, "ztunnel refused LIST", "ztunnel at %s refused LIST: %s",
		    x->conf->cni.socket, buf);
		free(buf);
		return -1;
	}
	/* "NAME NETNS [STATE [REASON]]": an older ztunnel sends no state, and serves what it lists. */
	for (line = strtok_r(buf, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		char w[256], ns[4096], st[32] = "serving";
		int at = 0, n = sscanf(line, "%255s %4095s %31s %n", w, ns, st, &at);

		if (n >= 2)
			enrolled_add(out, w, ns, st, n == 3 && at > 0 ? line + at : "");
		else
			log_warn("ztunnel at %s: ignoring LIST line '%.80s'", x->conf->cni.socket, line);
	}
	free(buf);
	return 0;
}

/* [ztunnel] state_dir/NAME: one line, the namespace path. Returns a new string or NULL. */
static char *
record_read(const struct ctx *x, const char *name)
{
	char *path = xasprintf("%s/%s", x->conf->ztunnel.state_dir, name);
	char line[4096 + 2] = "";
	FILE *fp = fopen(path, "re");
	char *nl;

	free(path);
	if (fp == NULL)
		return NULL;
	if (fgets(line, sizeof(line), fp) == NULL)
		line[0] = '\0';
	fclose(fp);
	if ((nl = strchr(line, '\n')) != NULL)
		*nl = '\0';
	if (!token_ok(line))
		return NULL;
	return xstrdup(line);
}

static void
record_remove(const struct ctx *x, const char *name)
{
	char *path = xasprintf("%s/%s", x->conf->ztunnel.state_dir, name);

	if (unlink(path) == 0)
		log_info("removed the record %s", path);
	else if (errno != ENOENT)
		log_warn("cannot remove the record %s: %s", path, strerror(errno));
	free(path);
}

/* Every record in state_dir, by name order of readdir. A missing directory is an empty list. */
static void
records_list(const struct ctx *x, struct enrolled_list *out)
{
	DIR *d = opendir(x->conf->ztunnel.state_dir);
	struct dirent *de;

	out->v = NULL;
	out->n = 0;
	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char *ns;

		if (de->d_name[0] == '.' || !kw_is_hostname(de->d_name))
			continue;
		if ((ns = record_read(x, de->d_name)) != NULL) {
			enrolled_add(out, de->d_name, ns, "recorded", "");
			free(ns);
		}
	}
	closedir(d);
}

/* Enrolled workloads: from the ztunnel, or from the records when it is not running. */
static int
enrolled_get(const struct ctx *x, struct enrolled_list *out, bool *from_records, struct fail *f)
{
	bool down;

	*from_records = false;
	if (zt_list(x, out, &down, f) == 0)
		return 0;
	if (!down)
		return -1;
	records_list(x, out);
	*from_records = true;
	return 0;
}

/* --- workloads ------------------------------------------------------------------------------- */

enum wl_state { WL_OK, WL_UNKNOWN, WL_OTHER_NODE, WL_PLAIN };

/* Whether name can be enrolled here: in the registry, on this node, protocol hbone. */
static enum wl_state
workload_state(const struct ctx *x, const char *name, const struct reg_workload **out)
{
	const struct reg_workload *w = x->reg ? registry_find(x->reg, REG_WORKLOAD, name) : NULL;

	*out = w;
	if (w == NULL)
		return WL_UNKNOWN;
	if (w->node == NULL || strcmp(w->node, x->conf->mesh.node) != 0)
		return WL_OTHER_NODE;
	if (w->protocol != REG_PROTO_HBONE)
		return WL_PLAIN;
	return WL_OK;
}

static void
workload_fail(const struct ctx *x, const char *name, enum wl_state st,
    const struct reg_workload *w, struct fail *f)
{
	switch (st) {
	case WL_UNKNOWN:
		set_fail(f, CNI_ERR_WORKLOAD, "unknown workload", "workload %s is not in the registry "
		    "%s", name, x->conf->mesh.registry);
		break;
	case WL_OTHER_NODE:
		set_fail(f, CNI_ERR_WORKLOAD, "workload on another node", "workload %s/%s runs on "
		    "node %s, not on this node (%s)", w->namespace, name, w->node ? w->node : "(none)",
		    x->conf->mesh.node);
		break;
	case WL_PLAIN:
		set_fail(f, CNI_ERR_WORKLOAD, "workload not captured", "workload %s/%s has protocol "
		    "tcp: it is reached in plain TCP and not captured", w->namespace, name);
		break;
	case WL_OK:
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

/* The owner comment the rules of one workload carry: "ztunnel NAME" or "sidecar NAME". */
static void
owner_format(char *buf, size_t len, bool sidecar, const char *name)
{
	snprintf(buf, len, "%s %s", sidecar ? "sidecar" : "ztunnel", name);
}

/* What a namespace holds before an add or a del changes anything in it. */
struct ns_view {
	const char *path;
	struct netns_id id;
	int table;                   /* 1: table inet amesh is there */
	char owner[NFT_OWNER_MAX];   /* its comment; "" when it has none (rules of amesh 0.1) */
	const struct enrolled *here; /* the workload the ztunnel holds (or recorded) here */
};

/* Fills v for the namespace fd (path) from the enrolled list el. Returns 0 or -1 with f. */
static int
ns_inspect(int fd, const char *path, const struct enrolled_list *el, struct ns_view *v,
    struct fail *f)
{
	char err[512];
	int r;

	memset(v, 0, sizeof(*v));
	v->path = path;
	if ((r = netns_id_of_fd(fd, &v->id)) != 0) {
		set_fail(f, CNI_ERR_ENV, "cannot open the network namespace", "netns %s: %s", path,
		    strerror(-r));
		return -1;
	}
	v->here = enrolled_in(el, &v->id);
	r = nft_rules_owner(fd, path, v->owner, sizeof(v->owner), err, sizeof(err));
	if (r < 0) {
		set_fail(f, CNI_ERR_RULES, "cannot read the interception rules", "%s", err);
		return -1;
	}
	v->table = r;
	return 0;
}

/*
 * Whether the namespace in v may become the namespace of workload name in the given mode: it
 * must hold nothing, or only what that workload already has there. Returns 0, or -1 with f
 * (CNI_ERR_CONFLICT) naming who has it and what to run.
 */
static int
ns_claimable(const struct ns_view *v, bool sidecar, const char *name, struct fail *f)
{
	char own[NFT_OWNER_MAX];

	owner_format(own, sizeof(own), sidecar, name);
	if (v->here != NULL && (sidecar || strcmp(v->here->workload, name) != 0)) {
		set_fail(f, CNI_ERR_CONFLICT, "namespace enrolled as another workload", "netns %s is "
		    "enrolled with the ztunnel as workload %s (%s): one namespace, one workload; "
		    "amesh cni del --workload %s first if that is wrong", v->path,
		    v->here->workload, v->here->state, v->here->workload);
		return -1;
	}
	if (!v->table || strcmp(v->owner, own) == 0)
		return 0;
	if (v->owner[0] == '\0') {
		if (v->here != NULL)
			return 0; /* this workload's, installed by amesh 0.1 */
		set_fail(f, CNI_ERR_CONFLICT, "namespace holds unrecorded rules", "netns %s holds "
		    "a table inet amesh that no enrolled workload owns: amesh cni del --netns %s "
		    "removes it, if it is stale", v->path, v->path);
	} else if (strncmp(v->owner, "sidecar ", 8) == 0) {
		set_fail(f, CNI_ERR_CONFLICT, "namespace captured for a sidecar", "netns %s is "
		    "captured for the sidecar of workload %s: amesh cni del --mode sidecar --netns "
		    "%s first if that is wrong", v->path, v->owner + 8, v->path);
	} else {
		set_fail(f, CNI_ERR_CONFLICT, "namespace holds another workload's rules", "netns %s "
		    "holds the interception rules of %s, left by an add or del that did not finish: "
		    "amesh cni del --netns %s first if that is stale", v->path, v->owner, v->path);
	}
	return -1;
}

/*
 * Removes the rules from path when they are those of mode (sidecar or not) and, unless name is
 * NULL, of that workload; rules without an owner comment (amesh 0.1) count as anyone's. A
 * namespace that is gone took them with it. Rules of another owner are left in place: *kept
 * says so (may be NULL). Returns 0 or -1 with f.
 */
static int
rules_remove_owned(const char *path, bool sidecar, const char *name, bool *kept, struct fail *f)
{
	char err[512], owner[NFT_OWNER_MAX], want[NFT_OWNER_MAX];
	int fd = open(path, O_RDONLY | O_CLOEXEC), r;
	const char *kind = sidecar ? "sidecar " : "ztunnel ";

	if (kept != NULL)
		*kept = false;
	if (fd < 0) {
		if (errno == ENOENT)
			return 0;
		set_fail(f, CNI_ERR_RULES, "cannot open the network namespace", "netns %s: cannot "
		    "open: %s", path, strerror(errno));
		return -1;
	}
	r = nft_rules_owner(fd, path, owner, sizeof(owner), err, sizeof(err));
	if (name != NULL)
		owner_format(want, sizeof(want), sidecar, name);
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
		set_fail(f, CNI_ERR_RULES, "cannot remove the interception rules", "%s", err);
		return -1;
	}
	return 0;
}

/* Opens the namespace for an add, after checking its path. Returns the fd, or -1 with f. */
static int
ns_open_for_add(const char *netns_path, struct fail *f)
{
	int fd;

	if (!token_ok(netns_path) || strlen(netns_path) >= sizeof(((struct handoff_msg *)0)->netns)) {
		set_fail(f, CNI_ERR_ENV, "bad namespace path", "netns '%s': the path must be a single "
		    "word (no blanks) shorter than %zu bytes", netns_path,
		    sizeof(((struct handoff_msg *)0)->netns));
		return -1;
	}
	fd = open(netns_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		set_fail(f, CNI_ERR_ENV, "cannot open the network namespace", "netns %s: cannot "
		    "open: %s", netns_path, strerror(errno));
	return fd;
}

/*
 * Installs w's rules (owner comment of mode) in the namespace v describes, after which it is
 * captured. On failure the namespace is put back as v found it: rules that were there stay
 * (with their owner), a namespace that had none is emptied. Returns 0 or -1 with f.
 */
static int
rules_claim(int fd, const struct ns_view *v, const struct nft_rules_params *base, bool sidecar,
    const char *name, struct fail *f)
{
	struct nft_rules_params p = *base;
	char own[NFT_OWNER_MAX], err[512];

	owner_format(own, sizeof(own), sidecar, name);
	p.owner = own;
	if (nft_rules_install(fd, v->path, &p, err, sizeof(err)) == 0)
		return 0;
	set_fail(f, CNI_ERR_RULES, "cannot install the interception rules", "%s (workload %s)",
	    err, name);
	if (!v->table)
		nft_rules_remove(fd, v->path, err, sizeof(err));
	return -1;
}

/* After a failed hand-off: the namespace goes back to what v found (see rules_claim). */
static void
rules_unclaim(int fd, const struct ns_view *v, const struct nft_rules_params *base, const char *name,
    struct fail *f)
{
	struct nft_rules_params p = *base;
	char err[512];
	size_t n = strlen(f->details);
	int r;

	if (v->table) {
		/* It was captured before (this workload's, or one it may take over): it stays
		 * captured, fail closed, with the owner it had. */
		log_warn("workload %s: netns %s was captured before: its rules stay", name, v->path);
		if (strcmp(v->owner, p.owner ? p.owner : "") == 0)
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

/*
 * --mode sidecar: the rules alone, with [sidecar]'s ports, and no hand-off: the amesh sidecar
 * started in that namespace serves it (and installs the same rules itself). Until it runs, the
 * workload's TCP goes to ports nobody listens on: captured from the start, never in the clear.
 * The namespace must hold nothing else, and the workload must not be enrolled with the ztunnel.
 * Returns 0 or -1 with f.
 */
static int
sidecar_capture(const struct ctx *x, const struct reg_workload *w, const char *netns_path,
    struct fail *f)
{
	struct enrolled_list el = { 0 };
	const struct enrolled *e;
	struct nft_rules_params p;
	struct ns_view v;
	bool from_records;
	int fd, rc = -1;

	if ((fd = ns_open_for_add(netns_path, f)) < 0)
		return -1;
	if (enrolled_get(x, &el, &from_records, f) != 0 || ns_inspect(fd, netns_path, &el, &v, f) != 0)
		goto out;
	/* One proxy per workload: a ztunnel's workload first leaves it (cni del), or a later del
	 * would take the rules from under the sidecar. */
	if ((e = enrolled_find(&el, w->h.name)) != NULL) {
		set_fail(f, CNI_ERR_CONFLICT, "workload enrolled with the ztunnel", "workload %s/%s "
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
	enrolled_free(&el);
	close(fd);
	return rc;
}

/*
 * Enrollment as a transaction over the namespace's whole state. First, changing nothing: the
 * ztunnel must answer; the namespace must be empty or already this workload's (ns_claimable); the
 * workload must not live in another namespace that still exists. Then the rules (captured from
 * here on: what the proxy does not serve yet is refused), then the hand-off. A failed hand-off
 * puts the namespace back as it was (rules_unclaim), and the ztunnel changes nothing on a refusal.
 * Returns 0 or -1 with f.
 */
static int
enroll(const struct ctx *x, const struct reg_workload *w, const char *netns_path, struct fail *f)
{
	struct handoff_msg m = { .op = HANDOFF_ADD, .fd = -1 };
	struct enrolled_list el = { 0 };
	const struct enrolled *e;
	struct ns_view v;
	char ack[1024];
	bool down, reached;
	int fd, r, rc = -1;

	if ((fd = ns_open_for_add(netns_path, f)) < 0)
		return -1;
	/* Ask the ztunnel first: if it is not there, leave the namespace alone. */
	if (zt_list(x, &el, &down, f) != 0 || ns_inspect(fd, netns_path, &el, &v, f) != 0)
		goto out;
	if (ns_claimable(&v, false, w->h.name, f) != 0)
		goto out;
	e = enrolled_find(&el, w->h.name);
	if (e != NULL && e != v.here && access(e->netns, F_OK) == 0) {
		set_fail(f, CNI_ERR_CONFLICT, "workload enrolled in another namespace", "workload "
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
		set_fail(f, CNI_ERR_ZTUNNEL, "ztunnel refused the workload", "ztunnel at %s refused "
		    "workload %s/%s: %s", x->conf->cni.socket, w->namespace, w->h.name, ack);
	else
		zt_unreachable(x, r, reached, f);
	{
		struct nft_rules_params p = x->params;
		char own[NFT_OWNER_MAX];

		owner_format(own, sizeof(own), false, w->h.name);
		p.owner = own;
		rules_unclaim(fd, &v, &p, w->h.name, f);
	}
out:
	enrolled_free(&el);
	close(fd);
	return rc;
}

/*
 * Tells the ztunnel to let name go (DEL), then removes its rules from its namespace: in that order
 * so the workload is never reachable around the proxy (in between, its traffic is refused). When
 * the ztunnel is not running its record is removed instead, so a restarted ztunnel does not bring
 * the workload back. only_netns (CNI DEL) restricts the work to that namespace: a workload
 * enrolled elsewhere since stays enrolled. Rules are removed only when they are this workload's
 * (rules_remove_owned). Returns 0 (with *done false when nothing was enrolled) or -1 with f.
 */
static int
unenroll(const struct ctx *x, const char *name, const char *only_netns, bool *done, struct fail *f)
{
	struct handoff_msg m = { .op = HANDOFF_DEL, .fd = -1 };
	struct enrolled_list el = { 0 };
	const struct enrolled *e = NULL;
	char *netns = NULL, ack[1024];
	bool down = false, reached;
	int r, rc = -1;

	*done = false;
	if (zt_list(x, &el, &down, f) != 0 && !down)
		goto out;
	if (!down)
		e = enrolled_find(&el, name);
	netns = e != NULL ? xstrdup(e->netns) : record_read(x, name);
	if (only_netns != NULL && netns != NULL && strcmp(netns, only_netns) != 0) {
		log_info("workload %s is enrolled in %s, not %s: leaving it enrolled", name, netns,
		    only_netns);
		rc = rules_remove_owned(only_netns, false, name, NULL, f);
		goto out;
	}
	if (e != NULL) {
		snprintf(m.workload, sizeof(m.workload), "%s", name);
		r = zt_request(x, &m, ack, sizeof(ack), &reached);
		if (r < 0) {
			zt_unreachable(x, r, reached, f);
			goto out;
		}
		if (r == 0) {
			set_fail(f, CNI_ERR_ZTUNNEL, "ztunnel refused DEL", "ztunnel at %s refused to "
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
	if (netns != NULL && rules_remove_owned(netns, false, name, NULL, f) != 0)
		goto out;
	*done = e != NULL || (netns != NULL && only_netns == NULL);
	if (*done)
		log_debug("workload %s: unenrolled%s%s", name, netns ? ", netns " : "",
		    netns ? netns : "");
	rc = 0;
out:
	free(netns);
	enrolled_free(&el);
	return rc;
}

/*
 * Frees a namespace by its path: the workload enrolled (or recorded) there is unenrolled; with no
 * workload, rules of the mode's kind (an interrupted add, a sidecar's) are removed. Another
 * kind's rules or workload make it fail with what to run instead. *what is set to the workload
 * unenrolled, or NULL. Returns 0 or -1 with f.
 */
static int
ns_release(const struct ctx *x, const char *path, bool sidecar, char **what, struct fail *f)
{
	struct enrolled_list el = { 0 };
	struct netns_id id;
	const struct enrolled *e = NULL;
	bool from_records, done, kept;
	int rc = -1;

	*what = NULL;
	if (netns_id_of_path(path, &id) == 0 && enrolled_get(x, &el, &from_records, f) != 0)
		return -1;
	e = enrolled_in(&el, &id);
	if (e != NULL && sidecar) {
		set_fail(f, CNI_ERR_CONFLICT, "namespace enrolled with the ztunnel", "netns %s is "
		    "enrolled with the ztunnel as workload %s: amesh cni del --workload %s", path,
		    e->workload, e->workload);
	} else if (e != NULL) {
		*what = xstrdup(e->workload);
		rc = unenroll(x, e->workload, NULL, &done, f);
	} else if ((rc = rules_remove_owned(path, sidecar, NULL, &kept, f)) == 0 && kept) {
		set_fail(f, CNI_ERR_CONFLICT, "rules of another kind", "netns %s: its rules are not "
		    "%s's; %s", path, sidecar ? "a sidecar" : "the ztunnel", sidecar ?
		    "amesh cni del --netns PATH removes those" : "amesh cni del --mode sidecar "
		    "--netns PATH removes a sidecar's");
		rc = -1;
	}
	enrolled_free(&el);
	return rc;
}

/* --- command line ---------------------------------------------------------------------------- */

static const char usage_add[] =
    "amesh cni add --netns PATH --workload NAME [--mode ztunnel|sidecar]";
static const char usage_del[] =
    "amesh cni del --workload NAME | --netns PATH [--mode ztunnel|sidecar]";
static const char usage_list[] = "amesh cni list";
static const char usage_check[] = "amesh cni check";

enum { OPT_NETNS = 256, OPT_WORKLOAD, OPT_MODE };

struct cli_opts {
	const char *netns, *workload;
	bool sidecar; /* --mode sidecar: the namespace's own amesh sidecar serves it */
};

/* getopt_long over argv[1..] (argv[1] is the subcommand). Returns 0 or EXIT_USAGE. */
static int
parse_opts(int argc, char **argv, const char *usage, bool want_netns, bool want_workload,
    struct cli_opts *o)
{
	static const struct option longopts[] = {
		{ "netns", required_argument, NULL, OPT_NETNS },
		{ "workload", required_argument, NULL, OPT_WORKLOAD },
		{ "mode", required_argument, NULL, OPT_MODE },
		{ NULL, 0, NULL, 0 },
	};
	const char *sub = argv[1];
	int c;

	memset(o, 0, sizeof(*o));
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc - 1, argv + 1, ":", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_NETNS:
			o->netns = optarg; /* checked below: del takes it with --mode sidecar */
			break;
		case OPT_WORKLOAD:
			if (!want_workload)
				return cmd_usage_error("cni", sub, usage, "unknown option '--workload'");
			o->workload = optarg;
			break;
		case OPT_MODE:
			if (strcmp(sub, "add") != 0 && strcmp(sub, "del") != 0)
				return cmd_usage_error("cni", sub, usage, "unknown option '--mode'");
			if (strcmp(optarg, "sidecar") != 0 && strcmp(optarg, "ztunnel") != 0)
				return cmd_usage_error("cni", sub, usage, "--mode '%s': ztunnel or sidecar",
				    optarg);
			o->sidecar = strcmp(optarg, "sidecar") == 0;
			break;
		case ':':
			return cmd_usage_error("cni", sub, usage, "option '%s' needs a value", argv[optind]);
		default:
			if (optopt != 0)
				return cmd_usage_error("cni", sub, usage, "unknown option '-%c'", optopt);
			return cmd_usage_error("cni", sub, usage, "unknown option '%s'", argv[optind]);
		}
	}
	if (optind < argc - 1)
		return cmd_usage_error("cni", sub, usage, "unexpected argument '%s'", argv[optind + 1]);
	/* cni del --netns: the namespace rather than the workload (a sidecar's, which no ztunnel
	 * knows of, or whatever an interrupted add or del left). */
	if (strcmp(sub, "del") == 0 && (o->sidecar || o->netns != NULL)) {
		if (o->netns == NULL)
			return cmd_usage_error("cni", sub, usage, "--mode sidecar needs --netns");
		if (o->workload != NULL)
			return cmd_usage_error("cni", sub, usage, "give --workload or --netns, not "
			    "both");
		want_workload = false;
	} else if (o->netns != NULL && !want_netns) {
		return cmd_usage_error("cni", sub, usage, "unknown option '--netns'");
	}
	if (want_netns && o->netns == NULL)
		return cmd_usage_error("cni", sub, usage, "--netns is required");
	if (want_workload && o->workload == NULL)
		return cmd_usage_error("cni", sub, usage, "--workload is required");
	if (o->netns != NULL && o->netns[0] != '/')
		return cmd_usage_error("cni", sub, usage, "--netns '%s': give an absolute path, such as "
		    "/run/netns/NAME or /proc/PID/ns/net", o->netns);
	if (o->workload != NULL && !kw_is_hostname(o->workload))
		return cmd_usage_error("cni", sub, usage, "--workload '%s': not a workload name", o->workload);
	return 0;
}

static int
cli_load(const struct cmd_globals *g, const char *sub, struct ctx *x, bool reg_optional)
{
	struct fail f;

	if (ctx_load(x, g->conf_path, reg_optional, &f) != 0) {
		fprintf(stderr, "amesh cni %s: %s\n", sub, f.details);
		return -1;
	}
	cmd_log_setup(g, x->conf);
	return 0;
}

static int
cli_add(const struct cmd_globals *g, int argc, char **argv)
{
	const struct reg_workload *w;
	struct cli_opts o;
	struct ctx x;
	struct fail f;
	enum wl_state st;
	int rc;

	if ((rc = parse_opts(argc, argv, usage_add, true, true, &o)) != 0)
		return rc;
	if (cli_load(g, "add", &x, false) != 0)
		return EXIT_FAIL;
	rc = EXIT_FAIL;
	if ((st = workload_state(&x, o.workload, &w)) != WL_OK) {
		workload_fail(&x, o.workload, st, w, &f);
		fprintf(stderr, "amesh cni add: %s\n", f.details);
		goto out;
	}
	if (o.sidecar) {
		if (sidecar_capture(&x, w, o.netns, &f) != 0) {
			fprintf(stderr, "amesh cni add: %s\n", f.details);
			goto out;
		}
		printf("captured %s/%s for its sidecar (netns %s): start amesh-sidecar@%s\n",
		    w->namespace, w->h.name, o.netns, w->h.name);
		rc = EXIT_OK;
		goto out;
	}
	if (enroll(&x, w, o.netns, &f) != 0) {
		fprintf(stderr, "amesh cni add: %s\n", f.details);
		goto out;
	}
	printf("enrolled %s/%s (netns %s)\n", w->namespace, w->h.name, o.netns);
	rc = EXIT_OK;
out:
	ctx_free(&x);
	return rc;
}

static int
cli_del(const struct cmd_globals *g, int argc, char **argv)
{
	struct cli_opts o;
	struct ctx x;
	struct fail f;
	bool done;
	int rc;

	if ((rc = parse_opts(argc, argv, usage_del, false, true, &o)) != 0)
		return rc;
	/* The workload may have left the registry already: del works without it. */
	if (cli_load(g, "del", &x, true) != 0)
		return EXIT_FAIL;
	if (o.netns != NULL) {
		char *name;

		rc = EXIT_OK;
		if (ns_release(&x, o.netns, o.sidecar, &name, &f) != 0) {
			fprintf(stderr, "amesh cni del: %s\n", f.details);
			rc = EXIT_FAIL;
		} else if (name != NULL) {
			printf("removed %s (netns %s)\n", name, o.netns);
		} else {
			printf("removed the rules of %s\n", o.netns);
		}
		free(name);
		ctx_free(&x);
		return rc;
	}
	if (unenroll(&x, o.workload, NULL, &done, &f) != 0) {
		fprintf(stderr, "amesh cni del: %s\n", f.details);
		rc = EXIT_FAIL;
	} else {
		printf(done ? "removed %s\n" : "%s: not enrolled\n", o.workload);
		rc = EXIT_OK;
	}
	ctx_free(&x);
	return rc;
}

static int
cli_list(const struct cmd_globals *g, int argc, char **argv)
{
	struct enrolled_list el;
	struct cli_opts o;
	struct ctx x;
	struct fail f;
	bool from_records;
	int rc;

	if ((rc = parse_opts(argc, argv, usage_list, false, false, &o)) != 0)
		return rc;
	if (cli_load(g, "list", &x, true) != 0)
		return EXIT_FAIL;
	if (enrolled_get(&x, &el, &from_records, &f) != 0) {
		fprintf(stderr, "amesh cni list: %s\n", f.details);
		ctx_free(&x);
		return EXIT_FAIL;
	}
	if (from_records)
		fprintf(stderr, "amesh cni list: ztunnel not reachable at %s; showing the records in "
		    "%s\n", x.conf->cni.socket, x.conf->ztunnel.state_dir);
	for (size_t i = 0; i < el.n; i++)
		printf("%s %s %s%s%s\n", el.v[i].workload, el.v[i].netns, el.v[i].state,
		    el.v[i].why[0] ? ": " : "", el.v[i].why);
	enrolled_free(&el);
	ctx_free(&x);
	return EXIT_OK;
}

static int
cli_check(const struct cmd_globals *g, int argc, char **argv)
{
	struct enrolled_list el;
	struct cli_opts o;
	struct ctx x;
	struct fail f;
	struct diag d;
	bool from_records;
	size_t problems = 0;
	int rc;

	if ((rc = parse_opts(argc, argv, usage_check, false, false, &o)) != 0)
		return rc;
	if (cli_load(g, "check", &x, false) != 0)
		return EXIT_FAIL;
	if (enrolled_get(&x, &el, &from_records, &f) != 0) {
		fprintf(stderr, "amesh cni check: %s\n", f.details);
		ctx_free(&x);
		return EXIT_FAIL;
	}
	if (from_records) {
		fprintf(stderr, "amesh cni check: ztunnel not reachable at %s; checking the records "
		    "in %s\n", x.conf->cni.socket, x.conf->ztunnel.state_dir);
		problems++;
	}
	diag_init(&d);
	for (size_t i = 0; i < el.n; i++) {
		const struct enrolled *e = &el.v[i];
		const struct reg_workload *w;
		enum wl_state st = workload_state(&x, e->workload, &w);
		size_t before = diag_count(&d);
		char err[512];
		int fd;

		if (st != WL_OK) {
			workload_fail(&x, e->workload, st, w, &f);
			diag_add(&d, e->netns, 0, "%s", f.details);
		}
		if (strcmp(e->state, "failed") == 0)
			diag_add(&d, e->netns, 0, "not served by the ztunnel, its traffic is refused: "
			    "%s", e->why);
		fd = open(e->netns, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			diag_add(&d, e->netns, 0, "cannot open: %s", strerror(errno));
		} else {
			if (nft_rules_check(fd, e->netns, &x.params, &d, err, sizeof(err)) != 0)
				diag_add(&d, e->netns, 0, "%s", err);
			close(fd);
		}
		if (diag_count(&d) == before) {
			printf("ok %s %s\n", e->workload, e->netns);
			continue;
		}
		for (size_t k = before; k < d.n; k++)
			fprintf(stderr, "amesh cni check: workload %s: %s\n", e->workload, d.msg[k]);
		problems++;
	}
	if (d.dropped > 0)
		fprintf(stderr, "amesh cni check: %zu more problems\n", d.dropped);
	diag_clear(&d);
	if (el.n == 0)
		printf("no workload enrolled\n");
	enrolled_free(&el);
	ctx_free(&x);
	return problems > 0 ? EXIT_FAIL : EXIT_OK;
}

static int
exec_cni(const struct cmd_globals *g, int argc, char **argv)
{
	if (argc < 2)
		return cmd_usage_error("cni", NULL, "amesh cni add|del|list|check [ARGS]",
		    "a subcommand is required");
	if (strcmp(argv[1], "add") == 0)
		return cli_add(g, argc, argv);
	if (strcmp(argv[1], "del") == 0)
		return cli_del(g, argc, argv);
	if (strcmp(argv[1], "list") == 0)
		return cli_list(g, argc, argv);
	if (strcmp(argv[1], "check") == 0)
		return cli_check(g, argc, argv);
	return cmd_usage_error("cni", NULL, "amesh cni add|del|list|check [ARGS]", "unknown subcommand '%s'",
	    argv[1]);
}

const struct cmd_entry cmd_cni_entry = {
	"cni", "add|del|list|check [ARGS]", "install interception and enroll workloads",
	"  add --netns PATH --workload NAME\n"
	"                        install the rules in PATH and enroll NAME with the ztunnel\n"
	"  add ... --mode sidecar\n"
	"                        install the rules only, for the namespace's own amesh sidecar\n"
	"  del --workload NAME   unenroll NAME and remove its rules\n"
	"  del --netns PATH      unenroll whatever workload PATH holds, or remove rules an\n"
	"                        interrupted add left there\n"
	"  del --mode sidecar --netns PATH\n"
	"                        remove the rules a sidecar's namespace got\n"
	"  list                  show the enrolled workloads: NAME NETNS STATE\n"
	"  check                 verify the rules of every enrolled workload\n",
	exec_cni, "amesh-cni(8)",
};

/* --- CNI plugin ------------------------------------------------------------------------------ */

struct plugin {
	const char *command, *version; /* version: the request's cniVersion once it is known good */
	json_t *config;
	struct ctx x;
	bool loaded;
};

/* Prints the CNI error object on stdout (and a line on stderr); returns the exit code. */
static int
plugin_error(const struct plugin *p, const struct fail *f)
{
	json_t *o = json_pack("{s:s, s:i, s:s, s:s}", "cniVersion", p->version ? p->version :
	    CNI_LATEST, "code", f->code, "msg", f->msg, "details", f->details);

	if (o != NULL) {
		json_dumpf(o, stdout, JSON_COMPACT);
		json_decref(o);
	}
	printf("\n");
	fflush(stdout);
	fprintf(stderr, "amesh-cni: %s%s%s: %s\n", p->command ? p->command : "",
	    p->command ? ": " : "", f->msg, f->details);
	return EXIT_FAIL;
}

static bool
version_supported(const char *v)
{
	for (size_t i = 0; cni_versions[i] != NULL; i++)
		if (strcmp(cni_versions[i], v) == 0)
			return true;
	return false;
}

static int
read_stdin(char **out, size_t *len, struct fail *f)
{
	size_t cap = 4096, n = 0;
	char *buf = xmalloc(cap);

	for (;;) {
		size_t got;

		if (n == cap) {
			if (cap >= STDIN_MAX) {
				free(buf);
				set_fail(f, CNI_ERR_IO, "network configuration too large", "the network "
				    "configuration on stdin is larger than %d bytes", STDIN_MAX);
				return -1;
			}
			cap *= 2;
			buf = xrealloc(buf, cap, 1);
		}
		got = fread(buf + n, 1, cap - n, stdin);
		n += got;
		if (got == 0) {
			if (ferror(stdin)) {
				free(buf);
				set_fail(f, CNI_ERR_IO, "cannot read the network configuration",
				    "stdin: %s", strerror(errno));
				return -1;
			}
			break;
		}
	}
	*out = buf;
	*len = n;
	return 0;
}

/* A required CNI_* variable; sets f naming it when unset or empty. */
static const char *
need_env(const char *name, struct fail *f)
{
	const char *v = getenv(name);

	if (v == NULL || *v == '\0') {
		set_fail(f, CNI_ERR_ENV, "missing environment variable", "%s is not set", name);
		return NULL;
	}
	return v;
}

/* "amesh.workload" from CNI_ARGS ("K=V;K=V"). Returns a new string or NULL. */
static char *
cni_args_workload(void)
{
	const char *s = getenv("CNI_ARGS");
	char *copy, *save = NULL, *kv, *found = NULL;

	if (s == NULL)
		return NULL;
	copy = xstrdup(s);
	for (kv = strtok_r(copy, ";", &save); kv != NULL; kv = strtok_r(NULL, ";", &save)) {
		char *eq = strchr(kv, '=');

		if (eq != NULL && (size_t)(eq - kv) == strlen("amesh.workload") &&
		    strncmp(kv, "amesh.workload", (size_t)(eq - kv)) == 0) {
			free(found);
			found = xstrdup(eq + 1);
		}
	}
	free(copy);
	return found;
}

/*
 * The workload named by the request: CNI_ARGS amesh.workload=NAME, the conventional
 * args.cni.labels entry {"key": "amesh.workload", "value": NAME}, or args["amesh.workload"].
 * Returns 0 (*name NULL when none names it) or -1 with f when they disagree or are malformed.
 */
static int
named_workload(json_t *config, char **name, struct fail *f)
{
	json_t *args = json_object_get(config, "args"), *v;
	char *cand[3] = { cni_args_workload(), NULL, NULL };
	const char *src[3] = { "CNI_ARGS", "args.cni.labels", "args[\"amesh.workload\"]" };
	int rc = 0;

	*name = NULL;
	if (json_is_object(args)) {
		json_t *labels = json_object_get(json_object_get(args, "cni"), "labels");
		size_t i;

		json_array_foreach(labels, i, v) {
			const char *k = json_string_value(json_object_get(v, "key"));
			const char *val = json_string_value(json_object_get(v, "value"));

			if (k != NULL && val != NULL && strcmp(k, "amesh.workload") == 0) {
				free(cand[1]);
				cand[1] = xstrdup(val);
			}
		}
		if ((v = json_object_get(args, "amesh.workload")) != NULL) {
			if (!json_is_string(v)) {
				set_fail(f, CNI_ERR_CONFIG, "invalid args", "args[\"amesh.workload\"] "
				    "must be a string");
				rc = -1;
			} else {
				cand[2] = xstrdup(json_string_value(v));
			}
		}
	}
	for (int i = 0; i < 3 && rc == 0; i++) {
		if (cand[i] == NULL)
			continue;
		if (!kw_is_hostname(cand[i])) {
			set_fail(f, CNI_ERR_CONFIG, "invalid workload name", "%s: amesh.workload '%s' "
			    "is not a workload name", src[i], cand[i]);
			rc = -1;
		} else if (*name == NULL) {
			*name = xstrdup(cand[i]);
		} else if (strcmp(*name, cand[i]) != 0) {
			set_fail(f, CNI_ERR_CONFIG, "conflicting workload names", "amesh.workload is "
			    "'%s' in one place and '%s' in %s", *name, cand[i], src[i]);
			rc = -1;
		}
	}
	for (int i = 0; i < 3; i++)
		free(cand[i]);
	if (rc != 0) {
		free(*name);
		*name = NULL;
	}
	return rc;
}

/* The workload that owns the addresses of prevResult.ips. Returns 0 (*w may be NULL) or -1 with f. */
static int
workload_by_result(const struct ctx *x, json_t *prev, const struct reg_workload **w,
    struct fail *f)
{
	json_t *ips = json_object_get(prev, "ips"), *ip;
	size_t i;

	*w = NULL;
	if (x->reg == NULL || ips == NULL)
		return 0;
	if (!json_is_array(ips)) {
		set_fail(f, CNI_ERR_CONFIG, "invalid prevResult", "prevResult.ips must be a list");
		return -1;
	}
	json_array_foreach(ips, i, ip) {
		const char *a = json_string_value(json_object_get(ip, "address")), *why;
		const struct reg_workload *found;
		struct ip_addr addr;
		char buf[64];
		size_t n;

		if (a == NULL) {
			set_fail(f, CNI_ERR_CONFIG, "invalid prevResult", "prevResult.ips[%zu] has no "
			    "address", i);
			return -1;
		}
		n = strcspn(a, "/");
		if (n >= sizeof(buf) || (memcpy(buf, a, n), buf[n] = '\0',
		    parse_ip(buf, &addr, &why) != 0)) {
			set_fail(f, CNI_ERR_CONFIG, "invalid prevResult", "prevResult.ips[%zu]: '%s' is "
			    "not an address", i, a);
			return -1;
		}
		found = registry_workload_by_addr(x->reg, &addr);
		if (found == NULL)
			continue;
		if (*w != NULL && *w != found) {
			set_fail(f, CNI_ERR_CONFIG, "addresses of two workloads", "prevResult has "
			    "addresses of workloads %s and %s", (*w)->h.name, found->h.name);
			return -1;
		}
		*w = found;
	}
	return 0;
}

/* Prints prevResult (or an empty result) with the request's cniVersion. */
static int
print_result(const struct plugin *p)
{
	json_t *prev = json_object_get(p->config, "prevResult");
	json_t *out = json_is_object(prev) ? json_deep_copy(prev) : json_object();

	if (out == NULL)
		fatalx("out of memory");
	json_object_set_new(out, "cniVersion", json_string(p->version));
	json_dumpf(out, stdout, JSON_COMPACT);
	printf("\n");
	json_decref(out);
	return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
}

/*
 * Finds the workload of an ADD or CHECK. Returns 0 with *w set, 1 to pass the request through
 * (unknown with on_unknown = skip, or protocol tcp), or -1 with f.
 */
static int
plugin_workload(struct plugin *p, const struct reg_workload **w, struct fail *f)
{
	const struct ctx *x = &p->x;
	char *name = NULL;
	enum wl_state st;
	int rc;

	*w = NULL;
	if (named_workload(p->config, &name, f) != 0)
		return -1;
	if (name != NULL) {
		st = workload_state(x, name, w);
	} else {
		if (workload_by_result(x, json_object_get(p->config, "prevResult"), w, f) != 0)
			return -1;
		st = *w == NULL ? WL_UNKNOWN : workload_state(x, (*w)->h.name, w);
	}
	switch (st) {
	case WL_OK:
		rc = 0;
		break;
	case WL_PLAIN:
		log_info("workload %s/%s has protocol tcp: not captured", (*w)->namespace,
		    (*w)->h.name);
		rc = 1;
		break;
	case WL_UNKNOWN:
		if (x->conf->cni.on_unknown == CONF_ON_UNKNOWN_SKIP) {
			log_info("%s%s%s: not a mesh workload; passed through ([cni] on_unknown = skip)",
			    name ? "workload " : "container ", name ? name : "",
			    name ? "" : getenv("CNI_CONTAINERID"));
			rc = 1;
			break;
		}
		if (name != NULL)
			workload_fail(x, name, st, *w, f);
		else
			set_fail(f, CNI_ERR_WORKLOAD, "unknown workload", "no workload of the registry "
			    "%s is named by amesh.workload or owns an address of prevResult",
			    x->conf->mesh.registry);
		rc = -1;
		break;
	default:
		workload_fail(x, name ? name : (*w)->h.name, st, *w, f);
		rc = -1;
		break;
	}
	free(name);
	return rc;
}

static int
plugin_add(struct plugin *p, struct fail *f)
{
	const struct reg_workload *w;
	const char *netns;
	int r;

	if (need_env("CNI_CONTAINERID", f) == NULL || need_env("CNI_IFNAME", f) == NULL ||
	    (netns = need_env("CNI_NETNS", f)) == NULL)
		return -1;
	if (access(netns, F_OK) != 0) {
		set_fail(f, CNI_ERR_ENV, "invalid environment variable", "CNI_NETNS %s: %s", netns,
		    strerror(errno));
		return -1;
	}
	if ((r = plugin_workload(p, &w, f)) < 0)
		return -1;
	if (r == 0) {
		if (enroll(&p->x, w, netns, f) != 0)
			return -1;
		log_info("container %s: workload %s/%s enrolled, netns %s",
		    getenv("CNI_CONTAINERID"), w->namespace, w->h.name, netns);
	}
	return print_result(p) == EXIT_OK ? 0 : (set_fail(f, CNI_ERR_IO, "cannot write the result",
	    "stdout: %s", strerror(errno)), -1);
}

static int
plugin_check(struct plugin *p, struct fail *f)
{
	const struct reg_workload *w;
	struct enrolled_list el;
	const struct enrolled *e;
	struct netns_id id;
	struct diag d;
	const char *netns;
	char err[512];
	bool down;
	int r, fd;

	if (need_env("CNI_CONTAINERID", f) == NULL || need_env("CNI_IFNAME", f) == NULL ||
	    (netns = need_env("CNI_NETNS", f)) == NULL)
		return -1;
	if (!json_is_object(json_object_get(p->config, "prevResult"))) {
		set_fail(f, CNI_ERR_CONFIG, "prevResult missing", "CHECK needs the prevResult of the "
		    "ADD");
		return -1;
	}
	if ((r = plugin_workload(p, &w, f)) != 0)
		return r < 0 ? -1 : 0;
	if (zt_list(&p->x, &el, &down, f) != 0)
		return -1;
	e = enrolled_find(&el, w->h.name);
	if (e == NULL || (strcmp(e->netns, netns) != 0 && (netns_id_of_path(netns, &id) != 0 ||
	    !netns_path_is(e->netns, &id)))) {
		set_fail(f, CNI_ERR_ZTUNNEL, "workload not enrolled", "the ztunnel at %s has workload "
		    "%s %s%s", p->x.conf->cni.socket, w->h.name, e ? "enrolled in " : "not enrolled",
		    e ? e->netns : "");
		enrolled_free(&el);
		return -1;
	}
	if (strcmp(e->state, "serving") != 0) {
		set_fail(f, CNI_ERR_ZTUNNEL, "workload not served", "the ztunnel at %s holds workload "
		    "%s but does not serve it (its traffic is refused): %s", p->x.conf->cni.socket,
		    w->h.name, e->why);
		enrolled_free(&el);
		return -1;
	}
	enrolled_free(&el);
	if ((fd = open(netns, O_RDONLY | O_CLOEXEC)) < 0) {
		set_fail(f, CNI_ERR_ENV, "cannot open the network namespace", "CNI_NETNS %s: %s",
		    netns, strerror(errno));
		return -1;
	}
	diag_init(&d);
	r = nft_rules_check(fd, netns, &p->x.params, &d, err, sizeof(err));
	close(fd);
	if (r != 0)
		set_fail(f, CNI_ERR_RULES, "cannot read the interception rules", "%s", err);
	else if (diag_count(&d) > 0) {
		size_t n = 0;

		f->details[0] = '\0';
		for (size_t i = 0; i < d.n && n < sizeof(f->details); i++)
			n += (size_t)snprintf(f->details + n, sizeof(f->details) - n, "%s%s",
			    i ? "; " : "", d.msg[i]);
		f->code = CNI_ERR_RULES;
		f->msg = "interception rules missing or changed";
		r = -1;
	}
	diag_clear(&d);
	return r != 0 ? -1 : 0;
}

/*
 * A DEL lets go of the workload the request names (amesh.workload, or the owner of prevResult's
 * addresses); with none named, of the workload enrolled in CNI_NETNS (by the ztunnel's list, or
 * its records when it is down). A namespace that holds another workload than the one named is
 * left alone: a runtime sends DEL after an ADD refused for that very conflict. With no workload
 * at all, only rules an interrupted ADD left are removed. Rules go only with their owner
 * (rules_remove_owned).
 */
static int
plugin_del(struct plugin *p, struct fail *f)
{
	const struct reg_workload *w = NULL;
	const char *netns = getenv("CNI_NETNS");
	char *name = NULL, *here = NULL;
	bool done;
	int rc = -1;

	if (need_env("CNI_CONTAINERID", f) == NULL || need_env("CNI_IFNAME", f) == NULL)
		return -1;
	if (netns != NULL && *netns == '\0')
		netns = NULL;
	if (netns != NULL) {
		struct enrolled_list el;
		const struct enrolled *e = NULL;
		struct netns_id id;
		bool down;

		if (zt_list(&p->x, &el, &down, f) != 0) {
			if (!down)
				return -1;
			records_list(&p->x, &el);
		}
		if (netns_id_of_path(netns, &id) == 0)
			e = enrolled_in(&el, &id);
		for (size_t i = 0; i < el.n && e == NULL; i++)
			if (strcmp(el.v[i].netns, netns) == 0) /* its path is gone already */
				e = &el.v[i];
		if (e != NULL)
			here = xstrdup(e->workload);
		enrolled_free(&el);
	}
	if (named_workload(p->config, &name, f) != 0)
		goto out;
	if (name == NULL && workload_by_result(&p->x, json_object_get(p->config, "prevResult"), &w,
	    f) == 0 && w != NULL)
		name = xstrdup(w->h.name);
	if (name != NULL && here != NULL && strcmp(name, here) != 0)
		log_info("container %s: netns %s holds workload %s, not %s: left alone",
		    getenv("CNI_CONTAINERID"), netns, here, name);
	if (name == NULL) {
		name = here;
		here = NULL;
	}
	if (name != NULL) {
		rc = unenroll(&p->x, name, netns, &done, f);
		if (rc == 0 && done)
			log_info("container %s: workload %s unenrolled", getenv("CNI_CONTAINERID"),
			    name);
	} else if (netns != NULL) {
		rc = rules_remove_owned(netns, false, NULL, NULL, f);
	} else {
		rc = 0;
	}
out:
	free(name);
	free(here);
	return rc;
}

static int
plugin_status(struct plugin *p, struct fail *f)
{
	struct enrolled_list el;
	bool down;

	if (p->x.reg == NULL) {
		set_fail(f, CNI_ERR_UNAVAILABLE, "plugin not available", "the registry %s cannot be "
		    "loaded", p->x.conf->mesh.registry);
		return -1;
	}
	if (zt_list(&p->x, &el, &down, f) != 0) {
		f->code = CNI_ERR_UNAVAILABLE;
		f->msg = "plugin not available";
		return -1;
	}
	enrolled_free(&el);
	return 0;
}

/* Unenrolls workloads whose namespace path is gone: their pods went away without a DEL. */
static int
plugin_gc(struct plugin *p, struct fail *f)
{
	json_t *att = json_object_get(p->config, "cni.dev/valid-attachments");
	struct enrolled_list el;
	bool from_records, done;
	int rc = 0;

	if (att != NULL && !json_is_array(att)) {
		set_fail(f, CNI_ERR_CONFIG, "invalid GC request", "cni.dev/valid-attachments must be "
		    "a list");
		return -1;
	}
	if (enrolled_get(&p->x, &el, &from_records, f) != 0)
		return -1;
	for (size_t i = 0; i < el.n && rc == 0; i++) {
		struct stat st;

		if (stat(el.v[i].netns, &st) == 0 || errno != ENOENT)
			continue;
		log_info("workload %s: netns %s is gone: unenrolling", el.v[i].workload,
		    el.v[i].netns);
		rc = unenroll(&p->x, el.v[i].workload, NULL, &done, f);
	}
	enrolled_free(&el);
	return rc;
}

int
cmd_cni_plugin(void)
{
	struct plugin p = { .command = getenv("CNI_COMMAND") };
	struct fail f = { .code = 0 };
	json_error_t jerr;
	json_t *v;
	char *in = NULL;
	size_t len = 0;
	const char *conf_path = AMESH_DEFAULT_CONF;
	int rc = EXIT_FAIL;

	log_init(LOG_LVL_INFO, LOG_FMT_TEXT);
	if (p.command == NULL || *p.command == '\0') {
		p.command = NULL;
		set_fail(&f, CNI_ERR_ENV, "missing environment variable", "CNI_COMMAND is not set: "
		    "amesh-cni is a CNI plugin, run by a container runtime (see amesh-cni(8))");
		return plugin_error(&p, &f);
	}
	if (strcmp(p.command, "VERSION") == 0) {
		/* Answered whatever the input (not even read): the runtime asks before it knows what
		 * we speak. */
		json_t *o = json_pack("{s:s, s:[s,s]}", "cniVersion", CNI_LATEST,
		    "supportedVersions", cni_versions[0], cni_versions[1]);

		json_dumpf(o, stdout, JSON_COMPACT);
		printf("\n");
		json_decref(o);
		return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
	}
	if (read_stdin(&in, &len, &f) != 0)
		return plugin_error(&p, &f);
	p.config = json_loadb(in, len, 0, &jerr);
	free(in);
	if (p.config == NULL) {
		set_fail(&f, CNI_ERR_DECODE, "cannot decode the network configuration", "stdin, line "
		    "%d: %s", jerr.line, jerr.text);
		return plugin_error(&p, &f);
	}
	if (!json_is_object(p.config)) {
		set_fail(&f, CNI_ERR_DECODE, "cannot decode the network configuration", "stdin: "
		    "not a JSON object");
		goto out;
	}
	v = json_object_get(p.config, "cniVersion");
	if (!json_is_string(v)) {
		set_fail(&f, CNI_ERR_CONFIG, "invalid network configuration", "cniVersion is missing");
		goto out;
	}
	if (!version_supported(json_string_value(v))) {
		set_fail(&f, CNI_ERR_VERSION, "incompatible CNI version", "cniVersion %s is not "
		    "supported; amesh-cni speaks %s and %s", json_string_value(v), cni_versions[0],
		    cni_versions[1]);
		goto out;
	}
	p.version = json_string_value(v);
	if (!json_is_string(json_object_get(p.config, "name")) ||
	    !json_is_string(json_object_get(p.config, "type"))) {
		set_fail(&f, CNI_ERR_CONFIG, "invalid network configuration", "name and type must be "
		    "strings");
		goto out;
	}
	v = json_object_get(p.config, "prevResult");
	if (v != NULL && !json_is_object(v)) {
		set_fail(&f, CNI_ERR_CONFIG, "invalid network configuration", "prevResult must be an "
		    "object");
		goto out;
	}
	if ((v = json_object_get(p.config, "conf")) != NULL) {
		if (!json_is_string(v) || json_string_length(v) == 0) {
			set_fail(&f, CNI_ERR_CONFIG, "invalid network configuration", "conf must be the "
			    "path of amesh.conf");
			goto out;
		}
		conf_path = json_string_value(v);
	}
	if (strcmp(p.command, "ADD") != 0 && strcmp(p.command, "DEL") != 0 &&
	    strcmp(p.command, "CHECK") != 0 && strcmp(p.command, "STATUS") != 0 &&
	    strcmp(p.command, "GC") != 0) {
		set_fail(&f, CNI_ERR_ENV, "unknown command", "CNI_COMMAND '%s' is not one of ADD, "
		    "DEL, CHECK, VERSION, STATUS, GC", p.command);
		goto out;
	}
	/* DEL and GC must work with a broken registry; STATUS reports it. */
	if (ctx_load(&p.x, conf_path, strcmp(p.command, "ADD") != 0 &&
	    strcmp(p.command, "CHECK") != 0, &f) != 0)
		goto out;
	p.loaded = true;
	{
		struct cmd_globals g = { .conf_path = conf_path, .log_format = -1 };

		cmd_log_setup(&g, p.x.conf);
	}
	if (strcmp(p.command, "ADD") == 0) {
		if (plugin_add(&p, &f) == 0)
			rc = EXIT_OK;
	} else if (strcmp(p.command, "DEL") == 0) {
		if (plugin_del(&p, &f) == 0)
			rc = EXIT_OK;
	} else if (strcmp(p.command, "CHECK") == 0) {
		if (plugin_check(&p, &f) == 0)
			rc = EXIT_OK;
	} else if (strcmp(p.command, "STATUS") == 0) {
		if (plugin_status(&p, &f) == 0)
			rc = EXIT_OK;
	} else if (plugin_gc(&p, &f) == 0) {
		rc = EXIT_OK;
	}
out:
	if (rc != EXIT_OK)
		rc = plugin_error(&p, &f);
	if (p.loaded)
		ctx_free(&p.x);
	json_decref(p.config);
	return rc;
}
