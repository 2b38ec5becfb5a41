/* SPDX-License-Identifier: Apache-2.0 */
/* HTTP/1.1 message codec for the L7 proxy: an incremental, bounded parser on libhttp-parser and a head serializer. */
#ifndef AMESH_L7_HTTP1_H
#define AMESH_L7_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A message head (start line, header fields, the empty line; empty lines before it count) is at
 * most this many bytes... */
#define H1_MAX_HEAD 65536
/* ...and holds at most this many header fields. The same bounds apply to a chunked body's trailers. */
#define H1_MAX_HEADERS 100
/* h1_head.content_length when the message has no Content-Length. */
#define H1_NO_LENGTH UINT64_MAX
/* Room h1_chunk_header() needs: 16 hex digits, CRLF and a NUL. */
#define H1_CHUNK_HEADER_MAX 19

enum h1_kind { H1_REQUEST, H1_RESPONSE };

/* How the body is delimited, as received (parser) or to be sent (serializer). */
enum h1_framing {
	H1_FRAMING_NONE,    /* no body: GET without length, 1xx, 204, 304, answer to HEAD, upgrade */
	H1_FRAMING_LENGTH,  /* Content-Length bytes */
	H1_FRAMING_CHUNKED, /* chunked transfer coding (HTTP/1.1 only) */
	H1_FRAMING_CLOSE,   /* responses only: the body runs until the connection closes */
};

/* A header field. The parser's strings are NUL-terminated; the lengths exclude the NUL. */
struct h1_header {
	const char *name; /* as sent (case kept); compare case-insensitively */
	const char *value; /* leading and trailing blanks removed */
	size_t name_len, value_len;
};

struct h1_head {
	bool request;
	/* Requests: method ("GET", static string), request target as sent ("/p?q", "*", "host:port"
	 * for CONNECT, or an absolute URI) and how many bytes of it are the path (up to '?' or '#'). */
	const char *method;
	const char *target;
	size_t target_len, path_len;
	/* Responses: status code and reason phrase (may be ""; NULL in a head built by a caller
	 * means the standard phrase for the code). */
	int status;
	const char *reason;
	unsigned version_major, version_minor; /* of the received message; output is always 1.1 */
	const struct h1_header *headers;
	size_t n_headers;
	const char *host; /* requests: the Host value (NULL only for HTTP/1.0 without one) */
	enum h1_framing framing;
	uint64_t content_length; /* the Content-Length value, even when framing is NONE (HEAD, 304) */
	bool keep_alive; /* the connection may carry another message after this one */
	bool upgrade;    /* Upgrade/CONNECT request, or 101 / 2xx-to-CONNECT response: the parser pauses
	                  * after this message, and the bytes that follow it belong to another protocol */
};

/*
 * Parser callbacks. Each returns 0, or a negative code (AMESH_ERR_* or -errno) that stops parsing:
 * h1_feed() then returns that code and the parser stays failed. on_trailers is optional. A
 * callback may call h1_pause(); it must not call h1_feed() or h1_finish(), nor free the parser.
 *
 * The head and every string in it stay valid until the next message begins, that is after on_end
 * returned and h1_feed() goes on (so a caller that pauses in on_head or on_end may keep it).
 * on_body gets the body as it arrives, de-chunked, in pieces that are only valid during the call.
 */
struct h1_callbacks {
	int (*on_head)(void *arg, const struct h1_head *head);
	int (*on_body)(void *arg, const uint8_t *data, size_t len);
	int (*on_trailers)(void *arg, const struct h1_header *trailers, size_t n);
	int (*on_end)(void *arg);
};

struct h1_parser;

/* Makes a parser for requests or responses; *out is NULL on error. Returns 0 or AMESH_ERR_NOMEM. */
int h1_parser_new(enum h1_kind kind, const struct h1_callbacks *cb, void *arg, struct h1_parser **out);
/* Accepts NULL. Never from inside one of its callbacks. */
void h1_parser_free(struct h1_parser *p);

/*
 * Parses len bytes, calling the callbacks, and sets *consumed to how many it took. Fewer than len
 * are taken when the parser is paused (h1_pause(), or after an upgrade message): the caller keeps
 * the rest and feeds it again after h1_pause(p, false). Messages follow one another on a
 * keep-alive connection (pipelining): after on_end the next bytes start the next message. After
 * a message that is not keep_alive, further bytes are consumed and dropped without events.
 *
 * Returns 0, a callback's code, AMESH_ERR_NOMEM, AMESH_ERR_TOOLONG (head or trailers over
 * H1_MAX_HEAD or H1_MAX_HEADERS) or AMESH_ERR_INVALID (malformed message). After an error the
 * parser is dead: every later call returns the same code; h1_error_status() and h1_error_name()
 * say what to answer and why.
 */
int h1_feed(struct h1_parser *p, const uint8_t *data, size_t len, size_t *consumed);
/* The peer closed its side: ends a body delimited by close (on_end), fails a message cut short
 * (AMESH_ERR_INVALID, reason HPE_INVALID_EOF_STATE). Returns 0 between messages. */
int h1_finish(struct h1_parser *p);

/* Stops (true) or resumes (false) consumption; takes effect at once, even inside a callback. */
void h1_pause(struct h1_parser *p, bool paused);
bool h1_paused(const struct h1_parser *p);
/* True from the first byte of a message to its end (false between keep-alive messages). */
bool h1_in_message(const struct h1_parser *p);

