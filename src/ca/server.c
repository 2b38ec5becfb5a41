/* SPDX-License-Identifier: Apache-2.0 */
/* The CA service (see server.h and proto.h). */
#include "config.h"

#include <inttypes.h>
#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ca/proto.h"
#include "ca/req.h"
#include "ca/server.h"
#include "ca/token.h"
#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/util.h"
#include "telemetry/httpmsg.h"
#include "telemetry/metrics.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/rng.h"
#include "tls/tls.h"

/* The reasons a request is refused, as counted (amesh_ca_refused_total{reason}). */
enum refusal {
	REF_BAD_REQUEST, REF_BAD_CSR, REF_NO_CERT, REF_BAD_TOKEN, REF_TOKEN_USED, REF_TOKEN_EXPIRED,
	REF_UNKNOWN_NODE, REF_REVOKED, REF_NOT_PLACED, REF_BUSY, REF_INTERNAL, REF_N,
};
static const char *const refusal_names[REF_N] = {
	"bad_request", "bad_csr", "no_node_certificate", "bad_token", "token_used",
	"token_expired", "unknown_node", "revoked_node", "not_on_node", "busy", "internal",
};

/* What the service presents and trusts; connections hold a reference, so a reload replaces it
 * without touching them. */
struct ca_tls {
	int refs;
	mbedtls_x509_crt chain; /* our leaf, the intermediate, the root(s) */
	mbedtls_x509_crt roots;
	mbedtls_pk_context key;
	mbedtls_ssl_config conf;
	time_t not_after;
};

struct cconn {
	struct cconn *prev, *next;
	struct ca_server *s;
	struct tls_conn *t;
	struct ca_tls *tls;
	uv_timer_t timer;
	bool timer_closed, tls_closed, answered;
	struct http_msg msg;
};

struct ca_server {
	struct ca_server_cfg cfg;
	char *dir;
	struct sockaddr_storage address;
	uv_tcp_t listener;
	uv_timer_t renew; /* makes the TLS certificate again at half its life */
	struct ca *ca;
	struct ca_tls *tls;
	struct cconn *conns;
	unsigned nconns;
	int open_handles;
	bool stopping;
	void (*done)(void *);
	void *done_arg;
	struct metric_counter *issued_workload, *issued_node, *refused[REF_N], *over_limit, *hs_fail;
	struct metric_gauge *ca_expiry;
};

static void
ca_tls_unref(struct ca_tls *t)
{
	if (t == NULL || --t->refs > 0)
		return;
	mbedtls_ssl_config_free(&t->conf);
	mbedtls_x509_crt_free(&t->chain);
	mbedtls_x509_crt_free(&t->roots);
	mbedtls_pk_free(&t->key);
	free(t);
}

