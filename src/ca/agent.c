/* SPDX-License-Identifier: Apache-2.0 */
/* The identity agent (see agent.h). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ca/agent.h"
#include "ca/client.h"
#include "ca/proto.h"
#include "core/err.h"
#include "core/log.h"
#include "core/util.h"
#include "telemetry/metrics.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/identity.h"
#include "tls/rng.h"

#define TICK_MS 1000
#define BACKOFF_MAX_S 60

/* This node's certificate, shared with requests in flight. */
struct node_cred {
	int refs;
	mbedtls_x509_crt chain;
	mbedtls_pk_context key;
	time_t not_before, not_after;
};

enum ident_kind { IK_WORKLOAD, IK_NODE };

struct waiter {
	struct waiter *next;
	idagent_done_fn done;
	void *arg;
};

/* One identity the agent keeps. */
struct ident {
	struct ident *next;
	enum ident_kind kind;
	char *ns, *sa, *id;
	time_t not_before, not_after; /* of the certificate in force (0: none) */
	time_t renew_at;              /* when to ask again */
	time_t retry_at;              /* after a failure, not before this */
	unsigned failures;            /* in a row */
	bool busy;                    /* a request is in flight */
	char last_error[1024];
	char issuer[256];             /* the CA that signed the certificate in force */
	struct waiter *waiters;
};

enum job_kind { JOB_SIGN, JOB_BUNDLE };

struct job {
	uv_work_t req;
	struct idagent *a;
	enum job_kind kind;
	struct ident *e;
	char *id, *key_path, *crt_path, *lock_path;
	uint64_t ttl_s;
	struct node_cred *cred;
	struct trust_bundle *bundle;
	/* results */
	int status;
	char why[1024];
	char ca_issuer[256], issuer[256]; /* the CA that signs now; the one that signed ours */
	time_t nb, na;
	bool bundle_changed;
};

struct idagent {
	struct idagent_cfg cfg;
	const struct amesh_conf *conf;
	uv_timer_t tick;
	struct ident *idents;
	size_t n;
	struct ident *node; /* the node certificate's entry */
	struct node_cred *cred;
	char node_why[1024];
	unsigned inflight;
	time_t bundle_at;
	bool bundle_busy, closing;
	int open_handles;
	void (*done)(void *);
	void *done_arg;
	struct metric_counter *renewals, *failures;
};

static time_t
now_s(void)
{
	return time(NULL);
}

static void
cred_unref(struct node_cred *c)
{
	if (c == NULL || --c->refs > 0)
		return;
	mbedtls_x509_crt_free(&c->chain);
	mbedtls_pk_free(&c->key);
	free(c);
}

/*
 * When a certificate's life began: its notBefore is backdated by CA_BACKDATE_SECONDS for clock
 * skew (ours always is), so the life that counts starts that much later, and not after now.
 */
static time_t
life_start(time_t nb, time_t na)
{
	time_t now = now_s(), start = nb;

	if (nb + CA_BACKDATE_SECONDS < na)
		start = nb + CA_BACKDATE_SECONDS;
	return start < now ? start : now;
}

/* The renewal time of a certificate: 0.4 to 0.6 of its life. */
static time_t
renew_time(time_t nb, time_t na)
{
	uint32_t r;
	time_t start = life_start(nb, na);
	double life = (double)(na - start);

	rng_fill(rng_ctx(), (unsigned char *)&r, sizeof(r));
	return start + (time_t)(life * (0.4 + 0.2 * ((double)r / 4294967295.0)));
}

