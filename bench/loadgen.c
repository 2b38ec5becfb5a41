/* SPDX-License-Identifier: Apache-2.0 */
/*
 * loadgen: an open-loop HTTP/1.1 load generator (DESIGN.md section 8), and a tiny HTTP/1.1
 * server to point it at.
 *
 *   loadgen --url http://HOST:PORT/PATH --rate R --duration S [--connections C] [--warmup S]
 *           [--timeout S] [--max-queue N] [--spin US] [--close]
 *           [--slow MS]
 *   loadgen --serve ADDR:PORT [--size BYTES]
 *
 * Schedule. Request i (i = 0, 1, ...) is due at T0 + i/R seconds (1/R rounded to whole
 * nanoseconds): round(R * warmup) warmup requests, then round(R * duration) measured ones.
 * Request i goes to connection i mod C (round robin over C keep-alive connections, all opened
 * before T0). A periodic timerfd (CLOCK_MONOTONIC, the clock of uv_hrtime; timer slack set to
 * 1 ns) wakes the libuv loop at each due time, and due requests are also sent after every turn
 * of the loop's I/O, so the generator never waits for a response before sending the next
 * request due: open loop. Waking a sleeping thread takes tens of microseconds on a VM (about
 * 40 us here), which the "sendlag" line shows; --spin US sets the timer US microseconds early
 * and busy-waits the rest, which brings that lag to about a microsecond at the cost of up to US
 * of CPU per request (default 0: no spinning). HOST is resolved once, and the first address
 * getaddrinfo returns is used.
 *
 * Latency is measured from the request's SCHEDULED time to the last byte of its response, so
 * whatever delays a request - the server, the network, a busy connection, the generator
 * itself - counts against it (no coordinated omission). HTTP/1.1 is not pipelined here: when a
 * request falls due on a connection that is still waiting for an earlier response (or is
 * reconnecting), it waits in that connection's FIFO queue and is written when the response
 * arrives; its queueing time is part of its latency. The report counts such requests
 * ("queued") and shows the send lag (scheduled time to write) separately, which tells the
 * generator's own lateness and queueing apart from the server's time. A queue holds at most
 * --max-queue requests (default 100000); more are counted as "overflow" errors.
 *
 * Responses: status line, headers (at most 16 KiB in all) and a body of exactly Content-Length
 * bytes (none for 1xx, 204 and 304), read and discarded; chunked or read-until-close bodies
 * are refused as protocol errors. 2xx and 3xx are ok, other statuses count as "status" errors
 * (their latency is not recorded). "Connection: close" (or HTTP/1.0 without keep-alive) closes
 * the connection after the response; the next request on it reconnects, and the connect time
 * counts in its latency. --close asks for that on every request ("Connection: close" sent, and
 * the connection closed after each response whatever the server says): a new connection per
 * request, which is what exercises a proxy's accept path (bench/reload). --slow MS logs each
 * measured request at least MS late to stderr with the wall clock of its end ("slow UNIXTIME
 * LATENCY ms", at most SLOW_LOG_MAX lines). A request without an answer --timeout seconds
 * (default 5) after its
 * write is a "timeout" error and its connection is reopened; a connect that takes longer fails
 * the requests waiting for it as "connect" errors. When the last request has been
 * sent, the generator waits up to --timeout for the outstanding ones; what is still
 * outstanding then is "unfinished". Requests due during --warmup are sent but not counted.
 *
 * Output: the percentiles p50, p90, p99, p99.9 and max of latency in ms, the same for the
 * service time (write to response: the server's share, and what closed-loop tools such as wrk
 * report), the achieved rate (ok responses / max(duration, time from the first measured
 * request's due time to the last response)), the errors by kind, then one JSON line with the
 * same numbers. Percentiles come from a log-linear histogram with 256 sub-buckets per power of
 * two of nanoseconds (relative error under 0.4%); max is exact. Exit status 0 when the run had
 * no errors, 2 when it had some, 1 when it could not run (bad arguments, cannot connect at
 * start). SIGINT stops the run early and reports what was measured.
 *
 * --serve answers every request with "200 OK" and a body of --size bytes (default 1024),
 * keep-alive, pipelining allowed; it prints "listening PORT" (tests/lib.sh's start) and runs
 * until killed.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define HDR_MAX 16384
#define SCRATCH 65536
#define HIST_SUB_BITS 8
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)
#define NS 1000000000.0

/* ---- histogram ---------------------------------------------------------------------- */

struct hist {
	uint64_t count[HIST_BUCKETS];
	uint64_t n, max;
	double sum;
};

static unsigned
hist_index(uint64_t v)
{
	if (v < 2 * HIST_SUB)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - HIST_SUB_BITS;
	return (shift + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* The middle of bucket i. */
static uint64_t
hist_value(unsigned i)
{
	if (i < 2 * HIST_SUB)
		return i;
	unsigned shift = i / HIST_SUB - 1;
	uint64_t low = (uint64_t)(i % HIST_SUB + HIST_SUB) << shift;
	return low + ((uint64_t)1 << shift) / 2;
}

static void
hist_add(struct hist *h, uint64_t v)
{
	h->count[hist_index(v)]++;
	h->n++;
	h->sum += (double)v;
	if (v > h->max)
		h->max = v;
}

/* The smallest recorded value (to the bucket) with at least p% of the samples at or below. */
static double
hist_pct_ms(const struct hist *h, double p)
{
	if (h->n == 0)
		return 0;
	uint64_t rank = (uint64_t)(p / 100.0 * (double)h->n);
	if ((double)rank < p / 100.0 * (double)h->n)
		rank++;
	if (rank < 1)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->count[i];
		if (seen >= rank) {
			uint64_t v = hist_value(i);
			return (double)(v > h->max ? h->max : v) / 1e6;
		}
	}
	return (double)h->max / 1e6;
}

/* ---- common --------------------------------------------------------------------------- */

static void
die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void
die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

/* "5", "2.5", "2.5s", "500ms" -> nanoseconds; -1 when malformed or negative. */
static int64_t
parse_secs(const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno != 0 || end == s || v < 0 || v > 1e6)
		return -1;
	if (strcmp(end, "ms") == 0)
		v /= 1000.0;
	else if (*end != '\0' && strcmp(end, "s") != 0)
		return -1;
	return (int64_t)(v * NS);
}