/* A fresh key and certificate spiffe://TD/amesh/ca from ca, kept in memory only. */
static int
ca_tls_new(struct ca *ca, struct ca_tls **out, char *why, size_t whylen)
{
	struct ca_tls *t = calloc(1, sizeof(*t));
	char id[SPIFFE_ID_MAX], *pem = NULL;
	size_t pemlen = 0;
	time_t nb, na;
	int r;

	*out = NULL;
	if (t == NULL)
		return AMESH_ERR_NOMEM;
	t->refs = 1;
	mbedtls_x509_crt_init(&t->chain);
	mbedtls_x509_crt_init(&t->roots);
	mbedtls_pk_init(&t->key);
	mbedtls_ssl_config_init(&t->conf);
	r = mbedtls_pk_setup(&t->key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (r == 0)
		r = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(t->key), rng_fill,
		    rng_ctx());
	if (r != 0) {
		snprintf(why, whylen, "cannot make the service's key (mbedTLS -0x%04x)", -r);
		r = AMESH_ERR_INTERNAL;
		goto fail;
	}
	if ((r = spiffe_format_ca(id, sizeof(id), ca->trust_domain)) != 0) {
		snprintf(why, whylen, "trust domain too long");
		goto fail;
	}
	r = ca_sign(ca, &t->key, id, CA_LEAF_SERVER, CA_SERVER_CERT_TTL, time(NULL), &pem, &pemlen,
	    &nb, &na, NULL, why, whylen);
	if (r != 0)
		goto fail;
	t->not_after = na;
	r = mbedtls_x509_crt_parse(&t->chain, (const unsigned char *)pem, pemlen + 1);
	free(pem);
	/* The roots go along, so a node that knows only a root's fingerprint can check the chain. */
	for (const mbedtls_x509_crt *c = &ca->roots; r == 0 && c != NULL && c->raw.len > 0;
	    c = c->next) {
		r = mbedtls_x509_crt_parse_der(&t->chain, c->raw.p, c->raw.len);
		if (r == 0)
			r = mbedtls_x509_crt_parse_der(&t->roots, c->raw.p, c->raw.len);
	}
	if (r != 0) {
		snprintf(why, whylen, "cannot load the service's certificate (mbedTLS -0x%04x)", -r);
		r = AMESH_ERR_INTERNAL;
		goto fail;
	}
	r = tls_conf_init_ca(&t->conf, MBEDTLS_SSL_IS_SERVER, &t->chain, &t->key, &t->roots,
	    MBEDTLS_SSL_VERIFY_OPTIONAL);
	if (r != 0) {
		snprintf(why, whylen, "cannot set up TLS (mbedTLS -0x%04x)", -r);
		r = AMESH_ERR_INTERNAL;
		goto fail;
	}
	*out = t;
	return 0;
fail:
	ca_tls_unref(t);
	return r;
}

static void
maybe_done(struct ca_server *s)
{
	if (!s->stopping || s->open_handles > 0 || s->conns != NULL)
		return;
	if (s->done != NULL) {
		void (*done)(void *) = s->done;

		s->done = NULL;
		done(s->done_arg);
	}
}

static void
cconn_free_if_closed(struct cconn *c)
{
	struct ca_server *s = c->s;

	if (!c->timer_closed || !c->tls_closed)
		return;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	s->nconns--;
	http_msg_free(&c->msg);
	ca_tls_unref(c->tls);
	free(c);
	maybe_done(s);
}

static void
on_timer_closed(uv_handle_t *h)
{
	struct cconn *c = h->data;

	c->timer_closed = true;
	cconn_free_if_closed(c);
}

static void
cconn_close(struct cconn *c, bool graceful)
{
	if (!uv_is_closing((uv_handle_t *)&c->timer))
		uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	if (c->t != NULL) {
		struct tls_conn *t = c->t;

		c->t = NULL;
		if (graceful)
			tls_conn_close(t);
		else
			tls_conn_abort(t);
	}
}

static void
count_refusal(struct ca_server *s, enum refusal r)
{
	metrics_counter_add(s->refused[r], 1);
}

/* Writes a response and closes after it. */
static void
respond(struct cconn *c, int status, const char *type, const char *body, size_t len)
{
	char head[512];
	size_t n;

	if (c->t == NULL || c->answered)
		return;
	c->answered = true;
	n = http_format_head(head, sizeof(head), status, type, len, NULL, true);
	if (tls_conn_write(c->t, (const uint8_t *)head, n) != 0 ||
	    (len > 0 && tls_conn_write(c->t, (const uint8_t *)body, len) != 0)) {
		cconn_close(c, false);
		return;
	}
	cconn_close(c, true);
}

static void
refuse(struct cconn *c, int status, enum refusal why, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
refuse(struct cconn *c, int status, enum refusal why, const char *fmt, ...)
{
	char msg[768];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(msg) - 2)
		n = (int)sizeof(msg) - 2;
	log_warn("ca: %s %s: refused (%d): %s", c->t ? tls_conn_peer_addr(c->t) : "-",
	    c->t && tls_conn_peer_id(c->t)[0] ? tls_conn_peer_id(c->t) : "(no certificate)",
	    status, msg);
	count_refusal(c->s, why);
	msg[n++] = '\n';
	respond(c, status, NULL, msg, (size_t)n);
}

