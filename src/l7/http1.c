/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/1.1 codec for the L7 proxy: libhttp-parser with amesh's bounds and smuggling checks, and the forwarding serializer. */
#include "config.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/parse.h"
#include "core/util.h"
#include "l7/http1.h"

/*
 * Parsing: libhttp-parser does the grammar; this file adds what a proxy needs on top.
 *
 * - Debian builds the library without HTTP_PARSER_STRICT, so it lets through obs-fold, blanks
 *   before a header colon, control characters in values, "HXXP/1.1" or a tab in a start line, a
 *   bare CR ending the head and anything in place of the CRLF after chunk data. A small scanner
 *   (struct scan) reads the raw bytes ahead of the library and hands it only the bytes before the
 *   first bad one, so nothing is delivered from a message past its fault; it also counts head and
 *   trailer bytes against H1_MAX_HEAD, so the limit is exact whatever the library's own (80 KiB).
 * - The library is paused at the end of every head and every message, so on_head and on_end run
 *   outside it (a caller may pause or fail there) and each message starts with fresh bounds.
 * - Strings are copied into a per-message arena that grows up to the head limit; the library only
 *   hands out pieces of the caller's buffer.
 */

/* The arena holds NUL-terminated copies, never more bytes than the raw head: a little slack. */
#define ARENA_MAX (H1_MAX_HEAD + 64)
/* An arena larger than this is freed between messages, so an idle connection stays small. */
#define ARENA_KEEP 4096
/* A chunk-size line longer than this (extensions included) is refused. */
#define CHUNK_LINE_MAX 4096
#define NO_VALUE UINT32_MAX

enum scan_state {
	SC_START,      /* before the start line; empty lines are skipped, as the library does */
	SC_START_LINE, /* in the start line (its shape here, the rest in the library) */
	SC_LINE,       /* at the start of a field line or of the empty line */
	SC_NAME,       /* in a field name: token characters up to ':' */
	SC_VALUE,      /* in a field value: no control character but HTAB */
	SC_END_CR,     /* the empty line's CR */
	SC_PASS,       /* nothing to check: the library delimits this body */
	SC_CHUNK_SIZE0, SC_CHUNK_SIZE, SC_CHUNK_EXT, SC_CHUNK_SIZE_LF,
	SC_CHUNK_DATA, SC_CHUNK_DATA_END, SC_CHUNK_DATA_LF,
	SC_DONE,       /* the message is over; the next one starts with a fresh scanner */
};

struct scan {
	enum scan_state st;
	bool trailers;    /* the field lines are a chunked body's trailer section */
	bool body_known;  /* the head was parsed: body_chunked says what follows it */
	bool body_chunked;
	bool response;    /* the start line is a status line */
	uint32_t count;   /* bytes of the head or trailer section, or of the chunk-size line */
	uint32_t col;     /* start line: bytes so far, spaces in it and its last bytes */
	unsigned spaces;
	char tail[10];
	uint64_t chunk;   /* chunk size being read, then data bytes left */
	unsigned digits;
	const char *bad;  /* why the scan stopped before a byte */
};

enum piece { P_NONE, P_URL, P_STATUS, P_FIELD, P_VALUE };

struct field_off {
	uint32_t name, name_len, value, value_len;
};

/* One head's or trailer section's strings, back to back, found by offset until the section ends. */
struct arena {
	char *buf;
	size_t len, cap;
	enum piece last;
	struct field_off *f;
	size_t n;
	uint32_t url, url_len, reason, reason_len;
	bool trailers;
};

struct trailers {
	struct arena a;
	struct field_off f[H1_MAX_HEADERS];
	struct h1_header hdr[H1_MAX_HEADERS];
};

struct h1_parser {
	http_parser hp;
	enum h1_kind kind;
	struct h1_callbacks cb;
	void *arg;
	struct scan sc;
	bool paused;      /* by the caller, or after an upgrade message */
	bool in_msg;
	bool head_parsed; /* header callbacks now carry trailers */
	bool head_ready;  /* the library stopped at the end of a head: on_head is due */
	bool msg_done;    /* the library stopped at the end of a message: on_end is due */
	bool closed;      /* a message without keep-alive ended: later bytes are dropped */
	const char *expect; /* response parsers: method of the request being answered */
	struct arena a;
	struct field_off f[H1_MAX_HEADERS];
	struct h1_header hdr[H1_MAX_HEADERS];
	struct h1_head head;
	struct trailers *tr;
	int err, err_status;
	const char *err_name, *err_text;
};

static const struct {
	const char *name, *text;
} h1_errors[] = {
	{ "H1_HEAD_TOO_LARGE", "message head larger than 64 KiB" },
	{ "H1_TOO_MANY_HEADERS", "more than 100 header fields" },
	{ "H1_OBS_FOLD", "header field line folded (obs-fold) or starting with whitespace" },
	{ "H1_BAD_HEADER_NAME", "header field name empty, not a token or followed by whitespace" },
	{ "H1_BAD_HEADER_VALUE", "control character in a header field value" },
	{ "H1_BAD_STATUS_LINE", "status line not \"HTTP/d.d ddd reason\"" },
	{ "H1_BAD_REQUEST_LINE", "request line not \"METHOD SP target SP HTTP/d.d\"" },
	{ "H1_LF_EXPECTED", "CR not followed by LF at the end of the head" },
	{ "H1_BAD_CHUNK", "malformed chunk size line or chunk data not followed by CRLF" },
	{ "H1_TRAILERS_TOO_LARGE", "trailer section larger than 64 KiB" },
	{ "H1_TOO_MANY_TRAILERS", "more than 100 trailer fields" },
	{ "H1_UNSUPPORTED_TRANSFER_CODING", "transfer coding other than a single chunked" },
	{ "H1_TRANSFER_ENCODING_IN_HTTP10", "Transfer-Encoding in an HTTP/1.0 message" },
	{ "H1_MISSING_HOST", "HTTP/1.1 request without Host" },
	{ "H1_DUPLICATE_HOST", "request with more than one Host" },
	{ "H1_BAD_VERSION", "HTTP version other than 1.x" },
	{ "H1_NOMEM", "out of memory" },
	{ "H1_CALLBACK", "the caller's callback failed" },
	{ "H1_INTERNAL", "the parser made no progress" },
};