/* Splits "HOST:PORT" or "[V6]:PORT" (port optional when defport is given). */
static void
split_hostport(const char *in, size_t len, char *host, size_t hostsz, char *port, size_t portsz,
	const char *defport)
{
	const char *hs, *he, *ps = NULL;
	const char *end = in + len;
	if (len > 0 && in[0] == '[') {
		hs = in + 1;
		he = memchr(hs, ']', len - 1);
		if (he == NULL)
			die("bad address '%.*s': no ']'", (int)len, in);
		if (he + 1 < end) {
			if (he[1] != ':')
				die("bad address '%.*s'", (int)len, in);
			ps = he + 2;
		}
	} else {
		hs = in;
		he = memchr(in, ':', len);
		if (he != NULL)
			ps = he + 1;
		else
			he = end;
	}
	if (he == hs || (size_t)(he - hs) >= hostsz)
		die("bad host in '%.*s'", (int)len, in);
	memcpy(host, hs, (size_t)(he - hs));
	host[he - hs] = '\0';
	if (ps == NULL) {
		if (defport == NULL)
			die("no port in '%.*s'", (int)len, in);
		snprintf(port, portsz, "%s", defport);
		return;
	}
	if (ps == end || (size_t)(end - ps) >= portsz || strspn(ps, "0123456789") < (size_t)(end - ps))
		die("bad port in '%.*s'", (int)len, in);
	memcpy(port, ps, (size_t)(end - ps));
	port[end - ps] = '\0';
	if (atoi(port) > 65535)
		die("bad port in '%.*s'", (int)len, in);
}

static void
resolve(const char *host, const char *port, struct sockaddr_storage *ss, bool passive)
{
	struct addrinfo hints = { 0 }, *res;
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = passive ? AI_PASSIVE | AI_NUMERICHOST : 0;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0)
		die("cannot resolve %s: %s", host, gai_strerror(rc));
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
}