/* Loads the node certificate; on failure the agent has none and node_why says why. */
static void
load_cred(struct idagent *a)
{
	const struct amesh_conf *c = a->conf;
	struct node_cred *cr = calloc(1, sizeof(*cr));
	char e[512], id[SPIFFE_ID_MAX], td[SPIFFE_ID_MAX], node[SPIFFE_ID_MAX];
	time_t now = now_s();

	if (cr == NULL)
		return;
	cr->refs = 1;
	if (cert_load_chain(c->identity.node_cert, &cr->chain, e, sizeof(e)) != 0) {
		snprintf(a->node_why, sizeof(a->node_why), "no node certificate (%s): join the mesh "
		    "first with amesh ca join --token TOKEN (amesh ca token --node %s makes one)", e,
		    c->mesh.node ? c->mesh.node : "NODE");
		goto fail;
	}
	if (cert_load_key(c->identity.node_key, &cr->key, e, sizeof(e)) != 0) {
		snprintf(a->node_why, sizeof(a->node_why), "node key %s: %s", c->identity.node_key, e);
		goto fail;
	}
	if (mbedtls_pk_check_pair(&cr->chain.pk, &cr->key) != 0) {
		snprintf(a->node_why, sizeof(a->node_why), "node key %s does not match %s",
		    c->identity.node_key, c->identity.node_cert);
		goto fail;
	}
	if (cert_spiffe_id(&cr->chain, id, sizeof(id)) != 0 ||
	    spiffe_split_node(id, td, sizeof(td), node, sizeof(node)) != 0 ||
	    strcmp(td, c->mesh.trust_domain) != 0 || c->mesh.node == NULL ||
	    strcmp(node, c->mesh.node) != 0) {
		snprintf(a->node_why, sizeof(a->node_why), "%s is not the certificate of node %s in "
		    "trust domain %s", c->identity.node_cert, c->mesh.node ? c->mesh.node : "(unset)",
		    c->mesh.trust_domain);
		goto fail;
	}
	cr->not_before = cert_not_before(&cr->chain);
	cr->not_after = cert_not_after(&cr->chain);
	if (cr->not_after <= now) {
		char t[32];

		snprintf(a->node_why, sizeof(a->node_why), "node certificate %s expired at %s: join "
		    "again (amesh ca token --node %s on the CA host, then amesh ca join)",
		    c->identity.node_cert, iso_time(cr->not_after, t, sizeof(t)), c->mesh.node);
		goto fail;
	}
	a->node_why[0] = '\0';
	cred_unref(a->cred);
	a->cred = cr;
	if (a->node != NULL) {
		if (mbedtls_x509_dn_gets(a->node->issuer, sizeof(a->node->issuer),
		    &cr->chain.issuer) < 0)
			a->node->issuer[0] = '\0';
		a->node->not_before = cr->not_before;
		a->node->not_after = cr->not_after;
		a->node->renew_at = renew_time(cr->not_before, cr->not_after);
	}
	return;
fail:
	cred_unref(cr);
}

static struct ident *
find(struct idagent *a, const char *ns, const char *sa)
{
	for (struct ident *e = a->idents; e != NULL; e = e->next)
		if (e->kind == IK_WORKLOAD && strcmp(e->ns, ns) == 0 && strcmp(e->sa, sa) == 0)
			return e;
	return NULL;
}

static void
notify(struct ident *e, int status, const char *why)
{
	struct waiter *w = e->waiters;

	e->waiters = NULL;
	while (w != NULL) {
		struct waiter *next = w->next;

		w->done(w->arg, status, why);
		free(w);
		w = next;
	}
}

/* Writes data to path atomically with mode, under the directory's lock file. */
static int
write_pair(const char *lock_path, const char *key_path, const char *key_pem, size_t key_len,
    const char *crt_path, const char *crt_pem, size_t crt_len, char *why, size_t whylen)
{
	int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600), r;

	/* Roles of one host that share an identity (or the node certificate) write in turn, so
	 * a key is never paired with another process's certificate. */
	if (fd < 0) {
		snprintf(why, whylen, "cannot open %s: %s", lock_path, strerror(errno));
		return -errno;
	}
	flock(fd, LOCK_EX);
	r = ca_write_file(key_path, key_pem, key_len, 0600, true, why, whylen);
	if (r == 0)
		r = ca_write_file(crt_path, crt_pem, crt_len, 0644, true, why, whylen);
	flock(fd, LOCK_UN);
	close(fd);
	return r;
}

static void
client_cfg(struct job *j, struct ca_client_cfg *cc)
{
	const struct amesh_conf *c = j->a->conf;

	memset(cc, 0, sizeof(*cc));
	cc->addrs = c->identity.ca_address.v;
	cc->naddrs = c->identity.ca_address.n;
	cc->trust_domain = c->mesh.trust_domain;
	cc->bundle = &j->bundle->crt;
	cc->chain = &j->cred->chain;
	cc->key = &j->cred->key;
	cc->timeout_ms = c->identity.ca_timeout;
	cc->mark = j->a->cfg.mark;
}