/* Response parsers: the method of the request the next response answers ("HEAD": no body;
 * "CONNECT": a 2xx is an upgrade). Applies to the next final (non-1xx) response only. */
void h1_expect_response_to(struct h1_parser *p, const char *method);

/* After an error: the HTTP status to answer (requests: 400, 431, 501, 505, or 500 when a callback
 * or an allocation failed; responses: 502; 0 before any error), the reason's name
 * (libhttp-parser's "HPE_*" errno name, or one of this module's "H1_*": H1_HEAD_TOO_LARGE,
 * H1_TOO_MANY_HEADERS, H1_OBS_FOLD, H1_BAD_HEADER_NAME, H1_BAD_HEADER_VALUE, H1_BAD_STATUS_LINE,
 * H1_LF_EXPECTED, H1_BAD_CHUNK, H1_TRAILERS_TOO_LARGE, H1_TOO_MANY_TRAILERS,
 * H1_UNSUPPORTED_TRANSFER_CODING, H1_TRANSFER_ENCODING_IN_HTTP10, H1_MISSING_HOST,
 * H1_DUPLICATE_HOST, H1_BAD_VERSION, H1_NOMEM, H1_CALLBACK, H1_INTERNAL) and a sentence for logs.
 * Static strings; "" before any error. */
int h1_error_status(const struct h1_parser *p);
const char *h1_error_name(const struct h1_parser *p);
const char *h1_error_text(const struct h1_parser *p);

/* First value of a header field by name, case-insensitive; NULL when absent. */
const char *h1_header_get(const struct h1_head *h, const char *name);

/*
 * Output: the serializer calls write() with pieces of the message in order; a piece is only
 * valid during the call (the caller copies or sends it). write() returns 0 or a negative code
 * that stops the serializer, which returns it. Nothing is buffered across calls.
 */
struct h1_writer {
	int (*write)(void *arg, const void *data, size_t len);
	void *arg;
};

/* A header field to set or add: NUL-terminated name (a token) and value (no CR, LF or NUL). */
struct h1_field {
	const char *name;
	const char *value;
};

/* Changes applied while forwarding a head; every member may be empty, and the struct NULL. */
struct h1_edits {
	const struct h1_field *set; /* replaces every field of that name (at the first one's place) */
	size_t n_set;
	const struct h1_field *add; /* appended after the received fields */
	size_t n_add;
	const char *const *remove; /* names of fields to drop */
	size_t n_remove;
	const char *connection; /* value of a Connection field to send ("close", "keep-alive"); NULL: none */
	bool keep_upgrade;      /* forward Upgrade fields (with connection = "upgrade") */
};

/*
 * Writes the head of h for forwarding: "METHOD TARGET HTTP/1.1" or "HTTP/1.1 STATUS REASON",
 * then h's fields in order, minus the hop-by-hop ones (Connection, Keep-Alive, Proxy-Connection,
 * TE, Trailer, Transfer-Encoding, Upgrade and every name the Connection fields list; RFC 9110
 * 7.6.1) and minus Content-Length, with the edits applied (edited fields are never dropped as
 * hop-by-hop), then the framing of h->framing: "Content-Length: h->content_length" (LENGTH; also
 * NONE with a known length, for answers to HEAD and 304), "Transfer-Encoding: chunked" (CHUNKED),
 * or "Connection: close" (CLOSE, unless e->connection says otherwise), then the empty line.
 * To change the framing, pass a copy of the head: struct h1_head out = *h; out.framing = ...
 *
 * Returns 0, write()'s code, or AMESH_ERR_INVALID (nothing written) for a bad start line, an
 * edit with a bad name or value or naming a hop-by-hop or framing field, a body framing a
 * 1xx/204/304 response cannot have, or CLOSE framing on a request.
 */
int h1_write_head(const struct h1_writer *w, const struct h1_head *h, const struct h1_edits *e);

/* The framing to forward a received head with: LENGTH and NONE as received, a chunked or
 * until-close body as chunked when the receiver speaks HTTP/1.1, else (a response to an
 * HTTP/1.0 client) until close. */
enum h1_framing h1_forward_framing(const struct h1_head *h, bool receiver_http11);

/* One chunk of a chunked body: "SIZE\r\n" DATA "\r\n". len 0 writes nothing (a zero-size chunk
 * would end the body). Returns 0 or write()'s code. */
int h1_write_chunk(const struct h1_writer *w, const void *data, size_t len);
/* The size line alone, into buf; returns its length. For callers that send DATA and "\r\n" by
 * reference (scatter write) instead of through h1_write_chunk(). */
size_t h1_chunk_header(char buf[H1_CHUNK_HEADER_MAX], size_t len);
/* Ends a chunked body: "0\r\n", the trailers (hop-by-hop, Content-Length and Host ones dropped;
 * trailers may be NULL), "\r\n". Returns 0, write()'s code or AMESH_ERR_INVALID (bad trailer,
 * nothing written). */
int h1_write_last_chunk(const struct h1_writer *w, const struct h1_header *trailers, size_t n);

/* Tests only: the allocator behind every allocation of this module (realloc), to inject failures. */
extern void *(*h1_test_realloc)(void *ptr, size_t size);

#endif