/* Finds "\r\n\r\n" in buf[from..len); returns the index just past it, or 0. */
static size_t
find_head_end(const char *buf, size_t len, size_t from)
{
	for (size_t i = from; i + 4 <= len; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
			return i + 4;
	return 0;
}

/* Does the comma-separated header value v[0..n) contain token tok (case-insensitive)? */
static bool
has_token(const char *v, size_t n, const char *tok)
{
	size_t tl = strlen(tok);
	size_t i = 0;
	while (i < n) {
		while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
			i++;
		size_t s = i;
		while (i < n && v[i] != ',')
			i++;
		size_t e = i;
		while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
			e--;
		if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
			return true;
	}
	return false;
}

/* ---- the generator -------------------------------------------------------------------- */

enum err_kind { E_CONNECT, E_WRITE, E_READ, E_PROTOCOL, E_STATUS, E_TIMEOUT, E_UNFINISHED,
	E_OVERFLOW, E_KINDS };
static const char *const err_names[E_KINDS] = { "connect", "write", "read", "protocol", "status",
	"timeout", "unfinished", "overflow" };

struct req {
	uint64_t sched;
	bool measured;
};

enum cstate { C_CLOSED, C_CONNECTING, C_OPEN, C_CLOSING };

struct conn {
	uv_tcp_t tcp;
	uv_connect_t creq;
	uv_write_t wreq;
	uv_timer_t timer;
	unsigned id;
	enum cstate st;
	struct req *q;
	size_t qcap, qhead, qlen;
	struct req cur;
	uint64_t sent_at;
	bool busy;
	/* response parser */
	bool in_body;
	char hdr[HDR_MAX];
	size_t hlen;
	uint64_t body_left;
	int status;
	bool close_after;
};

static struct {
	uv_loop_t *loop;
	struct sockaddr_storage addr;
	char url[1024];
	char *request;
	size_t request_len;
	double rate;
	uint64_t warm_ns, dur_ns, timeout_ns, spin_ns, period_ns;
	unsigned nconn;
	size_t max_queue;
	struct conn *conns;
	unsigned connected;
	bool started, sched_done, finishing;
	bool close_each; /* --close: a new connection per request */
	uint64_t slow_ns;  /* --slow: log requests at least this slow (0: none) */
	unsigned slow_logged;
	uint64_t t0, next, total, n_warm, last_done;
	int tfd;
	uv_poll_t poll;
	uv_check_t check;
	uv_timer_t end_timer;
	uv_signal_t sigint;
	struct hist lat, lag, svc;
	uint64_t sent, ok, errors[E_KINDS], warm_errors, queued, reconnects;
	size_t max_qlen;
	uint64_t measured_total;
	int exit_code;
} G;

static void conn_open(struct conn *c);

/* --slow MS: one stderr line per measured request at least MS late, with the wall clock of its
 * end (to match with proxy logs); at most SLOW_LOG_MAX lines. */
#define SLOW_LOG_MAX 2000
static void
slow_log(uint64_t lat_ns)
{
	struct timespec ts;

	if (G.slow_logged++ >= SLOW_LOG_MAX)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	fprintf(stderr, "slow %lld.%03ld %.3f ms\n", (long long)ts.tv_sec, ts.tv_nsec / 1000000,
	    (double)lat_ns / 1e6);
}
static void conn_close(struct conn *c);
static void kick(struct conn *c);
static void check_done(void);

static uint64_t
sched_of(uint64_t i)
{
	return G.t0 + i * G.period_ns;
}

static void
count_error(const struct req *r, enum err_kind k)
{
	if (r->measured)
		G.errors[k]++;
	else
		G.warm_errors++;
}

/* Fails the request in flight (if any) and, when all is set, every queued one. */
static void
fail_requests(struct conn *c, enum err_kind cur_kind, bool all, enum err_kind q_kind)
{
	if (c->busy) {
		count_error(&c->cur, cur_kind);
		c->busy = false;
		uv_timer_stop(&c->timer);
	}
	if (all) {
		while (c->qlen > 0) {
			count_error(&c->q[c->qhead], q_kind);
			c->qhead = (c->qhead + 1) % c->qcap;
			c->qlen--;
		}
	}
}

static void
on_conn_closed(uv_handle_t *h)
{
	struct conn *c = h->data;
	c->st = C_CLOSED;
	if (!G.finishing && c->qlen > 0)
		conn_open(c);
	check_done();
}

static void
conn_close(struct conn *c)
{
	if (c->st == C_CLOSED || c->st == C_CLOSING)
		return;
	c->st = C_CLOSING;
	c->in_body = false;
	c->hlen = 0;
	uv_timer_stop(&c->timer);
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void startup_failed(const char *why);

/* No response --timeout after the write, or no connection --timeout after the connect. */
static void
on_timeout(uv_timer_t *t)
{
	struct conn *c = t->data;
	if (c->st == C_CONNECTING) {
		if (!G.started) {
			startup_failed("connection timed out");
			return;
		}
		fail_requests(c, E_CONNECT, true, E_CONNECT);
		conn_close(c);
		return;
	}
	if (!c->busy)
		return;
	fail_requests(c, E_TIMEOUT, false, E_TIMEOUT);
	conn_close(c);
}

static void
complete(struct conn *c)
{
	uint64_t now = uv_hrtime();
	uv_timer_stop(&c->timer);
	c->busy = false;
	c->in_body = false;
	c->hlen = 0;
	if (c->cur.measured) {
		if (c->status >= 200 && c->status < 400) {
			G.ok++;
			hist_add(&G.lat, now - c->cur.sched);
			hist_add(&G.svc, now - c->sent_at);
			G.last_done = now;
			if (G.slow_ns > 0 && now - c->cur.sched >= G.slow_ns)
				slow_log(now - c->cur.sched);
		} else {
			G.errors[E_STATUS]++;
		}
	}
	if (c->close_after)
		conn_close(c);
	else
		kick(c);
	check_done();
}

/* Parses the response head in c->hdr[0..end); sets status, body_left, close_after. */
static int
parse_head(struct conn *c, size_t end)
{
	const char *h = c->hdr;
	if (end < 16 || memcmp(h, "HTTP/1.", 7) != 0 || (h[7] != '0' && h[7] != '1') || h[8] != ' ')
		return -1;
	bool http10 = h[7] == '0';
	if (h[9] < '1' || h[9] > '5' || h[10] < '0' || h[10] > '9' || h[11] < '0' || h[11] > '9' ||
		(h[12] != ' ' && h[12] != '\r'))
		return -1;
	c->status = (h[9] - '0') * 100 + (h[10] - '0') * 10 + (h[11] - '0');
	bool have_cl = false, keep_alive = false, close = false;
	uint64_t cl = 0;
	const char *p = memchr(h, '\n', end);
	while (p != NULL && (size_t)(p + 1 - h) < end - 2) {
		const char *line = p + 1;
		const char *eol = memchr(line, '\r', end - (size_t)(line - h));
		if (eol == NULL || eol[1] != '\n')
			return -1;
		const char *colon = memchr(line, ':', (size_t)(eol - line));
		if (colon == NULL || colon == line)
			return -1;
		size_t nlen = (size_t)(colon - line);
		const char *v = colon + 1;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		size_t vlen = (size_t)(eol - v);
		while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
			vlen--;
		if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0) {
			uint64_t x = 0;
			if (vlen == 0 || vlen > 15)
				return -1;
			for (size_t i = 0; i < vlen; i++) {
				if (v[i] < '0' || v[i] > '9')
					return -1;
				x = x * 10 + (uint64_t)(v[i] - '0');
			}
			if (have_cl && x != cl)
				return -1;
			have_cl = true;
			cl = x;
		} else if (nlen == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
			if (!(vlen == 8 && strncasecmp(v, "identity", 8) == 0))
				return -1; /* chunked: not supported */
		} else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
			close |= has_token(v, vlen, "close");
			keep_alive |= has_token(v, vlen, "keep-alive");
		}
		p = eol + 1;
	}
	if (c->status < 200 || c->status == 204 || c->status == 304)
		cl = 0;
	else if (!have_cl)
		return -1; /* a body delimited by the close: not supported */
	c->body_left = cl;
	c->close_after = close || (http10 && !keep_alive) || G.close_each;
	return 0;
}