/* Worker thread: key, CSR, request, check, write. */
static void
sign_work(struct job *j)
{
	struct ca_client_cfg cc;
	struct ca_client_resp resp;
	mbedtls_pk_context key;
	mbedtls_x509_crt chain;
	char *csr = NULL, hid[SPIFFE_ID_MAX + 32], httl[48], id[SPIFFE_ID_MAX];
	const char *headers[4];
	unsigned char keypem[1024];
	size_t csrlen = 0;
	uint32_t flags = 0;
	int r;

	mbedtls_x509_crt_init(&chain);
	mbedtls_pk_init(&key);
	memset(&resp, 0, sizeof(resp));
	r = ca_csr_new(j->id, &key, &csr, &csrlen, j->why, sizeof(j->why));
	if (r != 0)
		goto out;
	snprintf(hid, sizeof(hid), "%s: %s", CA_HDR_IDENTITY, j->id);
	snprintf(httl, sizeof(httl), "%s: %" PRIu64, CA_HDR_TTL, j->ttl_s);
	headers[0] = hid;
	headers[1] = "Content-Type: " CA_TYPE_CSR;
	headers[2] = j->ttl_s > 0 ? httl : NULL; /* none: the CA's own lifetime (node certificates) */
	headers[3] = NULL;
	client_cfg(j, &cc);
	r = ca_client_request(&cc, "POST", CA_PATH_SIGN, headers, csr, csrlen, &resp, j->why,
	    sizeof(j->why));
	if (r != 0)
		goto out;
	if (resp.status != 200) {
		size_t n = strcspn(resp.body, "\n");

		snprintf(j->why, sizeof(j->why), "CA %s answered %u: %.*s", resp.addr, resp.status,
		    (int)(n > 400 ? 400 : n), resp.body);
		r = AMESH_ERR_INVALID;
		goto out;
	}
	/* Trust nothing the CA sent unchecked: our key, our ID, a chain to the bundle. */
	if (mbedtls_x509_crt_parse(&chain, (const unsigned char *)resp.body, resp.body_len + 1) != 0 ||
	    mbedtls_pk_check_pair(&chain.pk, &key) != 0 ||
	    cert_spiffe_id(&chain, id, sizeof(id)) != 0 || strcmp(id, j->id) != 0 ||
	    mbedtls_x509_crt_verify(&chain, &j->bundle->crt, NULL, NULL, &flags, NULL, NULL) != 0) {
		snprintf(j->why, sizeof(j->why), "CA %s sent a certificate that is not for this key "
		    "and %s, or does not chain to the trust bundle", resp.addr, j->id);
		r = AMESH_ERR_INVALID;
		goto out;
	}
	j->nb = cert_not_before(&chain);
	j->na = cert_not_after(&chain);
	snprintf(j->ca_issuer, sizeof(j->ca_issuer), "%s", resp.issuer);
	if (mbedtls_x509_dn_gets(j->issuer, sizeof(j->issuer), &chain.issuer) < 0)
		j->issuer[0] = '\0';
	r = mbedtls_pk_write_key_pem(&key, keypem, sizeof(keypem));
	if (r != 0) {
		snprintf(j->why, sizeof(j->why), "cannot encode the key");
		r = AMESH_ERR_INTERNAL;
		goto out;
	}
	r = write_pair(j->lock_path, j->key_path, (const char *)keypem, strlen((char *)keypem),
	    j->crt_path, resp.body, resp.body_len, j->why, sizeof(j->why));
	mbedtls_platform_zeroize(keypem, sizeof(keypem));
	if (r == 0 && j->e->kind == IK_WORKLOAD)
		identity_store_reload(j->a->cfg.ids);
out:
	j->status = r;
	free(csr);
	mbedtls_pk_free(&key);
	mbedtls_x509_crt_free(&chain);
	ca_client_resp_free(&resp);
}

/* Worker thread: fetch the bundle, write it when it changed and is sound. */
static void
bundle_work(struct job *j)
{
	const char *path = j->a->conf->mesh.trust_bundle;
	struct ca_client_cfg cc;
	struct ca_client_resp resp;
	mbedtls_x509_crt b;
	char *cur = NULL;
	size_t curlen = 0;
	int r;

	mbedtls_x509_crt_init(&b);
	client_cfg(j, &cc);
	r = ca_client_request(&cc, "GET", CA_PATH_BUNDLE, NULL, NULL, 0, &resp, j->why,
	    sizeof(j->why));
	if (r != 0)
		goto out;
	if (resp.status != 200) {
		snprintf(j->why, sizeof(j->why), "CA %s answered %u to %s", resp.addr, resp.status,
		    CA_PATH_BUNDLE);
		r = AMESH_ERR_INVALID;
		goto out;
	}
	if (mbedtls_x509_crt_parse(&b, (const unsigned char *)resp.body, resp.body_len + 1) != 0) {
		snprintf(j->why, sizeof(j->why), "CA %s sent a trust bundle that does not parse",
		    resp.addr);
		r = AMESH_ERR_INVALID;
		goto out;
	}
	for (const mbedtls_x509_crt *c = &b; c != NULL && c->raw.len > 0; c = c->next)
		if (!c->ca_istrue) {
			snprintf(j->why, sizeof(j->why), "CA %s sent a trust bundle with a certificate "
			    "that is not a CA", resp.addr);
			r = AMESH_ERR_INVALID;
			goto out;
		}
	{
		FILE *f = fopen(path, "re");

		if (f != NULL) {
			cur = malloc(CA_RESP_BODY_MAX + 1);
			if (cur != NULL)
				curlen = fread(cur, 1, CA_RESP_BODY_MAX, f);
			fclose(f);
		}
	}
	snprintf(j->ca_issuer, sizeof(j->ca_issuer), "%s", resp.issuer);
	if (cur != NULL && curlen == resp.body_len && memcmp(cur, resp.body, curlen) == 0)
		goto out;
	r = ca_write_file(path, resp.body, resp.body_len, 0644, true, j->why, sizeof(j->why));
	if (r == 0) {
		j->bundle_changed = true;
		identity_store_reload(j->a->cfg.ids);
	}
out:
	j->status = r;
	free(cur);
	mbedtls_x509_crt_free(&b);
	ca_client_resp_free(&resp);
}