/* Whether node is in the registry in force. */
static bool
node_known(struct registry *r, const char *node)
{
	return r != NULL && registry_find(r, REG_NODE, node) != NULL;
}

/* Whether the registry places a workload or a waypoint with identity ns/sa on node. */
static bool
identity_placed(struct registry *r, const char *node, const char *ns, const char *sa)
{
	if (r == NULL)
		return false;
	for (size_t i = 0; i < r->n[REG_WORKLOAD]; i++) {
		const struct reg_workload *w = REG_WORKLOADS(r)[i];

		if (w->node != NULL && strcmp(w->node, node) == 0 && strcmp(w->namespace, ns) == 0 &&
		    strcmp(w->service_account, sa) == 0)
			return true;
	}
	for (size_t i = 0; i < r->n[REG_WAYPOINT]; i++) {
		const struct reg_waypoint *w = REG_WAYPOINTS(r)[i];

		/* A replicated waypoint: each of its nodes may hold its identity. */
		if (reg_waypoint_on_node(w, node) && strcmp(w->namespace, ns) == 0 &&
		    strcmp(w->service_account, sa) == 0)
			return true;
	}
	return false;
}

/* Checks the CSR for id and signs it; answers either way. */
static void
sign_and_answer(struct cconn *c, const struct http_req *req, const char *id,
    enum ca_leaf_kind kind, uint64_t ttl, const char *node)
{
	struct ca_server *s = c->s;
	mbedtls_pk_context pub;
	char why[512], serial[48] = "", *pem = NULL;
	size_t pemlen = 0;
	time_t nb, na;
	int r;

	if ((r = ca_csr_check(req->body, req->body_len, id, &pub, why, sizeof(why))) != 0) {
		mbedtls_pk_free(&pub);
		/* INVALID: the request's fault; anything else is ours (out of memory). */
		if (r == AMESH_ERR_INVALID)
			refuse(c, 400, REF_BAD_CSR, "%s", why);
		else
			refuse(c, 500, REF_INTERNAL, "cannot check the CSR: %s", why);
		return;
	}
	r = ca_sign(s->ca, &pub, id, kind, ttl, time(NULL), &pem, &pemlen, &nb, &na, serial, why,
	    sizeof(why));
	mbedtls_pk_free(&pub);
	if (r != 0) {
		refuse(c, 500, REF_INTERNAL, "cannot sign: %s", why);
		return;
	}
	metrics_counter_add(kind == CA_LEAF_NODE ? s->issued_node : s->issued_workload, 1);
	{
		char until[32];

		log_info("ca: issued %s to node %s (%s), serial %s, until %s", id, node,
		    tls_conn_peer_addr(c->t), serial, iso_time(na, until, sizeof(until)));
	}
	respond(c, 200, CA_TYPE_CHAIN, pem, pemlen);
	free(pem);
}