static void
protocol_error(struct conn *c)
{
	fail_requests(c, E_PROTOCOL, false, E_PROTOCOL);
	conn_close(c);
}

static void
on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char scratch[SCRATCH];
	struct conn *c = h->data;
	if (c->busy && !c->in_body) {
		buf->base = c->hdr + c->hlen;
		buf->len = HDR_MAX - c->hlen;
	} else {
		buf->base = scratch;
		buf->len = sizeof(scratch);
	}
}

static void
on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct conn *c = s->data;
	if (c->st != C_OPEN)
		return;
	if (n < 0) {
		/* EOF or reset: an error for the request in flight; an idle keep-alive
		 * connection closed by the server just reopens on demand. */
		fail_requests(c, E_READ, false, E_READ);
		conn_close(c);
		return;
	}
	if (n == 0)
		return;
	if (!c->busy) {
		protocol_error(c); /* data nobody asked for */
		return;
	}
	size_t got = (size_t)n;
	if (c->in_body) {
		if (got > c->body_left) {
			protocol_error(c);
			return;
		}
		c->body_left -= got;
		if (c->body_left == 0)
			complete(c);
		return;
	}
	/* The bytes landed in c->hdr at hlen. */
	size_t from = c->hlen >= 3 ? c->hlen - 3 : 0;
	c->hlen += got;
	for (;;) {
		size_t end = find_head_end(c->hdr, c->hlen, from);
		if (end == 0) {
			if (c->hlen == HDR_MAX)
				protocol_error(c);
			return;
		}
		if (parse_head(c, end) != 0) {
			protocol_error(c);
			return;
		}
		size_t rest = c->hlen - end;
		if (c->status >= 100 && c->status < 200) {
			if (c->status == 101) {
				protocol_error(c);
				return;
			}
			memmove(c->hdr, c->hdr + end, rest); /* interim response: the real one follows */
			c->hlen = rest;
			from = 0;
			continue;
		}
		if (rest > c->body_left) {
			protocol_error(c);
			return;
		}
		c->body_left -= rest;
		c->in_body = true;
		if (c->body_left == 0)
			complete(c);
		return;
	}
}

static void
on_write(uv_write_t *w, int status)
{
	struct conn *c = w->data;
	if (status < 0 && c->st == C_OPEN) {
		fail_requests(c, E_WRITE, false, E_WRITE);
		conn_close(c);
	}
}

/* Sends the head of the queue when the connection is open and idle; opens it when closed. */
static void
kick(struct conn *c)
{
	if (c->qlen == 0 || G.finishing)
		return;
	if (c->st == C_CLOSED) {
		conn_open(c);
		return;
	}
	if (c->st != C_OPEN || c->busy)
		return;
	c->cur = c->q[c->qhead];
	c->qhead = (c->qhead + 1) % c->qcap;
	c->qlen--;
	c->busy = true;
	c->in_body = false;
	c->hlen = 0;
	uint64_t now = uv_hrtime();
	c->sent_at = now;
	if (c->cur.measured) {
		G.sent++;
		hist_add(&G.lag, now > c->cur.sched ? now - c->cur.sched : 0);
	}
	uv_buf_t b = uv_buf_init(G.request, (unsigned)G.request_len);
	c->wreq.data = c;
	int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_write);
	if (rc != 0) {
		fail_requests(c, E_WRITE, false, E_WRITE);
		conn_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timeout, (G.timeout_ns + 999999) / 1000000, 0);
}

static void
dispatch(uint64_t i)
{
	struct conn *c = &G.conns[i % G.nconn];
	struct req r = { sched_of(i), i >= G.n_warm };
	if (r.measured)
		G.measured_total++;
	if (c->busy || c->st != C_OPEN || c->qlen > 0)
		G.queued += r.measured;
	if (c->qlen == c->qcap) {
		if (c->qcap >= G.max_queue) {
			count_error(&r, E_OVERFLOW);
			return;
		}
		size_t ncap = c->qcap ? c->qcap * 2 : 16;
		if (ncap > G.max_queue)
			ncap = G.max_queue;
		struct req *nq = malloc(ncap * sizeof(*nq));
		if (nq == NULL)
			die("out of memory");
		for (size_t k = 0; k < c->qlen; k++)
			nq[k] = c->q[(c->qhead + k) % c->qcap];
		free(c->q);
		c->q = nq;
		c->qcap = ncap;
		c->qhead = 0;
	}
	c->q[(c->qhead + c->qlen) % c->qcap] = r;
	c->qlen++;
	if (c->qlen > G.max_qlen)
		G.max_qlen = c->qlen;
	kick(c);
}

/* One periodic timer for the whole schedule: it fires at every due time (less --spin), and is
 * never re-armed, since on a VM every timer reprogramming is a costly exit to the hypervisor. */
