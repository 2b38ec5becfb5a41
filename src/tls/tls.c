/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TLS over a libuv TCP handle. mbedTLS never touches the socket: its BIO callbacks read ciphertext
 * from a bounded input buffer that uv_read fills, and append ciphertext to an output chunk that is
 * handed to uv_write. Peer identity is checked inside the handshake (a per-connection verify
 * callback), so a wrong peer gets a bad_certificate alert, not a silent close after the fact.
 *
 * Record offload: with it on, mbedTLS does the handshake only. Its key block (export callback)
 * and the sequence numbers it reached set up tls/record.h, which then seals and opens every
 * record, alerts and close_notify included. mbedTLS reads exactly one record at a time from
 * bio_recv, so whatever followed the Finished message is still in our input buffer.
 *
 * Writes are coalesced per loop turn: tls_conn_write stages plaintext until a full record's worth
 * (RECORD_MAX_PLAIN) is there, so many small writes (HTTP/2 frames of all streams) share a record;
 * ciphertext gathers in a chain of chunks, and the staged remainder is sealed and the chain handed
 * to one uv_write (writev) at the end of the loop turn: in the check phase right after the I/O
 * callbacks that wrote, or in the prepare phase before the loop would block in epoll for writes
 * made by timers and other callbacks. No write waits for a later turn. An owner that makes its
 * own bytes of a turn at its end (the HBONE client: tls_conn_want_turn) gets on_turn first.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <mbedtls/error.h>
#include <mbedtls/platform_util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/parse.h"
#include "core/worker.h"
#include "tls/identity.h"
#include "tls/record.h"
#include "tls/tls.h"

/* Ciphertext read from the socket but not yet pulled by mbedTLS: two full records fit. */
#define TLS_IN_CAP (2u * (16384 + 2048))
/* Plaintext handed to the owner per call. */
#define TLS_PLAIN_CHUNK 16384
/* How long a graceful close may wait for the peer to take what is queued. */
#define TLS_CLOSE_TIMEOUT_MS 10000
/* After our FIN, how long we read and drop what the peer still sends, waiting for its FIN. */
#define TLS_LINGER_MS 2000
/* Empty records and warning alerts in a row that are tolerated (mbedTLS allows 3 empty ones). */
#define TLS_MAX_EMPTY 32
/* The largest key block mbedTLS exports for our suites: two 32-byte keys, two 12-byte IVs. */
#define TLS_KEY_BLOCK_MAX (2 * 32 + 2 * 12)

enum tls_state { TLS_CONNECTING, TLS_HANDSHAKE, TLS_OPEN, TLS_CLOSING, TLS_CLOSED };

/* Chunks gathered for one uv_write at most (a bound on what one turn gathers: then they go). */
#define TLS_OUT_CHUNKS 8

/* A chunk of ciphertext; the first of a chain carries the uv_write of the whole chain. */
struct tls_wreq {
	uv_write_t req;
	struct tls_conn *c;
	struct tls_wreq *next;
	size_t total;          /* first chunk: the bytes of the chain in flight */
	size_t len, cap;
	uint8_t data[];
};

struct tls_conn {
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_connect_t connect_req;
	uv_shutdown_t shutdown_req;
	mbedtls_ssl_context ssl;
	bool ssl_ready;     /* ssl is set up (see ssl_start) and not yet freed */
	const mbedtls_ssl_config *conf; /* what ssl_start sets it up with */
	enum tls_state state;
	bool is_server;
	struct identity *id;
	const struct tls_conn_cb *cb;
	void *user;
	char *trust_domain;
	char **expect;
	const char *alpn;   /* required ALPN protocol (a literal or the owner's string) */
	bool peer_optional; /* server: a client without a certificate is let through */

	/* Record offload (see the top of this file). The key block is kept from the export
	 * callback to the end of the handshake only, then wiped. */
	bool offload;        /* records are sealed and opened by tx and rx, not mbedTLS */
	const char *suite;   /* mbedTLS's name of the suite (a static string), once open */
	bool have_kb;
	uint8_t kb[TLS_KEY_BLOCK_MAX];
	size_t kb_maclen, kb_keylen, kb_ivlen;
	struct record_dir tx, rx;
	unsigned empty_run;  /* empty records and warning alerts in a row */

	uint8_t *in;           /* TLS_IN_CAP bytes while there is input to keep (see in_get) */
	size_t in_len, in_off;
	struct tls_wreq *out, *out_tail; /* ciphertext being gathered for the next uv_write */
	size_t out_len;        /* its bytes */
	unsigned out_n;        /* its chunks */
	uint8_t *pt;           /* plaintext staged for the next record (RECORD_MAX_PLAIN) */
	size_t pt_len;
	uv_check_t turn_check; /* the end-of-turn flush (see the top of this file) */
	uv_prepare_t turn_prepare;
	bool turn_armed;
	bool want_turn;        /* on_turn owed at the end of this turn */
	size_t queued;         /* bytes handed to uv_write and not yet written */
	bool above_high_water; /* queued + gathered + staged reached TLS_WRITE_HIGH_WATER: on_drain owed */

	bool reading;       /* uv_read_start is active */
	bool owner_paused;  /* the owner asked us to stop reading */
	bool in_process;    /* guards process() against re-entry from callbacks */
	bool eof;           /* the socket said EOF */
	bool notified_eof;  /* on_read(len 0) was delivered */
	int open_handles;
	char verify_why[160];
	char peer_id[SPIFFE_ID_MAX];
	char peer_addr[INET6_ADDRSTRLEN + 8];
};

/*
 * Write chunks are recycled instead of freed: a 64 KiB malloc/free per flush makes glibc trim and
 * regrow the heap, so every page of ciphertext is a fresh page fault. A few spares per thread
 * (one loop per thread) bound what is kept. A chunk holds four full records.
 */
#define TLS_CHUNK (4u * (RECORD_MAX_PLAIN + 64))
#define TLS_SPARE_CHUNKS 8
static _Thread_local struct tls_wreq *spare_chunk[TLS_SPARE_CHUNKS];
static _Thread_local unsigned n_spare_chunks;