static void
handle_join(struct cconn *c, const struct ca_req *cr)
{
	struct ca_server *s = c->s;
	const struct http_req *req = &cr->http;
	const char *auth = cr->token;
	enum token_state st;
	char node[128], id[SPIFFE_ID_MAX], why[512];
	struct registry *reg;
	time_t expires;
	bool known;

	if (auth == NULL) {
		refuse(c, 401, REF_BAD_TOKEN, "a join needs \"Authorization: Bearer TOKEN\" (amesh ca "
		    "token --node NAME makes one)");
		return;
	}
	if (token_peek(s->dir, auth, time(NULL), &st, node, sizeof(node), &expires, why,
	    sizeof(why)) != 0) {
		refuse(c, 500, REF_INTERNAL, "%s", why);
		return;
	}
	switch (st) {
	case TOKEN_OK:
		break;
	case TOKEN_USED:
		refuse(c, 401, REF_TOKEN_USED, "join token for node %s already used: make a new one "
		    "with amesh ca token --node %s", node, node);
		return;
	case TOKEN_EXPIRED: {
		char at[32];

		refuse(c, 401, REF_TOKEN_EXPIRED, "join token for node %s expired at %s", node,
		    iso_time(expires, at, sizeof(at)));
		return;
	}
	default:
		refuse(c, 401, REF_BAD_TOKEN, "join token %s", token_state_str(st));
		return;
	}
	reg = registry_holder_get(s->cfg.reg);
	known = node_known(reg, node);
	registry_unref(reg);
	if (!known) {
		refuse(c, 403, REF_UNKNOWN_NODE, "node %s (of this token) is not in the registry",
		    node);
		return;
	}
	if (node_revoked(s->dir, node)) {
		refuse(c, 403, REF_REVOKED, "node %s is revoked (amesh ca revoke-node --undo %s)",
		    node, node);
		return;
	}
	if (spiffe_format_node(id, sizeof(id), s->ca->trust_domain, node) != 0) {
		refuse(c, 400, REF_BAD_REQUEST, "node name %s cannot be an identity", node);
		return;
	}
	/* The CSR first, so a bad one does not burn the token. */
	{
		mbedtls_pk_context pub;
		int r = ca_csr_check(req->body, req->body_len, id, &pub, why, sizeof(why));

		mbedtls_pk_free(&pub);
		if (r != 0) {
			if (r == AMESH_ERR_INVALID)
				refuse(c, 400, REF_BAD_CSR, "%s", why);
			else
				refuse(c, 500, REF_INTERNAL, "cannot check the CSR: %s", why);
			return;
		}
	}
	if (token_consume(s->dir, auth, why, sizeof(why)) != 0) {
		refuse(c, 401, REF_TOKEN_USED, "%s", why);
		return;
	}
	log_info("ca: node %s joined from %s", node, tls_conn_peer_addr(c->t));
	sign_and_answer(c, req, id, CA_LEAF_NODE, s->cfg.node_ttl, node);
}

static void
handle_sign(struct cconn *c, const struct ca_req *cr)
{
	struct ca_server *s = c->s;
	const struct http_req *req = &cr->http;
	const char *peer = tls_conn_peer_id(c->t), *want = cr->identity;
	char td[SPIFFE_ID_MAX], node[SPIFFE_ID_MAX], ns[SPIFFE_ID_MAX], sa[SPIFFE_ID_MAX];
	struct registry *reg;
	bool known, placed;

	if (peer[0] == '\0' || spiffe_split_node(peer, td, sizeof(td), node, sizeof(node)) != 0) {
		refuse(c, 401, REF_NO_CERT, "signing needs a node certificate (amesh ca join)");
		return;
	}
	if (want == NULL) {
		refuse(c, 400, REF_BAD_REQUEST, "no %s header", CA_HDR_IDENTITY);
		return;
	}
	reg = registry_holder_get(s->cfg.reg);
	known = node_known(reg, node);
	if (!known) {
		registry_unref(reg);
		refuse(c, 403, REF_UNKNOWN_NODE, "node %s is not in the registry", node);
		return;
	}
	if (node_revoked(s->dir, node)) {
		registry_unref(reg);
		refuse(c, 403, REF_REVOKED, "node %s is revoked", node);
		return;
	}
	if (strcmp(want, peer) == 0) {
		registry_unref(reg);
		sign_and_answer(c, req, want, CA_LEAF_NODE, s->cfg.node_ttl, node);
		return;
	}
	if (spiffe_split(want, td, ns, sa) != 0 || strcmp(td, s->ca->trust_domain) != 0) {
		registry_unref(reg);
		refuse(c, 400, REF_BAD_REQUEST, "%s: %.200s is not a workload identity of trust "
		    "domain %s", CA_HDR_IDENTITY, want, s->ca->trust_domain);
		return;
	}
	placed = identity_placed(reg, node, ns, sa);
	registry_unref(reg);
	if (!placed) {
		refuse(c, 403, REF_NOT_PLACED, "node %s runs no workload or waypoint with identity "
		    "%.200s in the registry", node, want);
		return;
	}
	if (cr->ttl_status != 0) {
		refuse(c, cr->ttl_status, REF_BAD_REQUEST, "%s must be a number of seconds",
		    CA_HDR_TTL);
		return;
	}
	sign_and_answer(c, req, want, CA_LEAF_WORKLOAD, cr->ttl, node);
}