void *(*h1_test_realloc)(void *ptr, size_t size) = realloc;

static void *
zalloc(size_t size)
{
	void *p = h1_test_realloc(NULL, size);

	if (p != NULL)
		memset(p, 0, size);
	return p;
}

static const char *const hop_by_hop[] = {
	"Connection", "Keep-Alive", "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade",
};

static bool
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Control characters: C0 and DEL. */
static bool
is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

static unsigned char
lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* ASCII case-insensitive comparison of a NUL-terminated name with n bytes at s. */
static bool
name_eq(const char *name, const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (name[i] == '\0' || lower((unsigned char)name[i]) != lower((unsigned char)s[i]))
			return false;
	return name[i] == '\0';
}

static bool
streq_nocase(const char *a, const char *b)
{
	return name_eq(a, b, strlen(b));
}

/*
 * The library, built without HTTP_PARSER_STRICT, takes "HXXP/1.1", "HTTP 1.1", a tab in the
 * target or a two-digit status. Checked here: a status line is "HTTP/d.d ddd" then SP and a
 * reason of field text (the SP may be missing when the reason is); a request line has two single
 * spaces, no control character, and ends with " HTTP/d.d". The library checks the rest.
 */
static bool
start_line_char(struct scan *s, unsigned char c)
{
	static const char status_fmt[] = "HTTP/d.d ddd ";
	uint32_t col = s->col++;

	memmove(s->tail, s->tail + 1, sizeof(s->tail) - 1);
	s->tail[sizeof(s->tail) - 1] = (char)c;
	if (c == '\r')
		return true; /* the library wants LF next */
	if (!s->response) {
		if (c == ' ')
			s->spaces++;
		return !is_ctl(c);
	}
	if (col >= sizeof(status_fmt) - 1)
		return !is_ctl(c) || c == '\t';
	if (status_fmt[col] == 'd')
		return c >= '0' && c <= '9';
	return c == (unsigned char)status_fmt[col];
}

static bool
start_line_end(const struct scan *s)
{
	const char *t = s->tail + sizeof(s->tail);
	uint32_t len = s->col;

	if (len > 0 && t[-1] == '\r') {
		t--;
		len--;
	}
	if (s->response)
		return len >= 12;
	return s->spaces == 2 && len >= 12 && memcmp(t - 9, " HTTP/", 6) == 0 &&
	    t[-3] >= '0' && t[-3] <= '9' && t[-2] == '.' && t[-1] >= '0' && t[-1] <= '9';
}

/* The end of a head or trailer section: what the scanner expects next. */
static void
scan_section_end(struct scan *s)
{
	if (s->trailers || !s->body_known)
		s->st = s->trailers ? SC_DONE : SC_PASS;
	else if (s->body_chunked)
		s->st = SC_CHUNK_SIZE0;
	else
		s->st = SC_PASS;
	s->count = 0;
}