static void
arm_timer(bool on)
{
	struct itimerspec its = { 0 };
	if (on) {
		uint64_t t = G.t0 - G.spin_ns; /* wake early, spin the rest (--spin) */
		its.it_value.tv_sec = (time_t)(t / 1000000000u);
		its.it_value.tv_nsec = (long)(t % 1000000000u);
		its.it_interval.tv_sec = (time_t)(G.period_ns / 1000000000u);
		its.it_interval.tv_nsec = (long)(G.period_ns % 1000000000u);
	}
	if (timerfd_settime(G.tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0)
		die("timerfd_settime: %s", strerror(errno));
}

static void
finish(void)
{
	if (G.finishing)
		return;
	G.finishing = true;
	uv_poll_stop(&G.poll);
	uv_close((uv_handle_t *)&G.poll, NULL);
	uv_check_stop(&G.check);
	uv_close((uv_handle_t *)&G.check, NULL);
	uv_timer_stop(&G.end_timer);
	uv_close((uv_handle_t *)&G.end_timer, NULL);
	uv_close((uv_handle_t *)&G.sigint, NULL);
	for (unsigned i = 0; i < G.nconn; i++) {
		struct conn *c = &G.conns[i];
		fail_requests(c, E_UNFINISHED, true, E_UNFINISHED);
		conn_close(c);
		uv_close((uv_handle_t *)&c->timer, NULL);
	}
}

static void
on_end_timer(uv_timer_t *t)
{
	finish();
}

static void
check_done(void)
{
	if (!G.sched_done || G.finishing)
		return;
	for (unsigned i = 0; i < G.nconn; i++)
		if (G.conns[i].busy || G.conns[i].qlen > 0)
			return;
	finish();
}

/* Sends every request that is due; called on each timer expiry and after each turn of the
 * loop's I/O (so a busy loop sends on time without waiting for the timer's turn). */
static void
pump(void)
{
	if (!G.started || G.sched_done)
		return;
	uint64_t now = uv_hrtime();
	for (;;) {
		while (G.next < G.total && sched_of(G.next) <= now)
			dispatch(G.next++);
		if (G.spin_ns == 0 || G.next >= G.total)
			break;
		uint64_t due = sched_of(G.next);
		if (due - now > G.spin_ns)
			break;
		while ((now = uv_hrtime()) < due)
			; /* busy-wait the last stretch: the wake-up latency of a sleeping thread is
			   * tens of microseconds on a VM */
	}
	if (G.next < G.total)
		return;
	G.sched_done = true;
	arm_timer(false);
	uv_poll_stop(&G.poll);
	uv_check_stop(&G.check);
	uv_timer_start(&G.end_timer, on_end_timer, (G.timeout_ns + 999999) / 1000000, 0);
	check_done();
}

static void
on_tick(uv_poll_t *p, int status, int events)
{
	uint64_t expirations;
	if (read(G.tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
		die("timerfd read: %s", strerror(errno));
	pump();
}

static void
on_check(uv_check_t *h)
{
	pump();
}

static void
on_sigint(uv_signal_t *s, int sig)
{
	fprintf(stderr, "loadgen: interrupted, reporting what was measured\n");
	G.total = G.next;
	G.sched_done = true;
	finish();
}

static void
start_schedule(void)
{
	G.started = true;
	G.t0 = uv_hrtime() + 1000000; /* 1 ms from now */
	G.next = 0;
	arm_timer(true);
	uv_poll_start(&G.poll, UV_READABLE, on_tick);
	uv_check_start(&G.check, on_check);
}

static void
startup_failed(const char *why)
{
	fprintf(stderr, "loadgen: cannot connect to %s: %s\n", G.url, why);
	G.exit_code = 1;
	G.sched_done = true;
	finish();
}

static void
on_connect(uv_connect_t *r, int status)
{
	struct conn *c = r->data;
	if (c->st != C_CONNECTING)
		return;
	uv_timer_stop(&c->timer);
	if (status < 0) {
		if (!G.started) {
			startup_failed(uv_strerror(status));
			return;
		}
		fail_requests(c, E_CONNECT, true, E_CONNECT);
		conn_close(c);
		return;
	}
	c->st = C_OPEN;
	uv_tcp_nodelay(&c->tcp, 1);
	uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
	if (!G.started) {
		if (++G.connected == G.nconn)
			start_schedule();
		return;
	}
	kick(c);
}

static void
conn_open(struct conn *c)
{
	if (c->st != C_CLOSED)
		return;
	uv_tcp_init(G.loop, &c->tcp);
	c->tcp.data = c;
	c->creq.data = c;
	c->st = C_CONNECTING;
	c->busy = false;
	c->in_body = false;
	c->hlen = 0;
	if (G.started)
		G.reconnects++;
	int rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&G.addr, on_connect);
	if (rc == 0) {
		uv_timer_start(&c->timer, on_timeout, (G.timeout_ns + 999999) / 1000000, 0);
		return;
	}
	if (!G.started)
		die("cannot connect to %s: %s", G.url, uv_strerror(rc));
	fail_requests(c, E_CONNECT, true, E_CONNECT);
	conn_close(c);
}

static void
json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fputc('\\', f);
		if ((unsigned char)*s >= 0x20)
			fputc(*s, f);
	}
	fputc('"', f);
}