static void
job_work(uv_work_t *req)
{
	struct job *j = req->data;

	if (j->kind == JOB_SIGN)
		sign_work(j);
	else
		bundle_work(j);
}

static void schedule(struct idagent *a);

static void
job_free(struct job *j)
{
	cred_unref(j->cred);
	trust_bundle_unref(j->bundle);
	free(j->id);
	free(j->key_path);
	free(j->crt_path);
	free(j->lock_path);
	free(j);
}

static void
maybe_closed(struct idagent *a)
{
	if (a->closing && a->open_handles == 0 && a->inflight == 0 && !a->bundle_busy &&
	    a->done != NULL) {
		void (*done)(void *) = a->done;

		a->done = NULL;
		done(a->done_arg);
	}
}

/*
 * The CA signs with another intermediate now (a rotation): certificates from the previous one are
 * renewed soon, the node's at once (before the old root may leave the bundle), the workloads'
 * spread over a minute (or a tenth of their life) so that a fleet does not renew all at once.
 */
static void
follow_signer(struct idagent *a, const char *ca_issuer)
{
	time_t now = now_s();

	if (ca_issuer[0] == '\0')
		return;
	for (struct ident *e = a->idents; e != NULL; e = e->next) {
		uint32_t r;
		time_t window = 60, at;

		if (e->issuer[0] == '\0' || strcmp(e->issuer, ca_issuer) == 0 || e->busy)
			continue;
		if (e->kind == IK_NODE) {
			at = now;
		} else {
			if (e->not_after > e->not_before) {
				time_t life = e->not_after - life_start(e->not_before, e->not_after);

				if (life / 10 < window)
					window = life / 10 > 0 ? life / 10 : 1;
			}
			rng_fill(rng_ctx(), (unsigned char *)&r, sizeof(r));
			at = now + (time_t)(r % (uint32_t)window);
		}
		if (e->renew_at > at) {
			log_info("identity %s: the CA signs with %s now, not %s: renewing", e->id,
			    ca_issuer, e->issuer);
			e->renew_at = at;
		}
	}
}

static void
job_done(uv_work_t *req, int status)
{
	struct job *j = req->data;
	struct idagent *a = j->a;
	struct ident *e = j->e;
	time_t now = now_s();

	(void)status;
	if (j->kind == JOB_BUNDLE) {
		a->bundle_busy = false;
		if (j->status != 0)
			log_warn("identity: trust bundle refresh: %s", j->why);
		else if (j->bundle_changed)
			log_info("identity: trust bundle %s updated from the CA",
			    a->conf->mesh.trust_bundle);
		if (j->status == 0)
			follow_signer(a, j->ca_issuer);
		job_free(j);
		maybe_closed(a);
		return;
	}
	a->inflight--;
	e->busy = false;
	if (j->status == 0) {
		char t[32];

		e->failures = 0;
		e->last_error[0] = '\0';
		e->not_before = j->nb;
		e->not_after = j->na;
		e->renew_at = renew_time(j->nb, j->na);
		snprintf(e->issuer, sizeof(e->issuer), "%s", j->issuer);
		metrics_counter_add(a->renewals, 1);
		{
			char t2[32];

			log_info("identity %s: certificate from the CA, valid until %s, renewal due at %s",
			    e->id, iso_time(j->na, t, sizeof(t)), iso_time(e->renew_at, t2, sizeof(t2)));
		}
		if (e->kind == IK_NODE)
			load_cred(a);
		notify(e, 0, NULL);
		follow_signer(a, j->ca_issuer);
	} else {
		uint64_t back = 1ull << (e->failures < 6 ? e->failures : 6);
		uint64_t cap = BACKOFF_MAX_S;

		if (e->not_after > e->not_before) {
			time_t start = life_start(e->not_before, e->not_after);

			if (e->not_after > start && (uint64_t)(e->not_after - start) / 8 < cap)
				cap = (uint64_t)(e->not_after - start) / 8;
		}
		if (cap < 1)
			cap = 1;
		if (back > cap)
			back = cap;
		e->failures++;
		e->retry_at = now + (time_t)back;
		snprintf(e->last_error, sizeof(e->last_error), "%s", j->why);
		metrics_counter_add(a->failures, 1);
		if (e->not_after > now) {
			char t[32];

			log_warn("identity %s: renewal failed (%u in a row; the current certificate "
			    "stays in use until %s; next try in %" PRIu64 " s): %s", e->id, e->failures,
			    iso_time(e->not_after, t, sizeof(t)), back, j->why);
		} else {
			log_error("identity %s: cannot obtain a certificate (next try in %" PRIu64
			    " s): %s", e->id, back, j->why);
		}
		notify(e, j->status, j->why);
	}
	job_free(j);
	if (a->closing)
		maybe_closed(a);
	else
		schedule(a);
}