/* Returns how many of the n bytes are good; fewer than n when it stopped before a bad byte (s->bad). */
static size_t
scan(struct scan *s, const uint8_t *d, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = d[i];
		int h;

		if (s->st == SC_PASS || s->st == SC_DONE)
			return n;
		if (s->st == SC_CHUNK_DATA) {
			size_t k = (uint64_t)(n - i) < s->chunk ? n - i : (size_t)s->chunk;

			s->chunk -= k;
			i += k;
			if (s->chunk == 0)
				s->st = SC_CHUNK_DATA_END;
			continue;
		}
		if (s->st <= SC_END_CR && ++s->count > H1_MAX_HEAD) {
			s->bad = s->trailers ? "H1_TRAILERS_TOO_LARGE" : "H1_HEAD_TOO_LARGE";
			return i;
		}
		switch (s->st) {
		case SC_START:
			if (c == '\r' || c == '\n')
				break;
			s->st = SC_START_LINE;
			/* fall through */
		case SC_START_LINE:
			if (c == '\n' ? !start_line_end(s) : !start_line_char(s, c)) {
				s->bad = s->response ? "H1_BAD_STATUS_LINE" : "H1_BAD_REQUEST_LINE";
				return i;
			}
			if (c == '\n')
				s->st = SC_LINE;
			break;
		case SC_LINE:
			if (c == '\r') {
				s->st = SC_END_CR;
			} else if (c == '\n') {
				scan_section_end(s);
			} else if (c == ' ' || c == '\t') {
				s->bad = "H1_OBS_FOLD";
				return i;
			} else if (is_tchar(c)) {
				s->st = SC_NAME;
			} else {
				s->bad = "H1_BAD_HEADER_NAME";
				return i;
			}
			break;
		case SC_NAME:
			if (c == ':') {
				s->st = SC_VALUE;
			} else if (!is_tchar(c)) {
				s->bad = "H1_BAD_HEADER_NAME";
				return i;
			}
			break;
		case SC_VALUE:
			if (c == '\n') {
				s->st = SC_LINE;
			} else if (is_ctl(c) && c != '\t' && c != '\r') {
				/* the library lets some through (a NUL or ^A first in a value vanishes) */
				s->bad = "H1_BAD_HEADER_VALUE";
				return i;
			}
			break;
		case SC_END_CR:
			if (c != '\n') {
				s->bad = "H1_LF_EXPECTED";
				return i;
			}
			scan_section_end(s);
			break;
		case SC_CHUNK_SIZE0:
		case SC_CHUNK_SIZE:
		case SC_CHUNK_EXT:
		case SC_CHUNK_SIZE_LF:
			if (++s->count > CHUNK_LINE_MAX) {
				s->bad = "H1_BAD_CHUNK";
				return i;
			}
			h = parse_hexdigit(c);
			if (s->st == SC_CHUNK_SIZE0) {
				if (h < 0) {
					s->bad = "H1_BAD_CHUNK";
					return i;
				}
				s->chunk = (uint64_t)h;
				s->digits = 1;
				s->st = SC_CHUNK_SIZE;
			} else if (s->st == SC_CHUNK_SIZE && h >= 0) {
				if (++s->digits > 16) {
					s->bad = "H1_BAD_CHUNK";
					return i;
				}
				s->chunk = s->chunk * 16 + (uint64_t)h;
			} else if (s->st == SC_CHUNK_SIZE_LF && c != '\n') {
				s->bad = "H1_BAD_CHUNK";
				return i;
			} else if (c == '\r') {
				s->st = SC_CHUNK_SIZE_LF;
			} else if (c == '\n') {
				s->count = 0;
				if (s->chunk == 0) {
					s->trailers = true;
					s->st = SC_LINE;
				} else {
					s->st = SC_CHUNK_DATA;
				}
			} else if (s->st == SC_CHUNK_SIZE) {
				/* blanks or ';' start the extensions, which the library reads */
				if (c != ' ' && c != '\t' && c != ';') {
					s->bad = "H1_BAD_CHUNK";
					return i;
				}
				s->st = SC_CHUNK_EXT;
			}
			break;
		case SC_CHUNK_DATA_END:
			if (c == '\r') {
				s->st = SC_CHUNK_DATA_LF;
			} else if (c == '\n') {
				s->st = SC_CHUNK_SIZE0;
			} else {
				s->bad = "H1_BAD_CHUNK";
				return i;
			}
			break;
		case SC_CHUNK_DATA_LF:
			if (c != '\n') {
				s->bad = "H1_BAD_CHUNK";
				return i;
			}
			s->st = SC_CHUNK_SIZE0;
			break;
		default:
			break;
		}
		i++;
	}
	return n;
}

static int
status_for(const struct h1_parser *p, const char *name)
{
	if (p->kind == H1_RESPONSE)
		return 502;
	if (strcmp(name, "H1_HEAD_TOO_LARGE") == 0 || strcmp(name, "H1_TOO_MANY_HEADERS") == 0)
		return 431;
	if (strcmp(name, "H1_UNSUPPORTED_TRANSFER_CODING") == 0)
		return 501;
	if (strcmp(name, "H1_BAD_VERSION") == 0)
		return 505;
	if (strcmp(name, "H1_NOMEM") == 0 || strcmp(name, "H1_CALLBACK") == 0 ||
	    strcmp(name, "H1_INTERNAL") == 0)
		return 500;
	return 400;
}

/* Records the first error (one of h1_errors) and returns its code. */
static int
fail(struct h1_parser *p, int code, const char *name)
{
	if (p->err != 0)
		return p->err;
	p->err = code;
	p->err_name = name;
	p->err_text = name;
	for (size_t i = 0; i < ARRAY_SIZE(h1_errors); i++)
		if (strcmp(h1_errors[i].name, name) == 0)
			p->err_text = h1_errors[i].text;
	p->err_status = status_for(p, name);
	return code;
}

static int
fail_scan(struct h1_parser *p, const char *name)
{
	bool limit = strcmp(name, "H1_HEAD_TOO_LARGE") == 0 || strcmp(name, "H1_TRAILERS_TOO_LARGE") == 0;

	return fail(p, limit ? AMESH_ERR_TOOLONG : AMESH_ERR_INVALID, name);
}

static int
fail_lib(struct h1_parser *p, enum http_errno he)
{
	if (p->err != 0)
		return p->err;
	p->err = AMESH_ERR_INVALID;
	p->err_name = http_errno_name(he);
	p->err_text = http_errno_description(he);
	p->err_status = status_for(p, p->err_name);
	return p->err;
}

static int
fail_cb(struct h1_parser *p, int r)
{
	fail(p, r < 0 ? r : AMESH_ERR_INTERNAL, "H1_CALLBACK");
	return p->err;
}

static int
arena_put(struct h1_parser *p, struct arena *a, const char *s, size_t n)
{
	if (n == 0)
		return 0;
	if (a->len + n > ARENA_MAX)
		return fail(p, AMESH_ERR_TOOLONG, a->trailers ? "H1_TRAILERS_TOO_LARGE" : "H1_HEAD_TOO_LARGE");
	if (a->len + n > a->cap) {
		size_t cap = a->cap > 0 ? a->cap : 512;
		char *nb;

		while (cap < a->len + n)
			cap *= 2;
		if (cap > ARENA_MAX)
			cap = ARENA_MAX;
		nb = h1_test_realloc(a->buf, cap);
		if (nb == NULL)
			return fail(p, AMESH_ERR_NOMEM, "H1_NOMEM");
		a->buf = nb;
		a->cap = cap;
	}
	memcpy(a->buf + a->len, s, n);
	a->len += n;
	return 0;
}