static void
report(void)
{
	uint64_t errs = 0;
	for (int k = 0; k < E_KINDS; k++)
		errs += G.errors[k];
	double dur = (double)G.dur_ns / NS;
	uint64_t mstart = sched_of(G.n_warm);
	double span = G.last_done > mstart ? (double)(G.last_done - mstart) / NS : 0;
	double achieved = G.ok / (span > dur ? span : dur);
	const struct hist *l = &G.lat;
	double p50 = hist_pct_ms(l, 50), p90 = hist_pct_ms(l, 90), p99 = hist_pct_ms(l, 99);
	double p999 = hist_pct_ms(l, 99.9), max = (double)l->max / 1e6;
	double mean = l->n ? l->sum / (double)l->n / 1e6 : 0;

	printf("loadgen   %s: %.6g req/s for %.6g s (+%.6g s warmup) over %u connections\n", G.url,
		G.rate, dur, (double)G.warm_ns / NS, G.nconn);
	printf("requests  %" PRIu64 " due, %" PRIu64 " sent, %" PRIu64 " ok, %" PRIu64 " errors (",
		G.measured_total, G.sent, G.ok, errs);
	for (int k = 0; k < E_KINDS; k++)
		printf("%s%s %" PRIu64, k ? ", " : "", err_names[k], G.errors[k]);
	printf(")%s", G.warm_errors ? "" : "\n");
	if (G.warm_errors)
		printf(", %" PRIu64 " more during warmup\n", G.warm_errors);
	printf("rate      target %.1f/s, achieved %.1f/s\n", G.rate, achieved);
	printf("latency   p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms, mean %.3f ms"
	       " (from the scheduled time)\n", p50, p90, p99, p999, max, mean);
	printf("sendlag   p50 %.3f ms, p99 %.3f ms, max %.3f ms (scheduled time to write); %" PRIu64
	       " requests waited for a busy connection (deepest queue %zu), %" PRIu64 " reconnects\n",
		hist_pct_ms(&G.lag, 50), hist_pct_ms(&G.lag, 99), (double)G.lag.max / 1e6, G.queued,
		G.max_qlen, G.reconnects);
	printf("service   p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms (write to response, what a"
	       " closed-loop tool such as wrk reports)\n", hist_pct_ms(&G.svc, 50),
		hist_pct_ms(&G.svc, 90), hist_pct_ms(&G.svc, 99), (double)G.svc.max / 1e6);
	printf("{\"url\":");
	json_str(stdout, G.url);
	printf(",\"rate\":%.6g,\"duration\":%.6g,\"warmup\":%.6g,\"connections\":%u,\"requests\":%" PRIu64
	       ",\"sent\":%" PRIu64 ",\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"errors_by_kind\":{",
		G.rate, dur, (double)G.warm_ns / NS, G.nconn, G.measured_total, G.sent, G.ok, errs);
	for (int k = 0; k < E_KINDS; k++)
		printf("%s\"%s\":%" PRIu64, k ? "," : "", err_names[k], G.errors[k]);
	printf("},\"achieved_rps\":%.3f,\"latency_ms\":{\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,"
	       "\"p99_9\":%.4f,\"max\":%.4f,\"mean\":%.4f},\"send_lag_ms\":{\"p50\":%.4f,\"p99\":%.4f,"
	       "\"max\":%.4f},\"service_ms\":{\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"max\":%.4f},"
	       "\"queued\":%" PRIu64 ",\"reconnects\":%" PRIu64 "}\n",
		achieved, p50, p90, p99, p999, max, mean, hist_pct_ms(&G.lag, 50), hist_pct_ms(&G.lag, 99),
		(double)G.lag.max / 1e6, hist_pct_ms(&G.svc, 50), hist_pct_ms(&G.svc, 90),
		hist_pct_ms(&G.svc, 99), (double)G.svc.max / 1e6, G.queued, G.reconnects);
	fflush(stdout);
	if (G.exit_code == 0 && errs > 0)
		G.exit_code = 2;
}

static int
run_loadgen(const char *url)
{
	if (strncmp(url, "http://", 7) != 0)
		die("only http:// URLs: %s", url);
	if (strlen(url) >= sizeof(G.url))
		die("URL too long");
	snprintf(G.url, sizeof(G.url), "%s", url);
	const char *auth = url + 7;
	const char *slash = strchr(auth, '/');
	size_t alen = slash ? (size_t)(slash - auth) : strlen(auth);
	const char *path = slash ? slash : "/";
	for (const char *p = url; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f)
			die("bad character in URL");
	char host[256], port[8];
	split_hostport(auth, alen, host, sizeof(host), port, sizeof(port), "80");
	resolve(host, port, &G.addr, false);
	size_t cap = strlen(path) + alen + 128;
	G.request = malloc(cap);
	if (G.request == NULL)
		die("out of memory");
	G.request_len = (size_t)snprintf(G.request, cap,
		"GET %s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: amesh-loadgen\r\n%s\r\n", path, (int)alen, auth,
		G.close_each ? "Connection: close\r\n" : "");

	/* Whole nanoseconds between requests: at most 0.5 ns off 1/R, so the rate is exact to
	 * better than 0.01% up to 5,000,000 requests/s. */
	G.period_ns = (uint64_t)(NS / G.rate + 0.5);
	if (G.period_ns == 0)
		G.period_ns = 1;
	G.n_warm = (uint64_t)((double)G.warm_ns / NS * G.rate + 0.5);
	G.total = G.n_warm + (uint64_t)((double)G.dur_ns / NS * G.rate + 0.5);
	if (G.total == G.n_warm)
		die("--rate x --duration is less than one request");
	G.loop = uv_default_loop();
	/* Timer slack (50 us by default) would delay every wake-up by up to that much. */
	prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	G.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (G.tfd < 0)
		die("timerfd_create: %s", strerror(errno));
	uv_poll_init(G.loop, &G.poll, G.tfd);
	uv_check_init(G.loop, &G.check);
	uv_timer_init(G.loop, &G.end_timer);
	uv_signal_init(G.loop, &G.sigint);
	uv_signal_start(&G.sigint, on_sigint, SIGINT);
	G.conns = calloc(G.nconn, sizeof(*G.conns));
	if (G.conns == NULL)
		die("out of memory");
	for (unsigned i = 0; i < G.nconn; i++) {
		struct conn *c = &G.conns[i];
		c->id = i;
		c->st = C_CLOSED;
		uv_timer_init(G.loop, &c->timer);
		c->timer.data = c;
		c->wreq.data = c;
		conn_open(c);
	}
	uv_run(G.loop, UV_RUN_DEFAULT);
	close(G.tfd);
	if (G.exit_code == 1)
		return 1;
	report();
	for (unsigned i = 0; i < G.nconn; i++)
		free(G.conns[i].q);
	free(G.conns);
	free(G.request);
	uv_loop_close(G.loop);
	return G.exit_code;
}