static int
start_job(struct idagent *a, struct ident *e, enum job_kind kind)
{
	struct job *j = calloc(1, sizeof(*j));
	const struct amesh_conf *c = a->conf;

	if (j == NULL)
		return AMESH_ERR_NOMEM;
	j->a = a;
	j->kind = kind;
	j->e = e;
	j->req.data = j;
	j->cred = a->cred;
	a->cred->refs++;
	j->bundle = identity_store_bundle(a->cfg.ids);
	if (j->bundle == NULL) {
		job_free(j);
		return AMESH_ERR_NOTFOUND;
	}
	if (kind == JOB_SIGN) {
		j->id = xstrdup(e->id);
		if (e->kind == IK_NODE) {
			char *dir = path_dirname(c->identity.node_key);

			j->key_path = xstrdup(c->identity.node_key);
			j->crt_path = xstrdup(c->identity.node_cert);
			j->lock_path = xasprintf("%s/.node.lock", dir);
			free(dir);
			j->ttl_s = 0; /* the CA's node_ttl */
		} else {
			char *nsdir = xasprintf("%s/%s", c->identity.cert_dir, e->ns);

			if (mkdir(nsdir, 0755) != 0 && errno != EEXIST)
				log_warn("identity: cannot create %s: %s", nsdir, strerror(errno));
			j->key_path = xasprintf("%s/%s.key", nsdir, e->sa);
			j->crt_path = xasprintf("%s/%s.crt", nsdir, e->sa);
			j->lock_path = xasprintf("%s/.%s.lock", nsdir, e->sa);
			free(nsdir);
			j->ttl_s = c->identity.cert_ttl / 1000;
		}
		e->busy = true;
		a->inflight++;
	} else {
		a->bundle_busy = true;
	}
	uv_queue_work(a->cfg.loop, &j->req, job_work, job_done);
	return 0;
}

/* Starts what is due, up to IDAGENT_PARALLEL in flight; waiters first. */
static void
schedule(struct idagent *a)
{
	time_t now = now_s();

	if (a->closing)
		return;
	if (a->cred == NULL) {
		load_cred(a);
		if (a->cred == NULL) {
			for (struct ident *e = a->idents; e != NULL; e = e->next)
				notify(e, AMESH_ERR_NOTFOUND, a->node_why);
			return;
		}
	}
	for (int pass = 0; pass < 2; pass++)
		for (struct ident *e = a->idents; e != NULL && a->inflight < IDAGENT_PARALLEL;
		    e = e->next) {
			bool waited = e->waiters != NULL;

			if (e->busy || (pass == 0) != waited || now < e->retry_at)
				continue;
			if (!waited && now < e->renew_at)
				continue;
			if (start_job(a, e, JOB_SIGN) != 0)
				break;
		}
	if (!a->bundle_busy && now >= a->bundle_at) {
		a->bundle_at = now + IDAGENT_BUNDLE_REFRESH_S;
		start_job(a, NULL, JOB_BUNDLE);
	}
}

static void
ident_free(struct ident *e)
{
	free(e->ns);
	free(e->sa);
	free(e->id);
	free(e);
}

/* Drops identities the role no longer needs. */
static void
prune(struct idagent *a)
{
	struct ident **pp = &a->idents;

	while (*pp != NULL) {
		struct ident *e = *pp;

		if (e->kind == IK_WORKLOAD && !e->busy && e->waiters == NULL &&
		    a->cfg.in_use != NULL && !a->cfg.in_use(a->cfg.arg, e->ns, e->sa)) {
			log_info("identity %s: no longer used here; not renewed any more", e->id);
			*pp = e->next;
			a->n--;
			ident_free(e);
			continue;
		}
		pp = &e->next;
	}
}

static void
on_tick(uv_timer_t *t)
{
	struct idagent *a = t->data;

	prune(a);
	schedule(a);
}