/* Plaintext staging buffers: held only from a write to the end of that turn, then recycled. */
#define TLS_SPARE_PLAIN 8
static _Thread_local uint8_t *spare_plain[TLS_SPARE_PLAIN];
static _Thread_local unsigned n_spare_plain;

/*
 * Input buffers: taken when the socket is readable (on_alloc), given back when what was read has
 * all been processed (end of process()). A connection keeps one only while it holds a partial
 * record or records its owner is not taking now, so an accepted connection that sends nothing,
 * and an idle one, hold none; the plaintext handed to on_read is valid during the call only, as
 * with mbedTLS's records (a stack buffer).
 */
#define TLS_SPARE_IN 8
static _Thread_local uint8_t *spare_in[TLS_SPARE_IN];
static _Thread_local unsigned n_spare_in;

static _Thread_local bool spares_hooked;

/* A worker thread's spares go with it (core/worker.h). */
static void
spares_free(void)
{
	while (n_spare_chunks > 0)
		free(spare_chunk[--n_spare_chunks]);
	while (n_spare_plain > 0)
		free(spare_plain[--n_spare_plain]);
	while (n_spare_in > 0)
		free(spare_in[--n_spare_in]);
}

static void
spares_hook(void)
{
	if (!spares_hooked) {
		spares_hooked = true;
		worker_at_thread_exit(spares_free);
	}
}

static uint8_t *
plain_get(void)
{
	return n_spare_plain > 0 ? spare_plain[--n_spare_plain] : malloc(RECORD_MAX_PLAIN);
}

static void
plain_put(uint8_t *p)
{
	if (p != NULL && n_spare_plain < TLS_SPARE_PLAIN) {
		spares_hook();
		spare_plain[n_spare_plain++] = p;
	} else
		free(p);
}

static uint8_t *
in_get(void)
{
	return n_spare_in > 0 ? spare_in[--n_spare_in] : malloc(TLS_IN_CAP);
}

static void
in_put(uint8_t *p)
{
	if (p != NULL && n_spare_in < TLS_SPARE_IN) {
		spares_hook();
		spare_in[n_spare_in++] = p;
	} else
		free(p);
}

static struct tls_wreq *
chunk_get(size_t len)
{
	struct tls_wreq *w;

	if (len <= TLS_CHUNK && n_spare_chunks > 0) {
		w = spare_chunk[--n_spare_chunks];
	} else {
		size_t cap = len > TLS_CHUNK ? len : TLS_CHUNK;

		w = malloc(sizeof(*w) + cap);
		if (w == NULL)
			return NULL;
		w->cap = cap;
	}
	w->len = 0;
	w->next = NULL;
	return w;
}

/* Recycles or frees a chain of chunks. */
static void
chunk_put(struct tls_wreq *w)
{
	while (w != NULL) {
		struct tls_wreq *next = w->next;

		if (w->cap == TLS_CHUNK && n_spare_chunks < TLS_SPARE_CHUNKS) {
			spares_hook();
			spare_chunk[n_spare_chunks++] = w;
		} else
			free(w);
		w = next;
	}
}

static void process(struct tls_conn *c);
/* For connections that fail before the owner gets them: no callbacks at all. */
static const struct tls_conn_cb quiet_cb;
static void fail_conn(struct tls_conn *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static const char *
mbed_err(int r, char *buf, size_t len)
{
	mbedtls_strerror(r, buf, len);
	return buf;
}

static void
on_handle_closed(uv_handle_t *h)
{
	struct tls_conn *c = h->data;

	if (--c->open_handles > 0)
		return;
	if (c->cb->on_close != NULL)
		c->cb->on_close(c);
	if (c->ssl_ready)
		mbedtls_ssl_free(&c->ssl);
	record_dir_free(&c->tx);
	record_dir_free(&c->rx);
	mbedtls_platform_zeroize(c->kb, sizeof(c->kb));
	chunk_put(c->out);
	plain_put(c->pt);
	in_put(c->in);
	identity_unref(c->id);
	free(c->trust_domain);
	if (c->expect != NULL) {
		for (char **e = c->expect; *e != NULL; e++)
			free(*e);
		free(c->expect);
	}
	free(c);
}

static void
close_handles(struct tls_conn *c, bool reset)
{
	if (c->state == TLS_CLOSED)
		return;
	c->state = TLS_CLOSED;
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->timer, on_handle_closed);
	uv_close((uv_handle_t *)&c->turn_check, on_handle_closed);
	uv_close((uv_handle_t *)&c->turn_prepare, on_handle_closed);
	if (reset && uv_tcp_close_reset(&c->tcp, on_handle_closed) == 0)
		return;
	uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void
on_write(uv_write_t *req, int status)
{
	struct tls_wreq *w = (struct tls_wreq *)req;
	struct tls_conn *c = w->c;

	c->queued -= w->total;
	chunk_put(w);
	if (status < 0 && c->state != TLS_CLOSED) {
		fail_conn(c, status, "write failed: %s", amesh_strerror(status));
		return;
	}
	/* All of it counts, what this turn gathered too: tls_conn_writable turned the owner away
	 * on the sum, which a completion can bring down before the gathered bytes are flushed. */
	if (c->above_high_water && tls_conn_queued(c) < TLS_WRITE_HIGH_WATER / 2 &&
	    c->state != TLS_CLOSED) {
		c->above_high_water = false;
		if (c->cb->on_drain != NULL)
			c->cb->on_drain(c);
	}
}

/* Hands the gathered ciphertext to one uv_write. */
static int
flush(struct tls_conn *c)
{
	struct tls_wreq *w = c->out, *x;
	uv_buf_t bufs[TLS_OUT_CHUNKS];
	unsigned n = 0, i = 0;
	int r;

	if (w == NULL || c->out_len == 0 || c->state == TLS_CLOSED)
		return 0;
	for (x = w; x != NULL; x = x->next)
		bufs[n++] = uv_buf_init((char *)x->data, (unsigned int)x->len);
	w->c = c;
	w->total = c->out_len;
	c->out = c->out_tail = NULL;
	c->out_len = 0;
	c->out_n = 0;
	/*
	 * Most turns' records fit in the socket at once: written here they need no write request,
	 * whose completion costs an epoll_ctl (libuv 1.44 re-arms the watcher after each one) and a
	 * callback next turn. Not while on_drain is owed (on_write owes it); on an error, uv_write
	 * reports it as before. What the socket does not take goes to uv_write.
	 */
	if (!c->above_high_water && (r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n)) > 0) {
		size_t done = (size_t)r;

		w->total -= done;
		while (i < n && done >= bufs[i].len)
			done -= bufs[i++].len;
		if (i == n) {
			chunk_put(w);
			return 0;
		}
		bufs[i].base += done;
		bufs[i].len -= done;
	}
	r = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs + i, n - i, on_write);
	if (r < 0) {
		chunk_put(w);
		return r;
	}
	c->queued += w->total;
	if (c->queued >= TLS_WRITE_HIGH_WATER)
		c->above_high_water = true;
	return 0;
}