static void
handle_bundle(struct cconn *c)
{
	char *pem = NULL;
	size_t len = 0;

	if (ca_bundle_pem(c->s->ca, &pem, &len) != 0) {
		refuse(c, 500, REF_INTERNAL, "cannot write the bundle");
		return;
	}
	respond(c, 200, "application/x-pem-file", pem, len);
	free(pem);
}

/* Reads the done request and hands it to its route; answers either way. */
static void
dispatch(struct cconn *c)
{
	struct ca_req cr;
	char why[HTTP_MAX_HEAD + 64];
	int status;

	if ((status = ca_req_parse(&c->msg, c->s->cfg.max_ttl, &cr, why, sizeof(why))) != 0)
		refuse(c, status, REF_BAD_REQUEST, "%s", why);
	else if (cr.kind == CA_REQ_JOIN)
		handle_join(c, &cr);
	else if (cr.kind == CA_REQ_SIGN)
		handle_sign(c, &cr);
	else
		handle_bundle(c);
}

static void
on_handshake(struct tls_conn *t, int status)
{
	struct cconn *c = tls_conn_user(t);

	if (status != 0) {
		/* tls logged the reason; the connection closes on its own. */
		metrics_counter_add(c->s->hs_fail, 1);
		return;
	}
}

static void
on_read(struct tls_conn *t, const uint8_t *data, size_t len)
{
	struct cconn *c = tls_conn_user(t);

	if (c->answered)
		return;
	if (len == 0) {
		cconn_close(c, false);
		return;
	}
	http_msg_feed(&c->msg, (const char *)data, len);
	if (c->msg.err_status < 0)
		refuse(c, 500, REF_INTERNAL, "out of memory");
	else if (c->msg.err_status > 0)
		refuse(c, c->msg.err_status, REF_BAD_REQUEST, "%s", http_error_body(
		    c->msg.err_status));
	else if (c->msg.done)
		dispatch(c);
}

static void
on_tls_close(struct tls_conn *t)
{
	struct cconn *c = tls_conn_user(t);

	c->t = NULL;
	c->tls_closed = true;
	if (!uv_is_closing((uv_handle_t *)&c->timer))
		uv_close((uv_handle_t *)&c->timer, on_timer_closed);
	cconn_free_if_closed(c);
}

static const struct tls_conn_cb conn_cb = {
	.on_handshake = on_handshake,
	.on_read = on_read,
	.on_close = on_tls_close,
};

static void
on_deadline(uv_timer_t *tm)
{
	struct cconn *c = tm->data;

	log_debug("ca: %s: no whole request in time, closing", c->t ? tls_conn_peer_addr(c->t) :
	    "-");
	cconn_close(c, false);
}

static void
refuse_closed(uv_handle_t *h)
{
	free(h);
}

static void
on_connection(uv_stream_t *ls, int status)
{
	struct ca_server *s = ls->data;
	struct tls_conn_opts o = { 0 };
	struct cconn *c;
	int r;

	if (status < 0 || s->stopping)
		return;
	c = s->nconns < CA_SERVER_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
	if (c == NULL) {
		uv_tcp_t *tcp = malloc(sizeof(*tcp));

		metrics_counter_add(s->over_limit, 1);
		count_refusal(s, REF_BUSY);
		if (tcp == NULL || uv_tcp_init(s->cfg.loop, tcp) != 0) {
			free(tcp);
			return;
		}
		uv_accept(ls, (uv_stream_t *)tcp);
		uv_close((uv_handle_t *)tcp, refuse_closed);
		return;
	}
	c->s = s;
	c->tls = s->tls;
	s->tls->refs++;
	http_msg_init(&c->msg, true, CA_REQ_BODY_MAX);
	uv_timer_init(s->cfg.loop, &c->timer);
	c->timer.data = c;
	c->next = s->conns;
	if (s->conns != NULL)
		s->conns->prev = c;
	s->conns = c;
	s->nconns++;
	o.conf = &c->tls->conf;
	o.alpn = ""; /* amesh-ca/1, http/1.1 (curl) or none: HTTP/1.1 all the same */
	o.peer_optional = true;
	o.trust_domain = s->ca->trust_domain;
	o.handshake_timeout_ms = s->cfg.handshake_timeout_ms;
	r = tls_conn_accept(ls, &o, &conn_cb, c, &c->t);
	if (r != 0) {
		log_debug("ca: accept: %s", amesh_strerror(r));
		c->tls_closed = true;
		uv_close((uv_handle_t *)&c->timer, on_timer_closed);
		return;
	}
	uv_timer_start(&c->timer, on_deadline, s->cfg.handshake_timeout_ms + CA_SERVER_READ_MS, 0);
}