int
idagent_prepare(const struct amesh_conf *conf, char *why, size_t whylen)
{
	char *failed = NULL;
	int r = path_mkdir_parents(conf->identity.cert_dir, 0755, &failed);

	if (r != 0) {
		snprintf(why, whylen, "cannot create %s: %s", failed ? failed :
		    conf->identity.cert_dir, amesh_strerror(r));
		free(failed);
		return r;
	}
	free(failed);
	if (mkdir(conf->identity.cert_dir, 0755) != 0 && errno != EEXIST) {
		r = -errno;
		snprintf(why, whylen, "cannot create %s: %s", conf->identity.cert_dir,
		    strerror(errno));
		return r;
	}
	return 0;
}

int
idagent_new(const struct idagent_cfg *cfg, struct idagent **out, char *why, size_t whylen)
{
	struct idagent *a;
	char id[SPIFFE_ID_MAX];

	*out = NULL;
	if (cfg->conf->mesh.node == NULL) {
		snprintf(why, whylen, "[identity] ca_address needs [mesh] node (this node's name in "
		    "the registry)");
		return AMESH_ERR_INVALID;
	}
	if (spiffe_format_node(id, sizeof(id), cfg->conf->mesh.trust_domain,
	    cfg->conf->mesh.node) != 0) {
		snprintf(why, whylen, "[mesh] node %s cannot be a node identity", cfg->conf->mesh.node);
		return AMESH_ERR_INVALID;
	}
	if (cfg->conf->identity.ca_address.n > CA_CLIENT_MAX_ADDRS) {
		snprintf(why, whylen, "[identity] ca_address: at most %d addresses",
		    CA_CLIENT_MAX_ADDRS);
		return AMESH_ERR_INVALID;
	}
	for (size_t i = 0; i < cfg->conf->identity.ca_address.n; i++) {
		char host[256], port[8];

		if (ca_client_split_addr(cfg->conf->identity.ca_address.v[i], host, sizeof(host),
		    port, sizeof(port)) != 0) {
			snprintf(why, whylen, "[identity] ca_address: %s is not HOST[:PORT]",
			    cfg->conf->identity.ca_address.v[i]);
			return AMESH_ERR_INVALID;
		}
	}
	{
		int r = idagent_prepare(cfg->conf, why, whylen);

		if (r != 0)
			return r;
	}
	a = xcalloc(1, sizeof(*a));
	a->cfg = *cfg;
	a->conf = cfg->conf;
	a->node = xcalloc(1, sizeof(*a->node));
	a->node->kind = IK_NODE;
	a->node->id = xstrdup(id);
	a->node->ns = xstrdup("");
	a->node->sa = xstrdup("");
	a->idents = a->node;
	a->n = 1;
	load_cred(a);
	if (a->cred == NULL)
		log_error("identity: %s", a->node_why);
	if (cfg->metrics != NULL) {
		a->renewals = metrics_counter(cfg->metrics, "amesh_identity_renewals_total",
		    "Certificates obtained from the CA (first issue and renewals).");
		a->failures = metrics_counter(cfg->metrics, "amesh_identity_renewal_failures_total",
		    "Requests to the CA for a certificate that failed.");
	}
	uv_timer_init(cfg->loop, &a->tick);
	a->tick.data = a;
	a->open_handles = 1;
	uv_timer_start(&a->tick, on_tick, TICK_MS, TICK_MS);
	*out = a;
	return 0;
}

int
idagent_want(struct idagent *a, const char *ns, const char *sa, idagent_done_fn done,
    void *arg, char *why, size_t whylen)
{
	struct identity *cur;
	struct ident *e = find(a, ns, sa);
	time_t now = now_s();
	char id[SPIFFE_ID_MAX];

	if (a->closing) {
		snprintf(why, whylen, "shutting down");
		return AMESH_ERR_INVALID;
	}
	if (e == NULL) {
		if (a->n >= IDAGENT_MAX) {
			snprintf(why, whylen, "this role holds %d identities already", IDAGENT_MAX);
			return AMESH_ERR_RANGE;
		}
		if (spiffe_format(id, sizeof(id), a->conf->mesh.trust_domain, ns, sa) != 0) {
			snprintf(why, whylen, "identity %s/%s too long", ns, sa);
			return AMESH_ERR_TOOLONG;
		}
		e = xcalloc(1, sizeof(*e));
		e->kind = IK_WORKLOAD;
		e->ns = xstrdup(ns);
		e->sa = xstrdup(sa);
		e->id = xstrdup(id);
		/* A certificate left by an earlier run is used and renewed in its turn. */
		cur = identity_store_get_sa(a->cfg.ids, ns, sa);
		if (cur != NULL) {
			e->not_before = cur->not_before;
			e->not_after = cur->not_after;
			e->renew_at = renew_time(cur->not_before, cur->not_after);
			if (mbedtls_x509_dn_gets(e->issuer, sizeof(e->issuer), &cur->chain.issuer) < 0)
				e->issuer[0] = '\0';
			identity_unref(cur);
		}
		e->next = a->idents;
		a->idents = e;
		a->n++;
	}
	cur = identity_store_get_sa(a->cfg.ids, ns, sa);
	if (cur != NULL && cur->not_after > now) {
		identity_unref(cur);
		return 0;
	}
	identity_unref(cur);
	if (a->cred == NULL) {
		load_cred(a);
		if (a->cred == NULL) {
			snprintf(why, whylen, "%s", a->node_why);
			return AMESH_ERR_NOTFOUND;
		}
	}
	if (done != NULL) {
		struct waiter *w = xcalloc(1, sizeof(*w));

		w->done = done;
		w->arg = arg;
		w->next = e->waiters;
		e->waiters = w;
	}
	e->retry_at = 0; /* someone waits: now, whatever the backoff said */
	schedule(a);
	return 1;
}