/* The chunk being gathered, with room for need more bytes (a new one is chained; a full chain
 * is flushed). NULL when out of memory or the socket is gone. */
static struct tls_wreq *
out_room(struct tls_conn *c, size_t need)
{
	struct tls_wreq *w = c->out_tail;

	if (w != NULL && w->cap - w->len >= need)
		return w;
	if (c->state == TLS_CLOSED || (c->out_n >= TLS_OUT_CHUNKS && flush(c) != 0))
		return NULL;
	w = chunk_get(need);
	if (w == NULL)
		return NULL;
	if (c->out_tail != NULL)
		c->out_tail->next = w;
	else
		c->out = w;
	c->out_tail = w;
	c->out_n++;
	return w;
}

/* mbedTLS BIO: append ciphertext to the chunk being gathered. Never blocks. */
static int
bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	struct tls_conn *c = ctx;
	struct tls_wreq *w = out_room(c, len);

	if (w == NULL)
		return MBEDTLS_ERR_SSL_ALLOC_FAILED;
	memcpy(w->data + w->len, buf, len);
	w->len += len;
	c->out_len += len;
	return (int)len;
}

/* Offload: seals one record of data then data2 (len + len2 <= RECORD_MAX_PLAIN) onto the chunk
 * being gathered. */
static int
seal_out2(struct tls_conn *c, uint8_t type, const uint8_t *data, size_t len,
    const uint8_t *data2, size_t len2)
{
	struct tls_wreq *w = out_room(c, RECORD_MAX_OVERHEAD + len + len2);
	int n;

	if (w == NULL)
		return AMESH_ERR_NOMEM;
	n = record_seal2(&c->tx, type, data, len, data2, len2, w->data + w->len, w->cap - w->len);
	if (n < 0)
		return n;
	w->len += (size_t)n;
	c->out_len += (size_t)n;
	return 0;
}

static int
seal_out(struct tls_conn *c, uint8_t type, const uint8_t *data, size_t len)
{
	return seal_out2(c, type, data, len, NULL, 0);
}

static void turn_end(struct tls_conn *c);

static void
on_turn_check(uv_check_t *h)
{
	turn_end(h->data);
}

static void
on_turn_prepare(uv_prepare_t *h)
{
	turn_end(h->data);
}

/* Flush at the end of this loop turn (see the top of this file). */
static void
arm_turn(struct tls_conn *c)
{
	if (c->turn_armed || c->state == TLS_CLOSED)
		return;
	c->turn_armed = true;
	uv_check_start(&c->turn_check, on_turn_check);
	uv_prepare_start(&c->turn_prepare, on_turn_prepare);
}

void
tls_conn_want_turn(struct tls_conn *c)
{
	if (c->state == TLS_CLOSED)
		return;
	c->want_turn = true;
	arm_turn(c);
}

/*
 * Seals data then data2 (len + len2 <= RECORD_MAX_PLAIN) as one record of application data;
 * without offload (mbedTLS's records) data2 must be empty. 0, or a negative code after which the
 * connection is closing or failed.
 */
static int
seal_app2(struct tls_conn *c, const uint8_t *data, size_t len, const uint8_t *data2,
    size_t len2)
{
	char buf[160];
	int r;

	if (c->offload) {
		if (c->tx.seq == UINT64_MAX) {
			/* The last sequence number is kept for close_notify (RFC 5246 6.1). */
			log_warn("tls %s: record sequence numbers used up, closing", c->peer_addr);
			tls_conn_close(c);
			return AMESH_ERR_RANGE;
		}
		r = seal_out2(c, RECORD_APPLICATION_DATA, data, len, data2, len2);
		if (r < 0) {
			fail_conn(c, r, "cannot seal a record: %s", amesh_strerror(r));
			return AMESH_ERR_INVALID;
		}
		return 0;
	}
	while (len > 0) {
		r = mbedtls_ssl_write(&c->ssl, data, len);
		if (r < 0) {
			fail_conn(c, AMESH_ERR_INVALID, "%s", mbed_err(r, buf, sizeof(buf)));
			return AMESH_ERR_INVALID;
		}
		data += r;
		len -= (size_t)r;
	}
	return 0;
}

static int
seal_app(struct tls_conn *c, const uint8_t *data, size_t len)
{
	return seal_app2(c, data, len, NULL, 0);
}

/* Seals the staged plaintext (taken first: sealing may close, which seals again). */
static int
seal_staged(struct tls_conn *c)
{
	size_t n = c->pt_len;

	if (n == 0 || c->state != TLS_OPEN)
		return 0;
	c->pt_len = 0;
	return seal_app(c, c->pt, n);
}

static void
turn_end(struct tls_conn *c)
{
	/* Still armed while the owner writes: its bytes join this turn's. */
	if (c->want_turn) {
		c->want_turn = false;
		if (c->state != TLS_CLOSED && c->cb->on_turn != NULL)
			c->cb->on_turn(c);
	}
	c->turn_armed = false;
	uv_check_stop(&c->turn_check);
	uv_prepare_stop(&c->turn_prepare);
	if (c->want_turn) /* asked again from on_turn: the next phase */
		arm_turn(c);
	if (c->state == TLS_CLOSED || seal_staged(c) != 0)
		return;
	plain_put(c->pt); /* an idle connection holds no staging buffer */
	c->pt = NULL;
	if (flush(c) != 0)
		fail_conn(c, UV_EIO, "cannot write");
}