static void
renew_tls(uv_timer_t *tm)
{
	struct ca_server *s = tm->data;
	struct ca_tls *t;
	char why[512];

	if (ca_tls_new(s->ca, &t, why, sizeof(why)) != 0) {
		log_error("ca: cannot renew the service's certificate: %s (retrying in 1 min)", why);
		uv_timer_start(&s->renew, renew_tls, 60000, 0);
		return;
	}
	ca_tls_unref(s->tls);
	s->tls = t;
	uv_timer_start(&s->renew, renew_tls, CA_SERVER_CERT_TTL * 1000ull / 2, 0);
}

static void
set_ca_gauge(struct ca_server *s)
{
	metrics_gauge_set(s->ca_expiry, (int64_t)cert_not_after(&s->ca->crt));
}

int
ca_server_reload(struct ca_server *s, char *why, size_t whylen)
{
	struct ca *ca;
	struct ca_tls *t;
	int r;

	if ((r = ca_load(s->dir, &ca, why, whylen)) != 0)
		return r;
	if (s->ca != NULL && strcmp(ca->trust_domain, s->ca->trust_domain) != 0) {
		snprintf(why, whylen, "%s: trust domain %s, but the service runs %s (restart to "
		    "change it)", s->dir, ca->trust_domain, s->ca->trust_domain);
		ca_free(ca);
		return AMESH_ERR_INVALID;
	}
	if ((r = ca_tls_new(ca, &t, why, whylen)) != 0) {
		ca_free(ca);
		return r;
	}
	ca_free(s->ca);
	s->ca = ca;
	ca_tls_unref(s->tls);
	s->tls = t;
	set_ca_gauge(s);
	if (s->open_handles > 0 && !s->stopping)
		uv_timer_start(&s->renew, renew_tls, CA_SERVER_CERT_TTL * 1000ull / 2, 0);
	return 0;
}

static void
on_handle_closed(uv_handle_t *h)
{
	struct ca_server *s = h->data;

	s->open_handles--;
	maybe_done(s);
}