/* Empties an arena for the next message; one that grew past the usual size is released. */
static void
arena_reset(struct arena *a)
{
	if (a->cap > ARENA_KEEP) {
		free(a->buf);
		a->buf = NULL;
		a->cap = 0;
	}
	a->len = 0;
	a->n = 0;
	a->last = P_NONE;
	a->url = a->url_len = a->reason = a->reason_len = 0;
}

/* A field that ended without a value callback gets an empty value. */
static int
value_fill(struct h1_parser *p, struct arena *a)
{
	struct field_off *f = a->n > 0 ? &a->f[a->n - 1] : NULL;

	if (f == NULL || f->value != NO_VALUE)
		return 0;
	f->value = (uint32_t)a->len;
	f->value_len = 0;
	return arena_put(p, a, "", 1);
}

/* Ends the string being received. */
static int
piece_end(struct h1_parser *p, struct arena *a)
{
	struct field_off *f = a->n > 0 ? &a->f[a->n - 1] : NULL;

	switch (a->last) {
	case P_NONE:
		return 0;
	case P_URL:
		a->url_len = (uint32_t)(a->len - a->url);
		break;
	case P_STATUS:
		a->reason_len = (uint32_t)(a->len - a->reason);
		break;
	case P_FIELD:
		f->name_len = (uint32_t)(a->len - f->name);
		f->value = NO_VALUE;
		break;
	case P_VALUE:
		while (a->len > f->value && (a->buf[a->len - 1] == ' ' || a->buf[a->len - 1] == '\t'))
			a->len--;
		f->value_len = (uint32_t)(a->len - f->value);
		break;
	}
	a->last = P_NONE;
	return arena_put(p, a, "", 1);
}

/* Appends n bytes to the string of kind k, ending the previous string when k changes. */
static int
piece(struct h1_parser *p, struct arena *a, enum piece k, const char *at, size_t n)
{
	int r;

	if (a->last != k) {
		if ((r = piece_end(p, a)) != 0)
			return r;
		if (k != P_VALUE && (r = value_fill(p, a)) != 0)
			return r;
		switch (k) {
		case P_URL:
			a->url = (uint32_t)a->len;
			break;
		case P_STATUS:
			a->reason = (uint32_t)a->len;
			break;
		case P_FIELD:
			if (a->n == H1_MAX_HEADERS) {
				return fail(p, AMESH_ERR_TOOLONG, a->trailers ? "H1_TOO_MANY_TRAILERS" : "H1_TOO_MANY_HEADERS");
			}
			a->f[a->n++] = (struct field_off){ .name = (uint32_t)a->len, .value = NO_VALUE };
			break;
		case P_VALUE:
			if (a->n == 0)
				return AMESH_ERR_INVALID; /* a value without a name: not from http_parser */
			a->f[a->n - 1].value = (uint32_t)a->len;
			break;
		case P_NONE:
			break;
		}
		a->last = k;
	}
	return arena_put(p, a, at, n);
}

/* Ends the last string of a section and points hdr at the fields. */
static int
section_end(struct h1_parser *p, struct arena *a, struct h1_header *hdr)
{
	int r;

	if ((r = piece_end(p, a)) != 0 || (r = value_fill(p, a)) != 0)
		return r;
	for (size_t i = 0; i < a->n; i++) {
		hdr[i].name = a->buf + a->f[i].name;
		hdr[i].name_len = a->f[i].name_len;
		hdr[i].value = a->buf + a->f[i].value;
		hdr[i].value_len = a->f[i].value_len;
	}
	return 0;
}

/* Where header callbacks go: the head, or after it the trailers (allocated when first needed). */
static struct arena *
fields_arena(struct h1_parser *p)
{
	if (!p->head_parsed)
		return &p->a;
	if (p->tr == NULL) {
		p->tr = zalloc(sizeof(*p->tr));
		if (p->tr == NULL) {
			fail(p, AMESH_ERR_NOMEM, "H1_NOMEM");
			return NULL;
		}
		p->tr->a.f = p->tr->f;
		p->tr->a.trailers = true;
	}
	return &p->tr->a;
}

/* True when the Transfer-Encoding fields hold exactly one coding, chunked. */
static bool
te_is_chunked(const struct h1_head *h)
{
	size_t codings = 0;
	bool chunked = false;

	for (size_t i = 0; i < h->n_headers; i++) {
		const char *s = h->headers[i].value;

		if (!streq_nocase(h->headers[i].name, "Transfer-Encoding"))
			continue;
		while (*s != '\0') {
			size_t n;

			s += strspn(s, " \t,");
			n = strcspn(s, ",");
			while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
				n--;
			if (n > 0) {
				codings++;
				chunked = name_eq("chunked", s, n);
			}
			s += n;
			s += strcspn(s, ",");
		}
	}
	return codings == 1 && chunked;
}

/* Fills p->head when the library has read a head; returns on_headers_complete's answer (0, 1 or 2)
 * or the negative code fail() recorded. */