/* ---- the server ----------------------------------------------------------------------- */

struct client {
	uv_tcp_t tcp;
	char buf[HDR_MAX];
	size_t len;
	uint64_t skip; /* request body bytes still to discard */
	bool closing;
};

struct wr {
	uv_write_t w;
	struct client *cl;
};

static char *resp_head, *resp_body;
static size_t resp_head_len, resp_body_len;

static void
srv_closed(uv_handle_t *h)
{
	free(h->data);
}

static void
srv_close(struct client *cl)
{
	if (!cl->closing) {
		cl->closing = true;
		uv_close((uv_handle_t *)&cl->tcp, srv_closed);
	}
}

static void
srv_written(uv_write_t *w, int status)
{
	free(w);
}

static void
srv_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char scratch[SCRATCH];
	struct client *cl = h->data;
	if (cl->skip > 0 || cl->len == HDR_MAX) {
		buf->base = scratch;
		buf->len = sizeof(scratch);
	} else {
		buf->base = cl->buf + cl->len;
		buf->len = HDR_MAX - cl->len;
	}
}

/* Answers every complete request head in cl->buf; keeps the incomplete rest. */
static void
srv_consume(struct client *cl)
{
	size_t off = 0;
	for (;;) {
		if (cl->skip > 0) {
			size_t k = cl->len - off < cl->skip ? cl->len - off : (size_t)cl->skip;
			off += k;
			cl->skip -= k;
			if (cl->skip > 0)
				break;
		}
		size_t end = find_head_end(cl->buf + off, cl->len - off, 0);
		if (end == 0)
			break;
		const char *h = cl->buf + off;
		bool close = false, http10 = end > 9 && memmem(h, end, " HTTP/1.0\r\n", 11) != NULL;
		bool keep = false;
		const char *p = memchr(h, '\n', end);
		while (p != NULL && (size_t)(p + 1 - h) < end - 2) {
			const char *line = p + 1;
			const char *eol = memchr(line, '\r', end - (size_t)(line - h));
			if (eol == NULL)
				break;
			const char *colon = memchr(line, ':', (size_t)(eol - line));
			if (colon != NULL) {
				size_t nlen = (size_t)(colon - line);
				const char *v = colon + 1;
				while (v < eol && *v == ' ')
					v++;
				if (nlen == 14 && strncasecmp(line, "content-length", 14) == 0)
					cl->skip = strtoull(v, NULL, 10);
				else if (nlen == 10 && strncasecmp(line, "connection", 10) == 0) {
					close |= has_token(v, (size_t)(eol - v), "close");
					keep |= has_token(v, (size_t)(eol - v), "keep-alive");
				}
			}
			p = eol + 1;
		}
		off += end;
		struct wr *w = malloc(sizeof(*w));
		if (w == NULL) {
			srv_close(cl);
			return;
		}
		w->cl = cl;
		uv_buf_t b[2] = { uv_buf_init(resp_head, (unsigned)resp_head_len),
			uv_buf_init(resp_body, (unsigned)resp_body_len) };
		if (uv_write(&w->w, (uv_stream_t *)&cl->tcp, b, 2, srv_written) != 0) {
			free(w);
			srv_close(cl);
			return;
		}
		if (close || (http10 && !keep)) {
			srv_close(cl);
			return;
		}
	}
	memmove(cl->buf, cl->buf + off, cl->len - off);
	cl->len -= off;
}

static void
srv_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct client *cl = s->data;
	if (n < 0) {
		srv_close(cl);
		return;
	}
	if (n == 0 || cl->closing)
		return;
	if (buf->base != cl->buf + cl->len) {
		/* body bytes read into the scratch buffer, or a head over 16 KiB */
		if (cl->skip == 0) {
			srv_close(cl);
			return;
		}
		size_t k = (size_t)n < cl->skip ? (size_t)n : (size_t)cl->skip;
		cl->skip -= k;
		if ((size_t)n > k) {
			size_t more = (size_t)n - k;
			if (more > HDR_MAX - cl->len) {
				srv_close(cl);
				return;
			}
			memcpy(cl->buf + cl->len, buf->base + k, more);
			cl->len += more;
		}
	} else {
		cl->len += (size_t)n;
	}
	srv_consume(cl);
}

static void
srv_accept(uv_stream_t *server, int status)
{
	if (status < 0)
		return;
	struct client *cl = calloc(1, sizeof(*cl));
	if (cl == NULL)
		return;
	uv_tcp_init(server->loop, &cl->tcp);
	cl->tcp.data = cl;
	if (uv_accept(server, (uv_stream_t *)&cl->tcp) != 0) {
		srv_close(cl);
		return;
	}
	uv_tcp_nodelay(&cl->tcp, 1);
	uv_read_start((uv_stream_t *)&cl->tcp, srv_alloc, srv_read);
}

