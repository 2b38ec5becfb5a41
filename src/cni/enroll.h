/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Enrollment with rollback, for amesh cni's command line (src/cmd/cni.c) and its CNI plugin
 * (cni/plugin.c): what a namespace holds (the workload the ztunnel has there, by namespace
 * identity, and the owner comment of its table inet amesh), the add as a transaction over that
 * state, the del in the order that never exposes a workload, and the ztunnel's list or, when it is
 * down, its records. Every function that can fail fills a struct cni_fail: the CNI error code, a
 * summary and the whole story, which the command line prints and the plugin sends as its error;
 * it returns cni_fail_err(f), the code of core/err.h that stands for it.
 */
#ifndef AMESH_CNI_ENROLL_H
#define AMESH_CNI_ENROLL_H

#include <stdbool.h>

#include "config/conf.h"
#include "config/registry.h"
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

/* Why an operation failed: the CNI code, a short summary and the whole story. */
struct cni_fail {
	int code;
	const char *msg;
	char details[2048];
};

void cni_fail_set(struct cni_fail *f, int code, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* The negative code (core/err.h) that f's CNI code stands for, which a function that filled f
 * returns: AMESH_ERR_INVALID (version, environment, decoding, configuration), -EIO (I/O, rules),
 * -EAGAIN (try again, unavailable), AMESH_ERR_NOTFOUND (workload), -ECONNREFUSED (the ztunnel
 * refused), AMESH_ERR_EXISTS (conflict); AMESH_ERR_INTERNAL when f is not filled. */
int cni_fail_err(const struct cni_fail *f);

/* What every operation works with: this host's amesh.conf, the registry, the rule parameters. */
struct cni_ctx {
	struct amesh_conf *conf;
	struct registry *reg; /* NULL when it could not be loaded (DEL goes on without it) */
	struct nft_rules_params params;
	int timeout_ms;       /* for the ztunnel's answers: AMESH_HANDOFF_TIMEOUT_MS or 10 s */
};

/* Loads amesh.conf and, unless reg_optional and it fails, the registry. Returns 0 or, with f,
 * cni_fail_err(f). */
int cni_ctx_load(struct cni_ctx *x, const char *path, bool reg_optional, struct cni_fail *f);
void cni_ctx_free(struct cni_ctx *x);

/*
 * The ztunnel's LIST. Returns 0 with out filled, or, with f set, cni_fail_err(f); *down is true
 * when nothing listens on the socket (the caller may fall back to the records).
 */
int cni_zt_list(const struct cni_ctx *x, struct handoff_list *out, bool *down, struct cni_fail *f);
/* Every record in state_dir, as entries in state "recorded". */
void cni_records_list(const struct cni_ctx *x, struct handoff_list *out);
/* Enrolled workloads: from the ztunnel, or from the records when it is not running. */
int cni_enrolled_get(const struct cni_ctx *x, struct handoff_list *out, bool *from_records,
    struct cni_fail *f);
/* The entry whose namespace path names the namespace id now; none when id is unknown. */
const struct handoff_entry *cni_enrolled_in(const struct handoff_list *l,
    const struct netns_id *id);

enum cni_wl_state { CNI_WL_OK, CNI_WL_UNKNOWN, CNI_WL_OTHER_NODE, CNI_WL_PLAIN };
/* Whether name can be enrolled here: in the registry, on this node, protocol hbone. */
enum cni_wl_state cni_workload_state(const struct cni_ctx *x, const char *name,
    const struct reg_workload **out);
/* Sets f for a state other than CNI_WL_OK. */
void cni_workload_fail(const struct cni_ctx *x, const char *name, enum cni_wl_state st,
    const struct reg_workload *w, struct cni_fail *f);

/*
 * Enrollment as a transaction over the namespace's whole state. First, changing nothing: the
 * ztunnel must answer; the namespace must be empty or already this workload's; the workload must
 * not live in another namespace that still exists (CNI_ERR_CONFLICT). Then the rules (captured
 * from here on: what the proxy does not serve yet is refused), then the hand-off. A failed
 * hand-off puts the namespace back as it was: rules that were there stay with their owner, a
 * namespace that had none is emptied. Returns 0 or, with f, cni_fail_err(f).
 */
int cni_enroll(const struct cni_ctx *x, const struct reg_workload *w, const char *netns_path,
    struct cni_fail *f);
/*
 * --mode sidecar: the rules alone, with [sidecar]'s ports and owner "sidecar NAME", and no
 * hand-off. The namespace must hold nothing else, and the workload must not be enrolled with the
 * ztunnel. Returns 0 or, with f, cni_fail_err(f).
 */
int cni_sidecar_capture(const struct cni_ctx *x, const struct reg_workload *w,
    const char *netns_path, struct cni_fail *f);
/*
 * Tells the ztunnel to let name go (DEL), then removes its rules from its namespace: in that order
 * so the workload is never reachable around the proxy. With the ztunnel down its record is removed
 * instead. only_netns (CNI DEL) restricts the work to that namespace: a workload enrolled
 * elsewhere stays enrolled. Rules go only with their owner (cni_rules_remove_owned). Returns 0
 * (*done false when nothing was enrolled) or, with f, cni_fail_err(f).
 */
int cni_unenroll(const struct cni_ctx *x, const char *name, const char *only_netns, bool *done,
    struct cni_fail *f);
/*
 * Frees a namespace by its path: the workload enrolled (or recorded) there is unenrolled; with no
 * workload, rules of the mode's kind are removed. Another kind's rules or workload fail with what
 * to run instead. *what is the workload unenrolled (caller frees), or NULL. Returns 0 or, with f,
 * cni_fail_err(f).
 */
int cni_release(const struct cni_ctx *x, const char *path, bool sidecar, char **what,
    struct cni_fail *f);
/*
 * Removes the rules from path when they are those of mode (sidecar or not) and, unless name is
 * NULL, of that workload; rules without an owner comment (amesh 0.1) count as anyone's. A
 * namespace that is gone took them with it. Rules of another owner stay: *kept says so (may be
 * NULL). Returns 0 or, with f, cni_fail_err(f).
 */
int cni_rules_remove_owned(const char *path, bool sidecar, const char *name, bool *kept,
    struct cni_fail *f);

#endif