/* Offload: queues an alert (level 1 warning, 2 fatal). Nothing when it cannot be sealed. */
static void
send_alert(struct tls_conn *c, uint8_t level, uint8_t desc)
{
	uint8_t a[2] = { level, desc };

	(void)seal_out(c, RECORD_ALERT, a, sizeof(a));
}

/* mbedTLS BIO: take ciphertext from the input buffer. */
static int
bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	struct tls_conn *c = ctx;
	size_t avail = c->in_len - c->in_off;

	if (avail == 0)
		return c->eof ? 0 : MBEDTLS_ERR_SSL_WANT_READ;
	if (len > avail)
		len = avail;
	memcpy(buf, c->in + c->in_off, len);
	c->in_off += len;
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	return (int)len;
}

/*
 * libuv asks for a buffer only once the socket is readable, so the input buffer is taken here,
 * when the peer's bytes arrive: a connection that never sends any costs no more than struct
 * tls_conn. Out of memory, libuv reports UV_ENOBUFS to on_read_cb.
 */
static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct tls_conn *c = h->data;

	(void)suggested;
	if (c->in == NULL && (c->in = in_get()) == NULL) {
		*buf = uv_buf_init(NULL, 0);
		return;
	}
	if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	*buf = uv_buf_init((char *)c->in + c->in_len, (unsigned int)(TLS_IN_CAP - c->in_len));
}

static void on_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

/* Reads while the owner wants data and the input buffer has room: that bounds memory per connection. */
static void
update_reading(struct tls_conn *c)
{
	bool want = c->state != TLS_CLOSED && c->state != TLS_CONNECTING &&
	    c->state != TLS_CLOSING && !c->eof &&
	    c->in_len < TLS_IN_CAP && !(c->owner_paused && c->state == TLS_OPEN);

	if (want == c->reading)
		return;
	if (want) {
		if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read_cb) == 0)
			c->reading = true;
	} else {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
}

static void
on_read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct tls_conn *c = s->data;

	if (n == UV_EOF) {
		c->eof = true;
	} else if (n == UV_ENOBUFS) {
		fail_conn(c, AMESH_ERR_NOMEM, "out of memory for the input buffer");
		return;
	} else if (n < 0) {
		fail_conn(c, (int)n, "read failed: %s", amesh_strerror((int)n));
		return;
	} else {
		c->in_len += (size_t)n;
	}
	process(c);
}

static void
fail_conn(struct tls_conn *c, int status, const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	enum tls_state was = c->state;

	if (c->state == TLS_CLOSED)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (was == TLS_CONNECTING || was == TLS_HANDSHAKE)
		log_warn("tls %s: handshake failed: %s", c->peer_addr, msg);
	else
		log_debug("tls %s: %s", c->peer_addr, msg);
	/* Flush what we have (an alert), then reset: a failed peer gets no graceful close. */
	flush(c);
	close_handles(c, was == TLS_OPEN);
	if (was == TLS_CONNECTING || was == TLS_HANDSHAKE)
		c->cb->on_handshake(c, status < 0 ? status : AMESH_ERR_INVALID);
}

static void on_timeout(uv_timer_t *t);

static void
on_linger_timeout(uv_timer_t *t)
{
	close_handles(t->data, true);
}

static void
linger_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static _Thread_local char sink[16384]; /* read to be dropped; one per worker thread */

	(void)h;
	(void)suggested;
	*buf = uv_buf_init(sink, sizeof(sink));
}

static void
linger_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct tls_conn *c = s->data;

	(void)buf;
	if (nread < 0) /* the peer's FIN (or its reset): nothing of ours is left to lose */
		close_handles(c, false);
}

/*
 * Our FIN is out. Closing now would reset the connection if the peer has sent more since (an
 * HTTP/2 stream that crossed our GOAWAY), and a reset can make the peer's stack drop what we
 * sent last, unread: the GOAWAY that tells it to open that stream again elsewhere. So, as a
 * web server's lingering close does, read and drop until the peer's FIN, for at most
 * TLS_LINGER_MS.
 */
static void
on_shutdown(uv_shutdown_t *req, int status)
{
	struct tls_conn *c = req->data;

	if (status < 0 || c->state == TLS_CLOSED ||
	    uv_read_start((uv_stream_t *)&c->tcp, linger_alloc, linger_read) != 0) {
		close_handles(c, false);
		return;
	}
	c->reading = true;
	uv_timer_start(&c->timer, on_linger_timeout, TLS_LINGER_MS, 0);
}

/* Sends what is queued (close_notify or an alert last), then FIN, then closes; bounded in time. */
static void
shut(struct tls_conn *c)
{
	c->state = TLS_CLOSING;
	/* A peer that does not read would hold the shutdown (and us) forever. */
	uv_timer_start(&c->timer, on_timeout, TLS_CLOSE_TIMEOUT_MS, 0);
	flush(c);
	if (c->reading) {
		uv_read_stop((uv_stream_t *)&c->tcp);
		c->reading = false;
	}
	c->shutdown_req.data = c;
	if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		close_handles(c, false);
}

/*
 * Offload: the peer broke the record protocol. A fatal alert goes out after what is queued and
 * the connection ends with a FIN (a reset could drop the alert); the owner gets on_close.
 */