struct wait_one {
	bool done;
	int status;
	char *why;
	size_t whylen;
};

static void
wait_one_done(void *arg, int status, const char *why)
{
	struct wait_one *w = arg;

	w->done = true;
	w->status = status;
	snprintf(w->why, w->whylen, "%s", why != NULL ? why : amesh_strerror(status));
}

/*
 * At startup the CA may not have this role's entry yet: its registry (a copy on another host, an
 * etcd watch, a directory it reloads after a settle delay) can lag the one this role loaded. So a
 * failure is asked again once a second for up to IDAGENT_WAIT_MS before the role gives up.
 */
#define IDAGENT_WAIT_MS 15000
#define IDAGENT_WAIT_RETRY_MS 1000

struct pause {
	uv_timer_t t;
	bool fired, closed;
};

static void
pause_fired(uv_timer_t *t)
{
	((struct pause *)t->data)->fired = true;
}

static void
pause_closed(uv_handle_t *h)
{
	((struct pause *)h->data)->closed = true;
}

/* Runs loop for ms. */
static void
pause_ms(uv_loop_t *loop, uint64_t ms)
{
	struct pause p = { .fired = false, .closed = false };

	uv_timer_init(loop, &p.t);
	p.t.data = &p;
	uv_timer_start(&p.t, pause_fired, ms, 0);
	while (!p.fired && uv_run(loop, UV_RUN_ONCE) != 0)
		;
	uv_close((uv_handle_t *)&p.t, pause_closed);
	while (!p.closed && uv_run(loop, UV_RUN_ONCE) != 0)
		;
}

int
idagent_wait(struct idagent *a, uv_loop_t *loop, const char *ns, const char *sa, char *why,
    size_t whylen)
{
	uint64_t deadline;
	bool said = false;

	uv_update_time(loop);
	deadline = uv_now(loop) + IDAGENT_WAIT_MS;
	for (;;) {
		struct wait_one w = { false, 0, why, whylen };
		int r = idagent_want(a, ns, sa, wait_one_done, &w, why, whylen);

		if (r != 1)
			return r;
		if (!said)
			log_info("identity %s/%s: waiting for its certificate from the CA", ns, sa);
		said = true;
		/* The agent's tick keeps the loop alive until the request ends, one way or the
		 * other. */
		while (!w.done && uv_run(loop, UV_RUN_ONCE) != 0)
			;
		if (!w.done) {
			idagent_cancel(a, &w);
			snprintf(why, whylen, "the loop ended first");
			return AMESH_ERR_INTERNAL;
		}
		uv_update_time(loop);
		if (w.status == 0 || uv_now(loop) + IDAGENT_WAIT_RETRY_MS > deadline)
			return w.status;
		pause_ms(loop, IDAGENT_WAIT_RETRY_MS); /* (the agent logged the failure) */
	}
}

void
idagent_kick(struct idagent *a)
{
	if (a == NULL || a->closing)
		return;
	if (a->cred == NULL)
		load_cred(a);
	a->bundle_at = 0;
	schedule(a);
}

void
idagent_cancel(struct idagent *a, void *arg)
{
	for (struct ident *e = a->idents; e != NULL; e = e->next)
		for (struct waiter **pp = &e->waiters; *pp != NULL;) {
			struct waiter *w = *pp;

			if (w->arg == arg) {
				*pp = w->next;
				free(w);
			} else {
				pp = &w->next;
			}
		}
}

bool
idagent_joined(struct idagent *a, char *why, size_t whylen)
{
	if (a->cred != NULL && a->cred->not_after > now_s())
		return true;
	snprintf(why, whylen, "%s", a->node_why[0] ? a->node_why : "node certificate expired");
	return false;
}

static void
json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s != '\0'; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", (unsigned char)*s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

