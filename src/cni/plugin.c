/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CNI plugin protocol (CNI spec 1.0.0 and 1.1.0: ADD, DEL, CHECK, VERSION, STATUS, GC) over
 * the enrollment of cni/enroll.h: the request from the environment and stdin, the workload it
 * names, the result or the spec's error object on stdout.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cni/enroll.h"
#include "cni/plugin.h"
#include "config/kw.h"
#include "core/diag.h"
#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "net/netns.h"

static const char *const cni_versions[] = { "1.0.0", "1.1.0", NULL };
#define CNI_LATEST "1.1.0"
/* Network configuration on stdin: more than this is not a configuration. */
#define STDIN_MAX (1024 * 1024)

struct plugin {
	const char *command, *version; /* version: the request's cniVersion once it is known good */
	json_t *config;
	struct cni_ctx x;
	bool loaded;
};

/* Prints the CNI error object on stdout (and a line on stderr); returns the exit code. */
static int
plugin_error(const struct plugin *p, const struct cni_fail *f)
{
	const char *v = p->version ? p->version : CNI_LATEST;
	json_t *o = json_pack("{s:s, s:i, s:s, s:s}", "cniVersion", v, "code", f->code, "msg",
	    f->msg, "details", f->details);

	if (o == NULL) {
		/* Details quote what the runtime sent (CNI_COMMAND, names, paths), which need not
		 * be UTF-8, and JSON strings must be: the same object with those bytes as '?'. */
		char details[sizeof(f->details)];
		size_t i;

		for (i = 0; f->details[i] != '\0'; i++)
			details[i] = (unsigned char)f->details[i] < 0x80 ? f->details[i] : '?';
		details[i] = '\0';
		o = json_pack("{s:s, s:i, s:s, s:s}", "cniVersion", v, "code", f->code, "msg", f->msg,
		    "details", details);
	}
	if (o != NULL) {
		json_dumpf(o, stdout, JSON_COMPACT);
		json_decref(o);
	}
	printf("\n");
	fflush(stdout);
	fprintf(stderr, "amesh-cni: %s%s%s: %s\n", p->command ? p->command : "",
	    p->command ? ": " : "", f->msg, f->details);
	return 1;
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
read_stdin(char **out, size_t *len, struct cni_fail *f)
{
	size_t cap = 4096, n = 0;
	char *buf = xmalloc(cap);

	for (;;) {
		size_t got;

		if (n == cap) {
			if (cap >= STDIN_MAX) {
				free(buf);
				cni_fail_set(f, CNI_ERR_IO, "network configuration too large", "the network "
				    "configuration on stdin is larger than %d bytes", STDIN_MAX);
				return cni_fail_err(f);
			}
			cap *= 2;
			buf = xrealloc(buf, cap, 1);
		}
		got = fread(buf + n, 1, cap - n, stdin);
		n += got;
		if (got == 0) {
			if (ferror(stdin)) {
				free(buf);
				cni_fail_set(f, CNI_ERR_IO, "cannot read the network configuration",
				    "stdin: %s", strerror(errno));
				return cni_fail_err(f);
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
need_env(const char *name, struct cni_fail *f)
{
	const char *v = getenv(name);

	if (v == NULL || *v == '\0') {
		cni_fail_set(f, CNI_ERR_ENV, "missing environment variable", "%s is not set", name);
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
 * Returns 0 (*name NULL when none names it) or cni_fail_err(f) when they disagree or are malformed.
 */
static int
named_workload(json_t *config, char **name, struct cni_fail *f)
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
				cni_fail_set(f, CNI_ERR_CONFIG, "invalid args", "args[\"amesh.workload\"] "
				    "must be a string");
				rc = cni_fail_err(f);
			} else {
				cand[2] = xstrdup(json_string_value(v));
			}
		}
	}
	for (int i = 0; i < 3 && rc == 0; i++) {
		if (cand[i] == NULL)
			continue;
		if (!kw_is_hostname(cand[i])) {
			cni_fail_set(f, CNI_ERR_CONFIG, "invalid workload name", "%s: amesh.workload '%s' "
			    "is not a workload name", src[i], cand[i]);
			rc = cni_fail_err(f);
		} else if (*name == NULL) {
			*name = xstrdup(cand[i]);
		} else if (strcmp(*name, cand[i]) != 0) {
			cni_fail_set(f, CNI_ERR_CONFIG, "conflicting workload names", "amesh.workload is "
			    "'%s' in one place and '%s' in %s", *name, cand[i], src[i]);
			rc = cni_fail_err(f);
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

/* The workload that owns the addresses of prevResult.ips. Returns 0 (*w may be NULL) or
 * cni_fail_err(f). */
static int
workload_by_result(const struct cni_ctx *x, json_t *prev, const struct reg_workload **w,
    struct cni_fail *f)
{
	json_t *ips = json_object_get(prev, "ips"), *ip;
	size_t i;

	*w = NULL;
	if (x->reg == NULL || ips == NULL)
		return 0;
	if (!json_is_array(ips)) {
		cni_fail_set(f, CNI_ERR_CONFIG, "invalid prevResult", "prevResult.ips must be a list");
		return cni_fail_err(f);
	}
	json_array_foreach(ips, i, ip) {
		const char *a = json_string_value(json_object_get(ip, "address")), *why;
		const struct reg_workload *found;
		struct ip_addr addr;
		char buf[64];
		size_t n;

		if (a == NULL) {
			cni_fail_set(f, CNI_ERR_CONFIG, "invalid prevResult", "prevResult.ips[%zu] has no "
			    "address", i);
			return cni_fail_err(f);
		}
		n = strcspn(a, "/");
		if (n >= sizeof(buf) || (memcpy(buf, a, n), buf[n] = '\0',
		    parse_ip(buf, &addr, &why) != 0)) {
			cni_fail_set(f, CNI_ERR_CONFIG, "invalid prevResult", "prevResult.ips[%zu]: '%s' is "
			    "not an address", i, a);
			return cni_fail_err(f);
		}
		found = registry_workload_by_addr(x->reg, &addr);
		if (found == NULL)
			continue;
		if (*w != NULL && *w != found) {
			cni_fail_set(f, CNI_ERR_CONFIG, "addresses of two workloads", "prevResult has "
			    "addresses of workloads %s and %s", (*w)->h.name, found->h.name);
			return cni_fail_err(f);
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
	return fflush(stdout) == 0 ? 0 : 1;
}

/*
 * Finds the workload of an ADD or CHECK. Returns 0 with *w set, 1 to pass the request through
 * (unknown with on_unknown = skip, or protocol tcp), or cni_fail_err(f).
 */
static int
plugin_workload(struct plugin *p, const struct reg_workload **w, struct cni_fail *f)
{
	const struct cni_ctx *x = &p->x;
	char *name = NULL;
	enum cni_wl_state st;
	int rc;

	*w = NULL;
	if (named_workload(p->config, &name, f) != 0)
		return cni_fail_err(f);
	if (name != NULL) {
		st = cni_workload_state(x, name, w);
	} else {
		if (workload_by_result(x, json_object_get(p->config, "prevResult"), w, f) != 0)
			return cni_fail_err(f);
		st = *w == NULL ? CNI_WL_UNKNOWN : cni_workload_state(x, (*w)->h.name, w);
	}
	switch (st) {
	case CNI_WL_OK:
		rc = 0;
		break;
	case CNI_WL_PLAIN:
		log_info("workload %s/%s has protocol tcp: not captured", (*w)->namespace,
		    (*w)->h.name);
		rc = 1;
		break;
	case CNI_WL_UNKNOWN:
		if (x->conf->cni.on_unknown == CONF_ON_UNKNOWN_SKIP) {
			log_info("%s%s%s: not a mesh workload; passed through ([cni] on_unknown = skip)",
			    name ? "workload " : "container ", name ? name : "",
			    name ? "" : getenv("CNI_CONTAINERID"));
			rc = 1;
			break;
		}
		if (name != NULL)
			cni_workload_fail(x, name, st, *w, f);
		else
			cni_fail_set(f, CNI_ERR_WORKLOAD, "unknown workload", "no workload of the registry "
			    "%s is named by amesh.workload or owns an address of prevResult",
			    x->conf->mesh.registry);
		rc = cni_fail_err(f);
		break;
	default:
		cni_workload_fail(x, name ? name : (*w)->h.name, st, *w, f);
		rc = cni_fail_err(f);
		break;
	}
	free(name);
	return rc;
}

static int
plugin_add(struct plugin *p, struct cni_fail *f)
{
	const struct reg_workload *w;
	const char *netns;
	int r;

	if (need_env("CNI_CONTAINERID", f) == NULL || need_env("CNI_IFNAME", f) == NULL ||
	    (netns = need_env("CNI_NETNS", f)) == NULL)
		return cni_fail_err(f);
	if (access(netns, F_OK) != 0) {
		cni_fail_set(f, CNI_ERR_ENV, "invalid environment variable", "CNI_NETNS %s: %s", netns,
		    strerror(errno));
		return cni_fail_err(f);
	}
	if ((r = plugin_workload(p, &w, f)) < 0)
		return cni_fail_err(f);
	if (r == 0) {
		if (cni_enroll(&p->x, w, netns, f) != 0)
			return cni_fail_err(f);
		log_info("container %s: workload %s/%s enrolled, netns %s",
		    getenv("CNI_CONTAINERID"), w->namespace, w->h.name, netns);
	}
	return print_result(p) == 0 ? 0 : (cni_fail_set(f, CNI_ERR_IO, "cannot write the result",
	    "stdout: %s", strerror(errno)), -1);
}

static int
plugin_check(struct plugin *p, struct cni_fail *f)
{
	const struct reg_workload *w;
	struct handoff_list el;
	const struct handoff_entry *e;
	struct netns_id id;
	struct diag d;
	const char *netns;
	char err[512];
	bool down;
	int r, fd;

	if (need_env("CNI_CONTAINERID", f) == NULL || need_env("CNI_IFNAME", f) == NULL ||
	    (netns = need_env("CNI_NETNS", f)) == NULL)
		return cni_fail_err(f);
	if (!json_is_object(json_object_get(p->config, "prevResult"))) {
		cni_fail_set(f, CNI_ERR_CONFIG, "prevResult missing", "CHECK needs the prevResult of the "
		    "ADD");
		return cni_fail_err(f);
	}
	if ((r = plugin_workload(p, &w, f)) != 0)
		return r < 0 ? r : 0;
	if (cni_zt_list(&p->x, &el, &down, f) != 0)
		return cni_fail_err(f);
	e = handoff_list_find(&el, w->h.name);
	if (e == NULL || (strcmp(e->netns, netns) != 0 && (netns_id_of_path(netns, &id) != 0 ||
	    !netns_path_is(e->netns, &id)))) {
		cni_fail_set(f, CNI_ERR_ZTUNNEL, "workload not enrolled", "the ztunnel at %s has workload "
		    "%s %s%s", p->x.conf->cni.socket, w->h.name, e ? "enrolled in " : "not enrolled",
		    e ? e->netns : "");
		handoff_list_free(&el);
		return cni_fail_err(f);
	}
	if (strcmp(e->state, "serving") != 0) {
		cni_fail_set(f, CNI_ERR_ZTUNNEL, "workload not served", "the ztunnel at %s holds workload "
		    "%s but does not serve it (its traffic is refused): %s", p->x.conf->cni.socket,
		    w->h.name, e->why);
		handoff_list_free(&el);
		return cni_fail_err(f);
	}
	handoff_list_free(&el);
	if ((fd = open(netns, O_RDONLY | O_CLOEXEC)) < 0) {
		cni_fail_set(f, CNI_ERR_ENV, "cannot open the network namespace", "CNI_NETNS %s: %s",
		    netns, strerror(errno));
		return cni_fail_err(f);
	}
	diag_init(&d);
	r = nft_rules_check(fd, netns, &p->x.params, &d, err, sizeof(err));
	close(fd);
	if (r != 0)
		cni_fail_set(f, CNI_ERR_RULES, "cannot read the interception rules", "%s", err);
	else if (diag_count(&d) > 0) {
		size_t n = 0;

		f->details[0] = '\0';
		for (size_t i = 0; i < d.n && n < sizeof(f->details); i++)
			n += (size_t)snprintf(f->details + n, sizeof(f->details) - n, "%s%s",
			    i ? "; " : "", d.msg[i]);
		f->code = CNI_ERR_RULES;
		f->msg = "interception rules missing or changed";
		r = cni_fail_err(f);
	}
	diag_clear(&d);
	return r != 0 ? cni_fail_err(f) : 0;
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
plugin_del(struct plugin *p, struct cni_fail *f)
{
	const struct reg_workload *w = NULL;
	const char *netns = getenv("CNI_NETNS");
	char *name = NULL, *here = NULL;
	bool done;
	int rc = AMESH_ERR_INTERNAL;

	if (need_env("CNI_CONTAINERID", f) == NULL || need_env("CNI_IFNAME", f) == NULL)
		return cni_fail_err(f);
	if (netns != NULL && *netns == '\0')
		netns = NULL;
	if (netns != NULL) {
		struct handoff_list el;
		const struct handoff_entry *e = NULL;
		struct netns_id id;
		bool down;

		if (cni_zt_list(&p->x, &el, &down, f) != 0) {
			if (!down)
				return cni_fail_err(f);
			cni_records_list(&p->x, &el);
		}
		if (netns_id_of_path(netns, &id) == 0)
			e = cni_enrolled_in(&el, &id);
		for (size_t i = 0; i < el.n && e == NULL; i++)
			if (strcmp(el.v[i].netns, netns) == 0) /* its path is gone already */
				e = &el.v[i];
		if (e != NULL)
			here = xstrdup(e->workload);
		handoff_list_free(&el);
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
		rc = cni_unenroll(&p->x, name, netns, &done, f);
		if (rc == 0 && done)
			log_info("container %s: workload %s unenrolled", getenv("CNI_CONTAINERID"),
			    name);
	} else if (netns != NULL) {
		rc = cni_rules_remove_owned(netns, false, NULL, NULL, f);
	} else {
		rc = 0;
	}
out:
	free(name);
	free(here);
	return rc == 0 ? 0 : cni_fail_err(f); /* f says why */
}

static int
plugin_status(struct plugin *p, struct cni_fail *f)
{
	struct handoff_list el;
	bool down;

	if (p->x.reg == NULL) {
		cni_fail_set(f, CNI_ERR_UNAVAILABLE, "plugin not available", "the registry %s cannot be "
		    "loaded", p->x.conf->mesh.registry);
		return cni_fail_err(f);
	}
	if (cni_zt_list(&p->x, &el, &down, f) != 0) {
		f->code = CNI_ERR_UNAVAILABLE;
		f->msg = "plugin not available";
		return cni_fail_err(f);
	}
	handoff_list_free(&el);
	return 0;
}

/* Unenrolls workloads whose namespace path is gone: their pods went away without a DEL. */
static int
plugin_gc(struct plugin *p, struct cni_fail *f)
{
	json_t *att = json_object_get(p->config, "cni.dev/valid-attachments");
	struct handoff_list el;
	bool from_records, done;
	int rc = 0;

	if (att != NULL && !json_is_array(att)) {
		cni_fail_set(f, CNI_ERR_CONFIG, "invalid GC request", "cni.dev/valid-attachments must be "
		    "a list");
		return cni_fail_err(f);
	}
	if (cni_enrolled_get(&p->x, &el, &from_records, f) != 0)
		return cni_fail_err(f);
	for (size_t i = 0; i < el.n && rc == 0; i++) {
		struct stat st;

		if (stat(el.v[i].netns, &st) == 0 || errno != ENOENT)
			continue;
		log_info("workload %s: netns %s is gone: unenrolling", el.v[i].workload,
		    el.v[i].netns);
		rc = cni_unenroll(&p->x, el.v[i].workload, NULL, &done, f);
	}
	handoff_list_free(&el);
	return rc;
}

int
cni_plugin_main(void (*log_setup)(const char *conf_path, const struct amesh_conf *conf))
{
	struct plugin p = { .command = getenv("CNI_COMMAND") };
	struct cni_fail f = { .code = 0 };
	json_error_t jerr;
	json_t *v;
	char *in = NULL;
	size_t len = 0;
	const char *conf_path = AMESH_DEFAULT_CONF;
	int rc = 1;

	log_init(LOG_LVL_INFO, LOG_FMT_TEXT);
	if (p.command == NULL || *p.command == '\0') {
		p.command = NULL;
		cni_fail_set(&f, CNI_ERR_ENV, "missing environment variable", "CNI_COMMAND is not set: "
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
		return fflush(stdout) == 0 ? 0 : 1;
	}
	if (read_stdin(&in, &len, &f) != 0)
		return plugin_error(&p, &f);
	p.config = json_loadb(in, len, 0, &jerr);
	free(in);
	if (p.config == NULL) {
		cni_fail_set(&f, CNI_ERR_DECODE, "cannot decode the network configuration", "stdin, line "
		    "%d: %s", jerr.line, jerr.text);
		return plugin_error(&p, &f);
	}
	if (!json_is_object(p.config)) {
		cni_fail_set(&f, CNI_ERR_DECODE, "cannot decode the network configuration", "stdin: "
		    "not a JSON object");
		goto out;
	}
	v = json_object_get(p.config, "cniVersion");
	if (!json_is_string(v)) {
		cni_fail_set(&f, CNI_ERR_CONFIG, "invalid network configuration", "cniVersion is missing");
		goto out;
	}
	if (!version_supported(json_string_value(v))) {
		cni_fail_set(&f, CNI_ERR_VERSION, "incompatible CNI version", "cniVersion %s is not "
		    "supported; amesh-cni speaks %s and %s", json_string_value(v), cni_versions[0],
		    cni_versions[1]);
		goto out;
	}
	p.version = json_string_value(v);
	if (!json_is_string(json_object_get(p.config, "name")) ||
	    !json_is_string(json_object_get(p.config, "type"))) {
		cni_fail_set(&f, CNI_ERR_CONFIG, "invalid network configuration", "name and type must be "
		    "strings");
		goto out;
	}
	v = json_object_get(p.config, "prevResult");
	if (v != NULL && !json_is_object(v)) {
		cni_fail_set(&f, CNI_ERR_CONFIG, "invalid network configuration", "prevResult must be an "
		    "object");
		goto out;
	}
	if ((v = json_object_get(p.config, "conf")) != NULL) {
		if (!json_is_string(v) || json_string_length(v) == 0) {
			cni_fail_set(&f, CNI_ERR_CONFIG, "invalid network configuration", "conf must be the "
			    "path of amesh.conf");
			goto out;
		}
		conf_path = json_string_value(v);
	}
	if (strcmp(p.command, "ADD") != 0 && strcmp(p.command, "DEL") != 0 &&
	    strcmp(p.command, "CHECK") != 0 && strcmp(p.command, "STATUS") != 0 &&
	    strcmp(p.command, "GC") != 0) {
		cni_fail_set(&f, CNI_ERR_ENV, "unknown command", "CNI_COMMAND '%s' is not one of ADD, "
		    "DEL, CHECK, VERSION, STATUS, GC", p.command);
		goto out;
	}
	/* DEL and GC must work with a broken registry; STATUS reports it. */
	if (cni_ctx_load(&p.x, conf_path, strcmp(p.command, "ADD") != 0 &&
	    strcmp(p.command, "CHECK") != 0, &f) != 0)
		goto out;
	p.loaded = true;
	log_setup(conf_path, p.x.conf);
	if (strcmp(p.command, "ADD") == 0) {
		if (plugin_add(&p, &f) == 0)
			rc = 0;
	} else if (strcmp(p.command, "DEL") == 0) {
		if (plugin_del(&p, &f) == 0)
			rc = 0;
	} else if (strcmp(p.command, "CHECK") == 0) {
		if (plugin_check(&p, &f) == 0)
			rc = 0;
	} else if (strcmp(p.command, "STATUS") == 0) {
		if (plugin_status(&p, &f) == 0)
			rc = 0;
	} else if (plugin_gc(&p, &f) == 0) {
		rc = 0;
	}
out:
	if (rc != 0)
		rc = plugin_error(&p, &f);
	if (p.loaded)
		cni_ctx_free(&p.x);
	json_decref(p.config);
	return rc;
}