static void fail_alert(struct tls_conn *c, enum record_alert alert, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void
fail_alert(struct tls_conn *c, enum record_alert alert, const char *fmt, ...)
{
	char msg[200];
	va_list ap;

	if (c->state != TLS_OPEN)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_warn("tls %s: %s: fatal alert %d sent, connection closed", c->peer_addr, msg, alert);
	send_alert(c, 2, (uint8_t)alert);
	shut(c);
}

static void
notify_eof(struct tls_conn *c)
{
	if (c->notified_eof)
		return;
	c->notified_eof = true;
	c->eof = true;
	c->cb->on_read(c, NULL, 0);
}

/* Per-connection verify callback: the chain is checked by mbedTLS; we check the leaf's SPIFFE ID. */
static int
verify_peer(void *ctx, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
	struct tls_conn *c = ctx;
	char id[SPIFFE_ID_MAX], td[SPIFFE_ID_MAX];
	int r;

	if (depth != 0)
		return 0;
	r = cert_spiffe_id(crt, id, sizeof(id));
	if (r != 0) {
		snprintf(c->verify_why, sizeof(c->verify_why), "peer certificate has no valid "
		    "SPIFFE ID (%s)", amesh_strerror(r));
		*flags |= MBEDTLS_X509_BADCERT_OTHER;
		return 0;
	}
	if (c->is_server && c->peer_optional) {
		/* The CA service: its clients are nodes (spiffe://TD/amesh/node/NAME). */
		char node[SPIFFE_ID_MAX];

		if (spiffe_split_node(id, td, sizeof(td), node, sizeof(node)) != 0 ||
		    strcmp(td, c->trust_domain) != 0) {
			snprintf(c->verify_why, sizeof(c->verify_why), "peer %.80s is not a node of "
			    "trust domain %.40s", id, c->trust_domain);
			*flags |= MBEDTLS_X509_BADCERT_OTHER;
			return 0;
		}
	} else if (c->is_server) {
		if (spiffe_split(id, td, NULL, NULL) != 0 || strcmp(td, c->trust_domain) != 0) {
			snprintf(c->verify_why, sizeof(c->verify_why), "peer %.80s is not in trust "
			    "domain %.40s", id, c->trust_domain);
			*flags |= MBEDTLS_X509_BADCERT_OTHER;
			return 0;
		}
	} else {
		char **e;

		for (e = c->expect; e != NULL && *e != NULL; e++)
			if (strcmp(*e, id) == 0)
				break;
		if (e == NULL || *e == NULL) {
			snprintf(c->verify_why, sizeof(c->verify_why), "peer is %.80s, expected "
			    "%.60s", id, c->expect && c->expect[0] ? c->expect[0] : "(none)");
			*flags |= MBEDTLS_X509_BADCERT_OTHER;
			return 0;
		}
	}
	memcpy(c->peer_id, id, strlen(id) + 1);
	return 0;
}

static bool record_offload = true;
/* The connection whose handshake runs now: the export callback is per configuration, and a
 * configuration is shared by many connections, but a handshake step runs on one thread at once. */
static _Thread_local struct tls_conn *exporting;

void
tls_set_record_offload(bool on)
{
	record_offload = on;
	if (on && record_available() && record_init() != 0)
		log_warn("tls: OpenSSL's record ciphers could not be fetched at start-up");
}

bool
tls_record_offload(void)
{
	return record_offload && record_available();
}

int
tls_export_keys(void *p, const unsigned char *ms, const unsigned char *kb, size_t maclen,
    size_t keylen, size_t ivlen, const unsigned char client_random[32],
    const unsigned char server_random[32], mbedtls_tls_prf_types prf)
{
	struct tls_conn *c = exporting;
	size_t n = 2 * (maclen + keylen + ivlen);

	if (c == NULL || n > sizeof(c->kb))
		return 0; /* not ours to take over (an unknown suite): mbedTLS keeps the records */
	memcpy(c->kb, kb, n);
	c->kb_maclen = maclen;
	c->kb_keylen = keylen;
	c->kb_ivlen = ivlen;
	c->have_kb = true;
	return 0;
}

static uint64_t
be64(const unsigned char *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/*
 * After a good handshake: hands the records to tls/record.h when offload is on and the suite is
 * one it does. Anything short of that leaves mbedTLS in charge, which still works: its state is
 * untouched until c->offload is set.
 */
static void
start_offload(struct tls_conn *c)
{
	struct record_secret tx, rx;
	int cipher = record_cipher_of_suite(c->ssl.session != NULL ? c->ssl.session->ciphersuite : 0);

	memset(&tx, 0, sizeof(tx));
	memset(&rx, 0, sizeof(rx));
	if (!c->have_kb || cipher < 0)
		goto out;
	/* mbedTLS reads one record at a time: it must hold nothing read beyond the Finished
	 * message (that stays in c->in for us), nor a record in progress. */
	if (c->ssl.in_left != 0 || mbedtls_ssl_check_pending(&c->ssl) ||
	    mbedtls_ssl_get_bytes_avail(&c->ssl) != 0) {
		log_warn("tls %s: mbedTLS holds unread input after the handshake; records stay "
		    "with mbedTLS", c->peer_addr);
		goto out;
	}
	if (record_secrets_from_key_block((enum record_cipher)cipher, c->is_server, c->kb,
	    c->kb_maclen, c->kb_keylen, c->kb_ivlen, &tx, &rx) != 0)
		goto out;
	/* The Finished messages were record 0 of the new keys: both are 1 here, read anyway. */
	tx.seq = be64(c->ssl.cur_out_ctr);
	rx.seq = be64(c->ssl.in_ctr);
	if (record_dir_init(&c->tx, &tx, true) != 0 || record_dir_init(&c->rx, &rx, false) != 0) {
		record_dir_free(&c->tx);
		record_dir_free(&c->rx);
		goto out;
	}
	c->offload = true;
out:
	mbedtls_platform_zeroize(&tx, sizeof(tx));
	mbedtls_platform_zeroize(&rx, sizeof(rx));
	mbedtls_platform_zeroize(c->kb, sizeof(c->kb));
	c->have_kb = false;
}

/*
 * Sets up mbedTLS for the handshake: its record buffers (two of 16 KiB) and handshake state are
 * allocated here, when the handshake starts (the client's connect, the server's first bytes from
 * the peer), not at the accept.
 */
static int
ssl_start(struct tls_conn *c)
{
	int r;

	mbedtls_ssl_init(&c->ssl);
	c->ssl_ready = true;
	r = mbedtls_ssl_setup(&c->ssl, c->conf);
	if (r != 0)
		return r;
	mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
	mbedtls_ssl_set_verify(&c->ssl, verify_peer, c);
	return 0;
}

static void
handshake_step(struct tls_conn *c)
{
	const char *alpn;
	char buf[160];
	int r;

	if (!c->ssl_ready) {
		if (c->is_server && c->in_len == 0) {
			/* Nothing from the client yet: nothing to set up for. */
			if (c->eof)
				fail_conn(c, UV_EOF, "peer closed the connection");
			return;
		}
		r = ssl_start(c);
		if (r != 0) {
			fail_conn(c, AMESH_ERR_NOMEM, "cannot set up the handshake: %s",
			    mbed_err(r, buf, sizeof(buf)));
			return;
		}
	}
	exporting = tls_record_offload() ? c : NULL;
	r = mbedtls_ssl_handshake(&c->ssl);
	exporting = NULL;

	if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE ||
	    r == MBEDTLS_ERR_SSL_CONN_EOF) {
		/* bio_recv returns 0 at EOF, which mbedTLS reports as CONN_EOF. */
		if (c->eof)
			fail_conn(c, UV_EOF, "peer closed the connection");
		return;
	}
	if (r != 0) {
		uint32_t vf = mbedtls_ssl_get_verify_result(&c->ssl);

		if (c->verify_why[0] != '\0')
			fail_conn(c, AMESH_ERR_INVALID, "%s", c->verify_why);
		else if (r == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && vf != 0 && vf != (uint32_t)-1) {
			char info[256];

			mbedtls_x509_crt_verify_info(info, sizeof(info), "", vf);
			info[strcspn(info, "\n")] = '\0';
			fail_conn(c, AMESH_ERR_INVALID, "peer certificate rejected: %s", info);
		} else {
			fail_conn(c, AMESH_ERR_INVALID, "%s", mbed_err(r, buf, sizeof(buf)));
		}
		return;
	}
	alpn = mbedtls_ssl_get_alpn_protocol(&c->ssl);
	if (c->alpn[0] != '\0' && (alpn == NULL || strcmp(alpn, c->alpn) != 0)) {
		mbedtls_ssl_send_alert_message(&c->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
		    MBEDTLS_SSL_ALERT_MSG_NO_APPLICATION_PROTOCOL);
		fail_conn(c, AMESH_ERR_INVALID, "peer did not negotiate ALPN %s", c->alpn);
		return;
	}
	/* VERIFY_OPTIONAL lets a bad chain through the handshake: a certificate that is presented
	 * must still verify; only its absence is allowed. */
	if (c->is_server && c->peer_optional && mbedtls_ssl_get_peer_cert(&c->ssl) != NULL &&
	    mbedtls_ssl_get_verify_result(&c->ssl) != 0) {
		uint32_t vf = mbedtls_ssl_get_verify_result(&c->ssl);
		char info[256] = "";

		if (c->verify_why[0] == '\0' && vf != (uint32_t)-1) {
			mbedtls_x509_crt_verify_info(info, sizeof(info), "", vf);
			info[strcspn(info, "\n")] = '\0';
		}
		mbedtls_ssl_send_alert_message(&c->ssl, MBEDTLS_SSL_ALERT_LEVEL_FATAL,
		    MBEDTLS_SSL_ALERT_MSG_BAD_CERT);
		fail_conn(c, AMESH_ERR_INVALID, "peer certificate rejected: %s",
		    c->verify_why[0] != '\0' ? c->verify_why : info);
		return;
	}
	if (c->peer_id[0] == '\0' && !(c->is_server && c->peer_optional)) {
		fail_conn(c, AMESH_ERR_INVALID, "peer presented no certificate");
		return;
	}
	start_offload(c);
	c->state = TLS_OPEN;
	uv_timer_stop(&c->timer);
	/* "up with ID, SUITE" ends with the suite: bench/hbone/run.sh reads it from there. */
	if (c->offload)
		log_debug("tls %s: up with %s, %s (records offloaded at out/in seq %llu/%llu)",
		    c->peer_addr, c->peer_id, mbedtls_ssl_get_ciphersuite(&c->ssl),
		    (unsigned long long)c->tx.seq, (unsigned long long)c->rx.seq);
	else
		log_debug("tls %s: up with %s, %s", c->peer_addr, c->peer_id,
		    mbedtls_ssl_get_ciphersuite(&c->ssl));
	c->suite = mbedtls_ssl_get_ciphersuite(&c->ssl);
	if (c->offload) {
		/* Nothing of mbedTLS's is used from here on: its record buffers (two of 16 KiB and
		 * more), transform and copy of the peer's certificate go now, not at the close. */
		mbedtls_ssl_free(&c->ssl);
		c->ssl_ready = false;
	}
	c->cb->on_handshake(c, 0);
}

/* Offload: opens the whole records in the input buffer, in place, and hands out their plaintext. */
static void
process_records(struct tls_conn *c)
{
	if (c->in == NULL) /* no input yet */
		return;
	while (c->state == TLS_OPEN && !c->owner_paused && !c->notified_eof) {
		uint8_t *rec = c->in + c->in_off, type;
		size_t off, plen;
		int n = record_frame(rec, c->in_len - c->in_off), r;

		if (n < 0) {
			fail_alert(c, (enum record_alert)-n, "bad record header (type %u, version "
			    "%u.%u, length %u)", rec[0], rec[1], rec[2], (unsigned)rec[3] << 8 | rec[4]);
			return;
		}
		if (n == 0) {
			if (c->eof) {
				notify_eof(c); /* EOF without close_notify: a close, as with mbedTLS */
			} else if (c->in_off > 0) {
				/* Make room for the rest of a partial record (update_reading reads
				 * only into a buffer that is not full). */
				memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
				c->in_len -= c->in_off;
				c->in_off = 0;
			}
			return;
		}
		r = record_open(&c->rx, rec, (size_t)n, &type, &off, &plen);
		if (r < 0) {
			fail_alert(c, (enum record_alert)-r, "%s", r == -RECORD_ALERT_BAD_RECORD_MAC ?
			    "a record does not authenticate" : r == -RECORD_ALERT_RECORD_OVERFLOW ?
			    "record plaintext over 16384 bytes" : "record sequence numbers used up");
			return;
		}
		/* The plaintext stays where it is until on_read returns. */
		c->in_off += (size_t)n;
		if (c->in_off == c->in_len)
			c->in_off = c->in_len = 0;
		switch (type) {
		case RECORD_APPLICATION_DATA:
			if (plen > 0) {
				c->empty_run = 0;
				c->cb->on_read(c, rec + off, plen);
			} else if (++c->empty_run > TLS_MAX_EMPTY) {
				fail_alert(c, RECORD_ALERT_UNEXPECTED_MESSAGE, "too many empty records");
			}
			break;
		case RECORD_ALERT:
			if (plen != 2) {
				fail_alert(c, RECORD_ALERT_DECODE_ERROR, "alert of %zu bytes", plen);
			} else if (rec[off + 1] == RECORD_ALERT_CLOSE_NOTIFY) {
				notify_eof(c);
			} else if (rec[off] != 1) {
				fail_conn(c, AMESH_ERR_INVALID, "peer sent fatal alert %u", rec[off + 1]);
			} else if (++c->empty_run > TLS_MAX_EMPTY) {
				fail_alert(c, RECORD_ALERT_UNEXPECTED_MESSAGE, "too many warning alerts");
			} else {
				log_debug("tls %s: peer sent warning alert %u", c->peer_addr,
				    rec[off + 1]);
			}
			break;
		case RECORD_HANDSHAKE:
			/* No renegotiation (the configurations disable it): the connection ends. */
			fail_alert(c, RECORD_ALERT_UNEXPECTED_MESSAGE, "peer tried to renegotiate");
			break;
		default:
			fail_alert(c, RECORD_ALERT_UNEXPECTED_MESSAGE, "record of type %u after the "
			    "handshake", type);
			break;
		}
	}
}

/* Drives the state machine with whatever ciphertext is buffered. */
static void
process(struct tls_conn *c)
{
	uint8_t plain[TLS_PLAIN_CHUNK];
	char buf[160];

	if (c->in_process)
		return;
	c->in_process = true;
	if (c->state == TLS_HANDSHAKE)
		handshake_step(c);
	if (c->offload)
		process_records(c);
	while (c->state == TLS_OPEN && !c->owner_paused && !c->offload) {
		int r = mbedtls_ssl_read(&c->ssl, plain, sizeof(plain));

		if (r > 0) {
			c->cb->on_read(c, plain, (size_t)r);
			continue;
		}
		if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE ||
		    r == MBEDTLS_ERR_SSL_CONN_EOF) {
			if (!c->eof)
				break;
			r = 0; /* EOF without close_notify: treat as a close */
		}
		if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
			if (!c->notified_eof) {
				c->notified_eof = true;
				c->eof = true;
				c->cb->on_read(c, NULL, 0);
			}
			break;
		}
		fail_conn(c, AMESH_ERR_INVALID, "%s", mbed_err(r, buf, sizeof(buf)));
		break;
	}
	if (c->state != TLS_CLOSED) {
		if (c->out_len > 0)
			arm_turn(c);
		update_reading(c);
	}
	if (c->in_len == 0) { /* all taken: the buffer goes back (see in_get) */
		in_put(c->in);
		c->in = NULL;
	}
	c->in_process = false;
}