void
idagent_dump(struct idagent *a, FILE *f)
{
	char t1[32], t2[32];
	bool first = true;

	fprintf(f, "{\"ca_address\": [");
	for (size_t i = 0; i < a->conf->identity.ca_address.n; i++) {
		fprintf(f, "%s", i ? ", " : "");
		json_str(f, a->conf->identity.ca_address.v[i]);
	}
	fprintf(f, "], \"joined\": %s, \"trust_bundle\": [", a->cred != NULL ? "true" : "false");
	{
		struct trust_bundle *b = identity_store_bundle(a->cfg.ids);
		char fp[CERT_FINGERPRINT_LEN + 1];
		bool f1 = true;

		for (const mbedtls_x509_crt *c = b != NULL ? &b->crt : NULL; c != NULL &&
		    c->raw.len > 0; c = c->next)
			if (cert_fingerprint(c, fp, sizeof(fp)) == 0) {
				fprintf(f, "%s\"%s\"", f1 ? "" : ", ", fp);
				f1 = false;
			}
		trust_bundle_unref(b);
	}
	fprintf(f, "], \"identities\": [");
	for (struct ident *e = a->idents; e != NULL; e = e->next) {
		fprintf(f, "%s{\"id\": ", first ? "" : ", ");
		first = false;
		json_str(f, e->id);
		fprintf(f, ", \"kind\": \"%s\", \"not_after\": \"%s\", \"renew_at\": \"%s\", "
		    "\"failures\": %u, \"last_error\": ", e->kind == IK_NODE ? "node" : "workload",
		    e->not_after ? iso_time(e->not_after, t1, sizeof(t1)) : "",
		    e->renew_at ? iso_time(e->renew_at, t2, sizeof(t2)) : "", e->failures);
		json_str(f, e->last_error);
		fprintf(f, ", \"issuer\": ");
		json_str(f, e->issuer);
		fprintf(f, "}");
	}
	fprintf(f, "]}");
}

static void
on_tick_closed(uv_handle_t *h)
{
	struct idagent *a = h->data;

	a->open_handles--;
	maybe_closed(a);
}

void
idagent_close(struct idagent *a, void (*done)(void *arg), void *arg)
{
	a->done = done;
	a->done_arg = arg;
	if (!a->closing) {
		a->closing = true;
		for (struct ident *e = a->idents; e != NULL; e = e->next)
			notify(e, AMESH_ERR_INVALID, "shutting down");
		uv_close((uv_handle_t *)&a->tick, on_tick_closed);
	}
	maybe_closed(a);
}

void
idagent_free(struct idagent *a)
{
	if (a == NULL)
		return;
	while (a->idents != NULL) {
		struct ident *e = a->idents;

		a->idents = e->next;
		ident_free(e);
	}
	cred_unref(a->cred);
	free(a);
}

/* amesh_identity_expiry_timestamp_seconds, one series per identity in the store. */
struct identity_gauges {
	size_t n;
	struct { char *id; struct metric_gauge *g; } *v;
};

void
identity_gauges_refresh(struct identity_gauges **state, struct metrics *m,
    struct identity_store *ids)
{
	struct identity_gauges *g = *state;
	struct identity **list = NULL;
	size_t n;

	if (m == NULL || ids == NULL)
		return;
	if (g == NULL)
		g = *state = xcalloc(1, sizeof(*g));
	n = identity_store_list(ids, &list);
	/* Series of identities gone from the store go too. */
	for (size_t i = 0; i < g->n;) {
		bool found = false;

		for (size_t k = 0; k < n && !found; k++)
			found = strcmp(list[k]->spiffe_id, g->v[i].id) == 0;
		if (found) {
			i++;
			continue;
		}
		metrics_gauge_remove(m, g->v[i].g);
		free(g->v[i].id);
		g->v[i] = g->v[--g->n];
	}
	for (size_t k = 0; k < n; k++) {
		struct metric_gauge *gg = metrics_gauge_l(m, "amesh_identity_expiry_timestamp_seconds",
		    "notAfter of each identity's certificate in force (Unix seconds).", "identity",
		    list[k]->spiffe_id);
		bool known = false;

		for (size_t i = 0; i < g->n && !known; i++)
			known = g->v[i].g == gg;
		if (gg != NULL && !known) {
			g->v = xrealloc(g->v, g->n + 1, sizeof(*g->v));
			g->v[g->n].id = xstrdup(list[k]->spiffe_id);
			g->v[g->n].g = gg;
			g->n++;
		}
		metrics_gauge_set(gg, (int64_t)list[k]->not_after);
		identity_unref(list[k]);
	}
	free(list);
}

void
identity_gauges_free(struct identity_gauges *g)
{
	if (g == NULL)
		return;
	for (size_t i = 0; i < g->n; i++)
		free(g->v[i].id);
	free(g->v);
	free(g);
}