static int
head_complete(struct h1_parser *p)
{
	http_parser *hp = &p->hp;
	struct arena *a = &p->a;
	struct h1_head *h = &p->head;
	size_t hosts = 0, te = 0;
	bool clen = (hp->flags & F_CONTENTLENGTH) != 0, conn_ok;
	int skip = 0, r;

	if ((r = section_end(p, a, p->hdr)) != 0)
		return r;
	p->head_parsed = true;
	memset(h, 0, sizeof(*h));
	h->request = p->kind == H1_REQUEST;
	h->version_major = hp->http_major;
	h->version_minor = hp->http_minor;
	h->headers = p->hdr;
	h->n_headers = a->n;
	for (size_t i = 0; i < a->n; i++) {
		if (streq_nocase(p->hdr[i].name, "Host")) {
			hosts++;
			h->host = p->hdr[i].value;
		} else if (streq_nocase(p->hdr[i].name, "Transfer-Encoding")) {
			te++;
		} else if (h->request && p->hdr[i].name_len > 17 &&
		    name_eq("Transfer-Encoding", p->hdr[i].name, 17)) {
			/* libhttp-parser 2.9 flags any name that begins so as a Transfer-Encoding
			 * (uses_transfer_encoding) and refuses the request, but only after this
			 * head went out: refused here, before anything of it is delivered. */
			return fail_lib(p, HPE_INVALID_TRANSFER_ENCODING);
		}
	}
	if (hp->http_major != 1) {
		return fail(p, AMESH_ERR_INVALID, "H1_BAD_VERSION");
	}
	if (te > 0 || (hp->flags & F_CHUNKED)) {
		if (hp->http_minor == 0) {
			return fail(p, AMESH_ERR_INVALID, "H1_TRANSFER_ENCODING_IN_HTTP10");
		}
		if (!te_is_chunked(h)) {
			return fail(p, AMESH_ERR_INVALID, "H1_UNSUPPORTED_TRANSFER_CODING");
		}
	}
	if (h->request) {
		h->method = http_method_str((enum http_method)hp->method);
		h->target = a->buf + a->url;
		h->target_len = a->url_len;
		h->path_len = strcspn(h->target, "?#");
		if (hosts > 1) {
			return fail(p, AMESH_ERR_INVALID, "H1_DUPLICATE_HOST");
		}
		if (hosts == 0 && hp->http_minor >= 1) {
			return fail(p, AMESH_ERR_INVALID, "H1_MISSING_HOST");
		}
		h->upgrade = hp->upgrade != 0;
	} else {
		int st = hp->status_code;
		bool to_head = p->expect != NULL && strcmp(p->expect, "HEAD") == 0;
		bool to_connect = p->expect != NULL && strcmp(p->expect, "CONNECT") == 0;

		if (st < 100) {
			return fail(p, AMESH_ERR_INVALID, "H1_BAD_STATUS_LINE");
		}
		h->status = st;
		h->reason = a->reason_len > 0 ? a->buf + a->reason : "";
		if (st == 101 || (to_connect && st >= 200 && st < 300)) {
			h->upgrade = true;
			skip = 2;
		} else if (st < 200 || st == 204 || st == 304 || to_head) {
			skip = 1;
		}
		if (st >= 200)
			p->expect = NULL;
	}
	h->content_length = clen ? hp->content_length : H1_NO_LENGTH;
	if (skip != 0)
		h->framing = H1_FRAMING_NONE;
	else if (hp->flags & F_CHUNKED)
		h->framing = H1_FRAMING_CHUNKED;
	else if (clen)
		h->framing = H1_FRAMING_LENGTH;
	else
		h->framing = h->request ? H1_FRAMING_NONE : H1_FRAMING_CLOSE;
	/* http_should_keep_alive() would not know about skip: the Connection part of it, then framing. */
	if (hp->http_minor >= 1)
		conn_ok = (hp->flags & F_CONNECTION_CLOSE) == 0;
	else
		conn_ok = (hp->flags & F_CONNECTION_KEEP_ALIVE) != 0;
	h->keep_alive = conn_ok && h->framing != H1_FRAMING_CLOSE;
	p->sc.body_known = true;
	p->sc.body_chunked = h->framing == H1_FRAMING_CHUNKED;
	return skip;
}

static int
cb_message_begin(http_parser *hp)
{
	struct h1_parser *p = hp->data;

	arena_reset(&p->a);
	if (p->tr != NULL)
		arena_reset(&p->tr->a);
	p->in_msg = true;
	p->head_parsed = false;
	return 0;
}

static int
cb_url(http_parser *hp, const char *at, size_t n)
{
	struct h1_parser *p = hp->data;

	return piece(p, &p->a, P_URL, at, n);
}

static int
cb_status(http_parser *hp, const char *at, size_t n)
{
	struct h1_parser *p = hp->data;

	return piece(p, &p->a, P_STATUS, at, n);
}

static int
cb_header_field(http_parser *hp, const char *at, size_t n)
{
	struct h1_parser *p = hp->data;
	struct arena *a = fields_arena(p);

	return a == NULL ? -1 : piece(p, a, P_FIELD, at, n);
}

static int
cb_header_value(http_parser *hp, const char *at, size_t n)
{
	struct h1_parser *p = hp->data;
	struct arena *a = fields_arena(p);

	return a == NULL ? -1 : piece(p, a, P_VALUE, at, n);
}

static int
cb_headers_complete(http_parser *hp)
{
	struct h1_parser *p = hp->data;
	int r = head_complete(p);

	if (r < 0)
		return -1;
	p->head_ready = true;
	http_parser_pause(hp, 1);
	return r;
}