static int
run_server(const char *where, size_t size)
{
	char host[256], port[8];
	struct sockaddr_storage ss;
	split_hostport(where, strlen(where), host, sizeof(host), port, sizeof(port), NULL);
	resolve(host, port, &ss, true);
	resp_body = malloc(size ? size : 1);
	resp_head = malloc(128);
	if (resp_body == NULL || resp_head == NULL)
		die("out of memory");
	for (size_t i = 0; i < size; i++)
		resp_body[i] = (char)('a' + i % 26);
	resp_body_len = size;
	resp_head_len = (size_t)snprintf(resp_head, 128,
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n", size);
	signal(SIGPIPE, SIG_IGN);
	uv_loop_t *loop = uv_default_loop();
	uv_tcp_t srv;
	uv_tcp_init(loop, &srv);
	int rc = uv_tcp_bind(&srv, (const struct sockaddr *)&ss, 0);
	if (rc == 0)
		rc = uv_listen((uv_stream_t *)&srv, 4096, srv_accept);
	if (rc != 0)
		die("cannot listen on %s: %s", where, uv_strerror(rc));
	struct sockaddr_storage bound;
	int blen = sizeof(bound);
	uv_tcp_getsockname(&srv, (struct sockaddr *)&bound, &blen);
	unsigned p = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
						      : ((struct sockaddr_in *)&bound)->sin_port);
	printf("listening %u\n", p);
	fflush(stdout);
	return uv_run(loop, UV_RUN_DEFAULT);
}

/* ---- main ----------------------------------------------------------------------------- */

static void
usage(FILE *f)
{
	fputs("usage: loadgen --url http://HOST:PORT/PATH --rate R --duration S [--connections C]\n"
	      "               [--warmup S] [--timeout S] [--max-queue N] [--spin US] [--close]\n"
	      "               [--slow MS]\n"
	      "       loadgen --serve ADDR:PORT [--size BYTES]\n"
	      "Open-loop HTTP/1.1 load: R requests/s on a fixed schedule, round robin over C\n"
	      "keep-alive connections (default 4), latency timed from each request's scheduled\n"
	      "start. Durations in seconds (2.5, 2.5s or 500ms). See the comment at the top of\n"
	      "bench/loadgen.c and bench/README.\n",
		f);
}

int
main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "url", required_argument, NULL, 'u' },
		{ "rate", required_argument, NULL, 'r' },
		{ "duration", required_argument, NULL, 'd' },
		{ "connections", required_argument, NULL, 'c' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "timeout", required_argument, NULL, 't' },
		{ "max-queue", required_argument, NULL, 'q' },
		{ "spin", required_argument, NULL, 'p' },
		{ "serve", required_argument, NULL, 's' },
		{ "size", required_argument, NULL, 'z' },
		{ "close", no_argument, NULL, 'C' },
		{ "slow", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *url = NULL, *serve = NULL;
	int64_t dur = -1, warm = 0, timeout = 5 * (int64_t)NS;
	double rate = 0;
	long conns = 4, maxq = 100000, spin = 0;
	unsigned long long size = 1024;
	char *end;
	int opt;
	while ((opt = getopt_long(argc, argv, "u:r:d:c:w:t:q:p:s:z:CS:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'u': url = optarg; break;
		case 'r':
			rate = strtod(optarg, &end);
			if (*end != '\0' || !(rate > 0) || rate > 10e6)
				die("bad --rate '%s' (requests per second, > 0)", optarg);
			break;
		case 'd':
			if ((dur = parse_secs(optarg)) <= 0)
				die("bad --duration '%s'", optarg);
			break;
		case 'w':
			if ((warm = parse_secs(optarg)) < 0)
				die("bad --warmup '%s'", optarg);
			break;
		case 't':
			if ((timeout = parse_secs(optarg)) < 1000000)
				die("bad --timeout '%s' (at least 1ms)", optarg);
			break;
		case 'c':
			conns = strtol(optarg, &end, 10);
			if (*end != '\0' || conns < 1 || conns > 100000)
				die("bad --connections '%s'", optarg);
			break;
		case 'q':
			maxq = strtol(optarg, &end, 10);
			if (*end != '\0' || maxq < 1 || maxq > 100000000)
				die("bad --max-queue '%s'", optarg);
			break;
		case 'p':
			spin = strtol(optarg, &end, 10);
			if (*end != '\0' || spin < 0 || spin > 100000)
				die("bad --spin '%s' (microseconds, 0 to 100000)", optarg);
			break;
		case 's': serve = optarg; break;
		case 'z':
			size = strtoull(optarg, &end, 10);
			if (*end != '\0' || size > 64u * 1024 * 1024)
				die("bad --size '%s' (bytes, at most 64 MiB)", optarg);
			break;
		case 'C': G.close_each = true; break;
		case 'S': {
			int64_t v = parse_secs(optarg);

			if (v <= 0)
				die("bad --slow '%s'", optarg);
			G.slow_ns = (uint64_t)v;
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 1;
	}
	if (serve != NULL)
		return run_server(serve, (size_t)size) == 0 ? 0 : 1;
	if (url == NULL || rate <= 0 || dur <= 0) {
		usage(stderr);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	G.rate = rate;
	G.dur_ns = (uint64_t)dur;
	G.warm_ns = (uint64_t)warm;
	G.timeout_ns = (uint64_t)timeout;
	G.nconn = (unsigned)conns;
	G.max_queue = (size_t)maxq;
	G.spin_ns = (uint64_t)spin * 1000;
	return run_loadgen(url);
}