static void
on_timeout(uv_timer_t *t)
{
	struct tls_conn *c = t->data;

	fail_conn(c, UV_ETIMEDOUT, "timed out");
}

static int
conn_new(uv_loop_t *loop, const struct tls_conn_opts *o, const struct tls_conn_cb *cb,
    void *user, bool server, struct tls_conn **out)
{
	struct tls_conn *c;

	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return AMESH_ERR_NOMEM;
	c->cb = cb;
	c->user = user;
	c->is_server = server;
	c->id = identity_ref(o->id);
	c->alpn = o->alpn != NULL ? o->alpn : "h2";
	c->peer_optional = o->peer_optional;
	snprintf(c->peer_addr, sizeof(c->peer_addr), "-");
	if (server && o->trust_domain != NULL)
		c->trust_domain = strdup(o->trust_domain);
	if (!server && o->expect != NULL) {
		size_t n = 0;

		while (o->expect[n] != NULL)
			n++;
		c->expect = calloc(n + 1, sizeof(char *));
		for (size_t i = 0; c->expect != NULL && i < n; i++)
			if ((c->expect[i] = strdup(o->expect[i])) == NULL)
				goto nomem;
		if (c->expect == NULL)
			goto nomem;
	}
	if ((server && c->trust_domain == NULL) || (!server && c->expect == NULL))
		goto nomem;
	if (o->conf != NULL)
		c->conf = o->conf;
	else if (c->id != NULL)
		c->conf = server ? &c->id->server : &c->id->client;
	else
		goto nomem;
	uv_tcp_init(loop, &c->tcp);
	uv_timer_init(loop, &c->timer);
	uv_check_init(loop, &c->turn_check);
	uv_prepare_init(loop, &c->turn_prepare);
	c->tcp.data = c;
	c->timer.data = c;
	c->turn_check.data = c;
	c->turn_prepare.data = c;
	c->open_handles = 4;
	uv_timer_start(&c->timer, on_timeout, o->handshake_timeout_ms ? o->handshake_timeout_ms :
	    10000, 0);
	*out = c;
	return 0;
nomem:
	identity_unref(c->id);
	free(c->trust_domain);
	if (c->expect != NULL) {
		for (char **e = c->expect; *e != NULL; e++)
			free(*e);
		free(c->expect);
	}
	free(c);
	return AMESH_ERR_NOMEM;
}