int
ca_server_start(const struct ca_server_cfg *cfg, struct ca_server **out, char *why,
    size_t whylen)
{
	struct ca_server *s = calloc(1, sizeof(*s));
	int r;

	*out = NULL;
	if (s == NULL)
		return AMESH_ERR_NOMEM;
	s->cfg = *cfg;
	s->dir = xstrdup(cfg->dir);
	s->cfg.dir = s->dir;
	if ((r = ca_server_reload(s, why, whylen)) != 0) {
		free(s->dir);
		free(s);
		return r;
	}
	if (cfg->metrics != NULL) {
		s->issued_workload = metrics_counter_l(cfg->metrics, "amesh_ca_issued_total",
		    "Certificates the CA issued, by kind.", "kind", "workload");
		s->issued_node = metrics_counter_l(cfg->metrics, "amesh_ca_issued_total",
		    "Certificates the CA issued, by kind.", "kind", "node");
		for (int i = 0; i < REF_N; i++)
			s->refused[i] = metrics_counter_l(cfg->metrics, "amesh_ca_refused_total",
			    "Requests the CA refused, by reason.", "reason", refusal_names[i]);
		s->over_limit = metrics_counter(cfg->metrics, "amesh_ca_connections_refused_total",
		    "Connections closed at once because CA_SERVER_MAX_CONNS were open.");
		s->hs_fail = metrics_counter(cfg->metrics, "amesh_ca_handshake_failures_total",
		    "TLS handshakes that failed (a bad or untrusted client certificate, a timeout).");
		s->ca_expiry = metrics_gauge(cfg->metrics, "amesh_ca_cert_expiry_timestamp_seconds",
		    "notAfter of the CA certificate the service signs with.");
		set_ca_gauge(s);
	}
	uv_tcp_init(cfg->loop, &s->listener);
	uv_timer_init(cfg->loop, &s->renew);
	s->listener.data = s;
	s->renew.data = s;
	s->open_handles = 2;
	r = uv_tcp_bind(&s->listener, (const struct sockaddr *)cfg->address, 0);
	if (r == 0)
		r = uv_listen((uv_stream_t *)&s->listener, 128, on_connection);
	if (r != 0) {
		char addr[64];

		sockaddr_str(cfg->address, addr, sizeof(addr));
		snprintf(why, whylen, "cannot listen on %s: %s", addr, amesh_strerror(r));
		*out = s; /* the caller stops and frees it after the loop ran the closes */
		s->stopping = true;
		uv_close((uv_handle_t *)&s->listener, on_handle_closed);
		uv_close((uv_handle_t *)&s->renew, on_handle_closed);
		return r;
	}
	uv_timer_start(&s->renew, renew_tls, CA_SERVER_CERT_TTL * 1000ull / 2, 0);
	*out = s;
	return 0;
}

int
ca_server_addr(const struct ca_server *s, struct sockaddr_storage *out)
{
	int len = sizeof(*out);

	return uv_tcp_getsockname(&s->listener, (struct sockaddr *)out, &len);
}

unsigned
ca_server_conns(const struct ca_server *s)
{
	return s->nconns;
}

char *
ca_server_dump(struct ca_server *s)
{
	char fp[CERT_FINGERPRINT_LEN + 1], subject[256], until[32], svc[32], *out, *roots;
	size_t cap = 4096, off = 0;

	mbedtls_x509_dn_gets(subject, sizeof(subject), &s->ca->crt.subject);
	roots = xstrdup("");
	for (const mbedtls_x509_crt *c = &s->ca->roots; c != NULL && c->raw.len > 0; c = c->next) {
		char *n;

		cert_fingerprint(c, fp, sizeof(fp));
		n = xasprintf("%s%s\"%s\"", roots, roots[0] ? ", " : "", fp);
		free(roots);
		roots = n;
	}
	out = xmalloc(cap);
	off = (size_t)snprintf(out, cap, "{\"ca\": {\"dir\": \"%s\", \"trust_domain\": \"%s\", "
	    "\"subject\": \"%s\", \"intermediate\": %s, \"not_after\": \"%s\", \"roots\": [%s], "
	    "\"service_cert_not_after\": \"%s\", \"connections\": %u}}\n", s->dir,
	    s->ca->trust_domain, subject, s->ca->is_root ? "false" : "true",
	    iso_time(cert_not_after(&s->ca->crt), until, sizeof(until)), roots,
	    iso_time(s->tls->not_after, svc, sizeof(svc)), s->nconns);
	free(roots);
	if (off >= cap)
		out[cap - 1] = '\0';
	return out;
}

void
ca_server_stop(struct ca_server *s, void (*done)(void *arg), void *arg)
{
	if (s == NULL)
		return;
	s->done = done;
	s->done_arg = arg;
	if (!s->stopping) {
		s->stopping = true;
		uv_close((uv_handle_t *)&s->listener, on_handle_closed);
		uv_close((uv_handle_t *)&s->renew, on_handle_closed);
	}
	for (struct cconn *c = s->conns; c != NULL; c = c->next)
		cconn_close(c, false);
	maybe_done(s);
}

void
ca_server_free(struct ca_server *s)
{
	if (s == NULL)
		return;
	ca_free(s->ca);
	ca_tls_unref(s->tls);
	free(s->dir);
	free(s);
}