static int
cb_body(http_parser *hp, const char *at, size_t n)
{
	struct h1_parser *p = hp->data;
	int r;

	if (p->cb.on_body != NULL && (r = p->cb.on_body(p->arg, (const uint8_t *)at, n)) != 0) {
		fail_cb(p, r);
		return -1;
	}
	if (p->paused)
		http_parser_pause(hp, 1);
	return 0;
}

static int
cb_message_complete(http_parser *hp)
{
	struct h1_parser *p = hp->data;

	if (p->tr != NULL && section_end(p, &p->tr->a, p->tr->hdr) != 0)
		return -1;
	p->msg_done = true;
	http_parser_pause(hp, 1);
	return 0;
}

/* http_parser's callbacks: any non-zero return stops the parser (they return -1 or the helpers'
 * negative code); why is in p->err, which h1_feed returns. */
static const http_parser_settings settings = {
	.on_message_begin = cb_message_begin,
	.on_url = cb_url,
	.on_status = cb_status,
	.on_header_field = cb_header_field,
	.on_header_value = cb_header_value,
	.on_headers_complete = cb_headers_complete,
	.on_body = cb_body,
	.on_message_complete = cb_message_complete,
};

int
h1_parser_new(enum h1_kind kind, const struct h1_callbacks *cb, void *arg, struct h1_parser **out)
{
	struct h1_parser *p;

	*out = NULL;
	p = zalloc(sizeof(*p));
	if (p == NULL)
		return AMESH_ERR_NOMEM;
	http_parser_init(&p->hp, kind == H1_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE);
	p->hp.data = p;
	p->kind = kind;
	if (cb != NULL)
		p->cb = *cb;
	p->arg = arg;
	p->a.f = p->f;
	p->sc = (struct scan){ .st = SC_START, .response = kind == H1_RESPONSE };
	p->err_name = p->err_text = "";
	*out = p;
	return 0;
}

void
h1_parser_free(struct h1_parser *p)
{
	if (p == NULL)
		return;
	if (p->tr != NULL)
		free(p->tr->a.buf);
	free(p->tr);
	free(p->a.buf);
	free(p);
}

static int
deliver_head(struct h1_parser *p)
{
	int r;

	p->head_ready = false;
	if (p->cb.on_head != NULL && (r = p->cb.on_head(p->arg, &p->head)) != 0)
		return fail_cb(p, r);
	return 0;
}

static int
deliver_end(struct h1_parser *p)
{
	int r;

	p->msg_done = false;
	p->in_msg = false;
	p->sc = (struct scan){ .st = SC_START, .response = p->kind == H1_RESPONSE };
	if (p->head.upgrade)
		p->paused = true;
	else if (!p->head.keep_alive)
		p->closed = true;
	if (p->tr != NULL && p->tr->a.n > 0 && p->cb.on_trailers != NULL &&
	    (r = p->cb.on_trailers(p->arg, p->tr->hdr, p->tr->a.n)) != 0)
		return fail_cb(p, r);
	if (p->cb.on_end != NULL && (r = p->cb.on_end(p->arg)) != 0)
		return fail_cb(p, r);
	return 0;
}

int
h1_feed(struct h1_parser *p, const uint8_t *data, size_t len, size_t *consumed)
{
	size_t off = 0;

	*consumed = 0;
	while (p->err == 0 && off < len && !p->paused) {
		struct scan ahead = p->sc;
		size_t good, got;
		enum http_errno he;

		if (p->closed) {
			off = len;
			break;
		}
		good = scan(&ahead, data + off, len - off);
		if (good == 0) {
			fail_scan(p, ahead.bad);
			break;
		}
		got = http_parser_execute(&p->hp, &settings, (const char *)data + off, good);
		he = HTTP_PARSER_ERRNO(&p->hp);
		scan(&p->sc, data + off, got);
		off += got;
		if (he == HPE_PAUSED) {
			http_parser_pause(&p->hp, 0);
		} else if (he != HPE_OK) {
			fail_lib(p, he);
			break;
		}
		if (p->head_ready)
			deliver_head(p);
		else if (p->msg_done)
			deliver_end(p);
		else if (got == 0 && he == HPE_OK)
			fail(p, AMESH_ERR_INTERNAL, "H1_INTERNAL");
	}
	*consumed = off;
	return p->err;
}

int
h1_finish(struct h1_parser *p)
{
	enum http_errno he;

	if (p->err != 0 || p->closed)
		return p->err;
	http_parser_execute(&p->hp, &settings, NULL, 0);
	he = HTTP_PARSER_ERRNO(&p->hp);
	if (he == HPE_PAUSED)
		http_parser_pause(&p->hp, 0);
	else if (he != HPE_OK)
		return fail_lib(p, he);
	if (p->msg_done)
		deliver_end(p);
	return p->err;
}

void
h1_pause(struct h1_parser *p, bool paused)
{
	p->paused = paused;
}

bool
h1_paused(const struct h1_parser *p)
{
	return p->paused;
}

bool
h1_in_message(const struct h1_parser *p)
{
	return p->in_msg;
}

void
h1_expect_response_to(struct h1_parser *p, const char *method)
{
	if (method == NULL)
		p->expect = NULL;
	else if (strcmp(method, "HEAD") == 0)
		p->expect = "HEAD";
	else if (strcmp(method, "CONNECT") == 0)
		p->expect = "CONNECT";
	else
		p->expect = NULL;
}