static void
set_peer_addr(struct tls_conn *c)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);

	if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0)
		sockaddr_str(&ss, c->peer_addr, sizeof(c->peer_addr));
}

static int accepted(struct tls_conn *c, struct tls_conn **out);

int
tls_conn_accept(uv_stream_t *server, const struct tls_conn_opts *o,
    const struct tls_conn_cb *cb, void *user, struct tls_conn **out)
{
	struct tls_conn *c;
	int r = conn_new(server->loop, o, cb, user, true, &c);

	*out = NULL;
	if (r != 0)
		return r;
	r = uv_accept(server, (uv_stream_t *)&c->tcp);
	if (r != 0) {
		c->cb = &quiet_cb;
		close_handles(c, false);
		return r;
	}
	return accepted(c, out);
}

int
tls_conn_adopt(uv_loop_t *loop, int fd, const struct tls_conn_opts *o,
    const struct tls_conn_cb *cb, void *user, struct tls_conn **out)
{
	struct tls_conn *c;
	int r = conn_new(loop, o, cb, user, true, &c);

	*out = NULL;
	if (r != 0) {
		close(fd);
		return r;
	}
	r = uv_tcp_open(&c->tcp, fd);
	if (r != 0) {
		close(fd);
		c->cb = &quiet_cb;
		close_handles(c, false);
		return r;
	}
	return accepted(c, out);
}

/* The tail of an accept: c holds the connection; its handshake starts. */
static int
accepted(struct tls_conn *c, struct tls_conn **out)
{
	uv_tcp_nodelay(&c->tcp, 1);
	/* Nothing else notices a client that vanished while its connection was idle. */
	uv_tcp_keepalive(&c->tcp, 1, 60);
	set_peer_addr(c);
	c->state = TLS_HANDSHAKE;
	*out = c;
	update_reading(c);
	return 0;
}

static void
on_connect(uv_connect_t *req, int status)
{
	struct tls_conn *c = req->data;

	if (c->state == TLS_CLOSED)
		return;
	if (status < 0) {
		fail_conn(c, status, "connect failed: %s", amesh_strerror(status));
		return;
	}
	uv_tcp_nodelay(&c->tcp, 1);
	c->state = TLS_HANDSHAKE;
	process(c);
}

int
tls_conn_connect(uv_loop_t *loop, const struct sockaddr *addr, const struct tls_conn_opts *o,
    const struct tls_conn_cb *cb, void *user, struct tls_conn **out)
{
	struct tls_conn *c;
	struct sockaddr_storage ss;
	int r = conn_new(loop, o, cb, user, false, &c);

	*out = NULL;
	if (r != 0) {
		if (o->use_fd && o->fd >= 0)
			close(o->fd); /* taken over, even on failure */
		return r;
	}
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, addr, addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in));
	sockaddr_str(&ss, c->peer_addr, sizeof(c->peer_addr));
	if (o->mark != 0 || o->use_fd) {
		/* Our own socket carries SO_MARK so the interception rules let it pass. */
		int fd = o->use_fd ? o->fd :
		    socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		unsigned int mark = o->mark;

		if (fd < 0 || (mark != 0 &&
		    setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) ||
		    (r = uv_tcp_open(&c->tcp, fd)) != 0) {
			r = r ? r : -errno;
			if (fd >= 0)
				close(fd);
			c->cb = &quiet_cb;
			close_handles(c, false);
			return r;
		}
	}
	c->connect_req.data = c;
	r = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connect);
	if (r != 0) {
		c->cb = &quiet_cb;
		close_handles(c, false);
		return r;
	}
	c->state = TLS_CONNECTING;
	*out = c;
	return 0;
}

int
tls_conn_write(struct tls_conn *c, const uint8_t *data, size_t len)
{
	if (c->state != TLS_OPEN)
		return AMESH_ERR_INVALID;
	while (len > 0) {
		size_t n;

		if (c->pt_len == 0 && len >= RECORD_MAX_PLAIN) {
			/* A whole record's worth: sealed from the caller's buffer, not staged. */
			if (seal_app(c, data, RECORD_MAX_PLAIN) != 0)
				return AMESH_ERR_INVALID;
			data += RECORD_MAX_PLAIN;
			len -= RECORD_MAX_PLAIN;
			continue;
		}
		if (c->offload && c->pt_len > 0 && c->pt_len + len >= RECORD_MAX_PLAIN) {
			/* What is staged (frame headers, small frames) and the rest of a record's worth
			 * from the caller's buffer: one record, the caller's bytes not copied. */
			size_t staged = c->pt_len;

			n = RECORD_MAX_PLAIN - staged;
			c->pt_len = 0;
			if (seal_app2(c, c->pt, staged, data, n) != 0)
				return AMESH_ERR_INVALID;
			data += n;
			len -= n;
			continue;
		}
		if (c->pt == NULL && (c->pt = plain_get()) == NULL) {
			fail_conn(c, AMESH_ERR_NOMEM, "out of memory");
			return AMESH_ERR_INVALID;
		}
		n = RECORD_MAX_PLAIN - c->pt_len;
		if (n > len)
			n = len;
		memcpy(c->pt + c->pt_len, data, n);
		c->pt_len += n;
		data += n;
		len -= n;
		if (c->pt_len == RECORD_MAX_PLAIN && seal_staged(c) != 0)
			return AMESH_ERR_INVALID;
	}
	if (tls_conn_queued(c) >= TLS_WRITE_HIGH_WATER)
		c->above_high_water = true; /* tls_conn_writable says no from here: on_drain owed */
	arm_turn(c);
	return 0;
}

bool
tls_conn_writable(const struct tls_conn *c)
{
	return c->queued + c->out_len + c->pt_len < TLS_WRITE_HIGH_WATER;
}

size_t
tls_conn_queued(const struct tls_conn *c)
{
	return c->queued + c->out_len + c->pt_len;
}

void
tls_conn_read_stop(struct tls_conn *c)
{
	c->owner_paused = true;
	if (!c->in_process)
		update_reading(c);
}

void
tls_conn_read_start(struct tls_conn *c)
{
	if (!c->owner_paused)
		return;
	c->owner_paused = false;
	/* Plaintext may already sit in mbedTLS or our buffer: deliver it before reading more. */
	process(c);
}

void
tls_conn_close(struct tls_conn *c)
{
	if (c->state == TLS_CLOSED || c->state == TLS_CLOSING)
		return;
	if (c->state != TLS_OPEN) {
		close_handles(c, false);
		return;
	}
	/* What is staged goes before close_notify. */
	if (seal_staged(c) != 0 || c->state != TLS_OPEN)
		return;
	if (c->offload)
		send_alert(c, 1, RECORD_ALERT_CLOSE_NOTIFY);
	else
		mbedtls_ssl_close_notify(&c->ssl);
	shut(c);
}

void
tls_conn_abort(struct tls_conn *c)
{
	close_handles(c, true);
}

void *
tls_conn_user(const struct tls_conn *c)
{
	return c->user;
}

void
tls_conn_set_user(struct tls_conn *c, void *user)
{
	c->user = user;
}

const char *
tls_conn_peer_id(const struct tls_conn *c)
{
	return c->peer_id;
}

const char *
tls_conn_peer_addr(const struct tls_conn *c)
{
	return c->peer_addr;
}

const char *
tls_conn_suite(const struct tls_conn *c)
{
	return c->state == TLS_OPEN && c->suite != NULL ? c->suite : "";
}