int
h1_error_status(const struct h1_parser *p)
{
	return p->err != 0 ? p->err_status : 0;
}

const char *
h1_error_name(const struct h1_parser *p)
{
	return p->err_name;
}

const char *
h1_error_text(const struct h1_parser *p)
{
	return p->err_text;
}

const char *
h1_header_get(const struct h1_head *h, const char *name)
{
	for (size_t i = 0; i < h->n_headers; i++)
		if (streq_nocase(h->headers[i].name, name))
			return h->headers[i].value;
	return NULL;
}

/* Serializer: pieces gathered in a stack buffer and handed to write() when it fills or at the end. */
struct out {
	const struct h1_writer *w;
	int err;
	size_t len;
	char buf[2048];
};

static void
out_flush(struct out *o)
{
	if (o->err == 0 && o->len > 0)
		o->err = o->w->write(o->w->arg, o->buf, o->len);
	o->len = 0;
}

static void
out_put(struct out *o, const void *d, size_t n)
{
	if (o->err != 0)
		return;
	if (o->len + n > sizeof(o->buf)) {
		out_flush(o);
		if (o->err == 0 && n > sizeof(o->buf)) {
			o->err = o->w->write(o->w->arg, d, n);
			return;
		}
	}
	if (o->err == 0) {
		memcpy(o->buf + o->len, d, n);
		o->len += n;
	}
}

static void
out_str(struct out *o, const char *s)
{
	out_put(o, s, strlen(s));
}

static void
out_field(struct out *o, const char *name, const char *value)
{
	out_str(o, name);
	out_put(o, ": ", 2);
	out_str(o, value);
	out_put(o, "\r\n", 2);
}

static bool
is_token(const char *s)
{
	if (*s == '\0')
		return false;
	for (; *s != '\0'; s++)
		if (!is_tchar((unsigned char)*s))
			return false;
	return true;
}

/* A field value or reason phrase: no control character but HTAB (RFC 9110 5.5). */
static bool
is_field_text(const char *s)
{
	for (; *s != '\0'; s++)
		if (is_ctl((unsigned char)*s) && *s != '\t')
			return false;
	return true;
}

static bool
is_hop_by_hop(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(hop_by_hop); i++)
		if (streq_nocase(name, hop_by_hop[i]))
			return true;
	return false;
}

/* Fields an edit may not name: the hop-by-hop ones and the framing one. */
static bool
is_reserved(const char *name)
{
	return is_hop_by_hop(name) || streq_nocase(name, "Content-Length");
}

static bool
fields_ok(const struct h1_field *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (f[i].name == NULL || f[i].value == NULL || !is_token(f[i].name) ||
		    !is_field_text(f[i].value) || is_reserved(f[i].name))
			return false;
	return true;
}

/*
 * Names of a head's fields in a small open-addressing table (at most H1_MAX_HEADERS in 256
 * slots), so the Connection option list is matched in linear time whatever its length.
 */
#define NSLOT 256

struct names {
	uint8_t first[NSLOT];  /* slot -> index of the first field of that name, or 0xff */
	uint8_t slot[H1_MAX_HEADERS];
	bool listed[NSLOT];    /* the name appears in a Connection field */
};

static uint32_t
name_hash(const char *s, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++) {
		h ^= lower((unsigned char)s[i]);
		h *= 16777619u;
	}
	return h;
}

/* The slot of a name: where it is, or the empty slot where it would go. */
static unsigned
names_find(const struct names *t, const struct h1_head *h, const char *s, size_t n)
{
	unsigned i = name_hash(s, n) % NSLOT;

	while (t->first[i] != 0xff && !name_eq(h->headers[t->first[i]].name, s, n))
		i = (i + 1) % NSLOT;
	return i;
}

static void
names_build(struct names *t, const struct h1_head *h)
{
	memset(t->first, 0xff, sizeof(t->first));
	memset(t->listed, 0, sizeof(t->listed));
	for (size_t i = 0; i < h->n_headers; i++) {
		const char *nm = h->headers[i].name;
		unsigned s = names_find(t, h, nm, strlen(nm));

		if (t->first[s] == 0xff)
			t->first[s] = (uint8_t)i;
		t->slot[i] = (uint8_t)s;
	}
	for (size_t i = 0; i < h->n_headers; i++) {
		const char *v = h->headers[i].value;

		if (!streq_nocase(h->headers[i].name, "Connection"))
			continue;
		while (*v != '\0') {
			size_t n;

			v += strspn(v, " \t,");
			n = strcspn(v, ",");
			while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
				n--;
			if (n > 0) {
				unsigned s = names_find(t, h, v, n);

				if (t->first[s] != 0xff)
					t->listed[s] = true;
			}
			v += n;
			v += strcspn(v, ",");
		}
	}
}

static bool
in_list(const char *name, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (list[i] != NULL && streq_nocase(name, list[i]))
			return true;
	return false;
}

int
h1_write_head(const struct h1_writer *w, const struct h1_head *h, const struct h1_edits *e)
{
	static const struct h1_edits none;
	struct out o = { .w = w };
	struct names t;
	const char *conn;
	bool no_body = false, no_length = false;
	char line[64];

	if (e == NULL)
		e = &none;
	/* Check everything first: an error writes nothing. */
	if (h->n_headers > H1_MAX_HEADERS || !fields_ok(e->set, e->n_set) || !fields_ok(e->add, e->n_add))
		return AMESH_ERR_INVALID;
	if (e->connection != NULL && (!is_field_text(e->connection) || e->connection[0] == '\0'))
		return AMESH_ERR_INVALID;
	for (size_t i = 0; i < h->n_headers; i++)
		if (!is_token(h->headers[i].name) || !is_field_text(h->headers[i].value))
			return AMESH_ERR_INVALID;
	if (h->request) {
		if (h->method == NULL || !is_token(h->method) || h->target == NULL || !str_is_word(h->target) ||
		    h->framing == H1_FRAMING_CLOSE)
			return AMESH_ERR_INVALID;
	} else {
		if (h->status < 100 || h->status > 999 || (h->reason != NULL && !is_field_text(h->reason)))
			return AMESH_ERR_INVALID;
		no_length = h->status < 200 || h->status == 204;
		no_body = no_length || h->status == 304;
		if (no_body && h->framing != H1_FRAMING_NONE)
			return AMESH_ERR_INVALID;
	}

	if (h->request) {
		out_str(&o, h->method);
		out_put(&o, " ", 1);
		out_str(&o, h->target);
		out_put(&o, " HTTP/1.1\r\n", 11);
	} else {
		const char *reason = h->reason;

		if (reason == NULL) {
			reason = http_status_str((enum http_status)h->status);
			if (reason[0] == '<') /* "<unknown>" */
				reason = "";
		}
		snprintf(line, sizeof(line), "HTTP/1.1 %03d ", h->status);
		out_str(&o, line);
		out_str(&o, reason);
		out_put(&o, "\r\n", 2);
	}

	names_build(&t, h);
	for (size_t i = 0; i < h->n_headers; i++) {
		const char *nm = h->headers[i].name;
		bool is_set = false;

		for (size_t j = 0; j < e->n_set; j++) {
			if (!streq_nocase(nm, e->set[j].name))
				continue;
			is_set = true;
			if (t.first[t.slot[i]] == i)
				out_field(&o, e->set[j].name, e->set[j].value);
		}
		if (is_set || in_list(nm, e->remove, e->n_remove))
			continue;
		if (!(e->keep_upgrade && streq_nocase(nm, "Upgrade")) &&
		    (t.listed[t.slot[i]] || is_reserved(nm)))
			continue;
		out_field(&o, nm, h->headers[i].value);
	}
	for (size_t j = 0; j < e->n_set; j++)
		if (t.first[names_find(&t, h, e->set[j].name, strlen(e->set[j].name))] == 0xff)
			out_field(&o, e->set[j].name, e->set[j].value);
	for (size_t j = 0; j < e->n_add; j++)
		out_field(&o, e->add[j].name, e->add[j].value);

	switch (h->framing) {
	case H1_FRAMING_LENGTH:
		snprintf(line, sizeof(line), "Content-Length: %llu\r\n", (unsigned long long)h->content_length);
		out_str(&o, line);
		break;
	case H1_FRAMING_NONE:
		/* An answer to HEAD, or a 304, says how long the body would have been. */
		if (!h->request && !no_length && h->content_length != H1_NO_LENGTH) {
			snprintf(line, sizeof(line), "Content-Length: %llu\r\n",
			    (unsigned long long)h->content_length);
			out_str(&o, line);
		}
		break;
	case H1_FRAMING_CHUNKED:
		out_str(&o, "Transfer-Encoding: chunked\r\n");
		break;
	case H1_FRAMING_CLOSE:
		break;
	}
	conn = e->connection;
	if (conn == NULL && e->keep_upgrade)
		conn = "upgrade";
	if (conn == NULL && h->framing == H1_FRAMING_CLOSE)
		conn = "close";
	if (conn != NULL)
		out_field(&o, "Connection", conn);
	out_put(&o, "\r\n", 2);
	out_flush(&o);
	return o.err;
}

enum h1_framing
h1_forward_framing(const struct h1_head *h, bool receiver_http11)
{
	switch (h->framing) {
	case H1_FRAMING_CHUNKED:
	case H1_FRAMING_CLOSE:
		return h->request || receiver_http11 ? H1_FRAMING_CHUNKED : H1_FRAMING_CLOSE;
	default:
		return h->framing;
	}
}

size_t
h1_chunk_header(char buf[H1_CHUNK_HEADER_MAX], size_t len)
{
	int n = snprintf(buf, H1_CHUNK_HEADER_MAX, "%zx\r\n", len);

	return n > 0 ? (size_t)n : 0;
}

int
h1_write_chunk(const struct h1_writer *w, const void *data, size_t len)
{
	struct out o = { .w = w };
	char hb[H1_CHUNK_HEADER_MAX];

	if (len == 0)
		return 0;
	out_put(&o, hb, h1_chunk_header(hb, len));
	out_put(&o, data, len);
	out_put(&o, "\r\n", 2);
	out_flush(&o);
	return o.err;
}

int
h1_write_last_chunk(const struct h1_writer *w, const struct h1_header *trailers, size_t n)
{
	struct out o = { .w = w };

	for (size_t i = 0; i < n; i++)
		if (!is_token(trailers[i].name) || !is_field_text(trailers[i].value))
			return AMESH_ERR_INVALID;
	out_put(&o, "0\r\n", 3);
	for (size_t i = 0; i < n; i++) {
		const char *nm = trailers[i].name;

		if (is_hop_by_hop(nm) || streq_nocase(nm, "Content-Length") || streq_nocase(nm, "Host"))
			continue;
		out_field(&o, nm, trailers[i].value);
	}
	out_put(&o, "\r\n", 2);
	out_flush(&o);
	return o.err;
}
