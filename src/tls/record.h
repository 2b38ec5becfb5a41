/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The TLS 1.2 AEAD record layer that takes over from mbedTLS once a handshake is done: keys from
 * mbedTLS's key block, the sequence numbers it reached, and one small ops table per direction so
 * that another implementation (kTLS) can take the same keys.
 *
 * kTLS, for a kernel that has it (this project's build machines do not, so it is not built): a
 * kTLS record_ops would, at record_dir_init, setsockopt(fd, SOL_TCP, TCP_ULP, "tls") once and
 * then setsockopt(fd, SOL_TLS, TLS_TX or TLS_RX, &crypto_info) with struct
 * tls12_crypto_info_aes_gcm_256 { key = s->key, salt = s->iv[0..4), iv = the explicit nonce
 * (htobe64(s->seq)), rec_seq = htobe64(s->seq) } or tls12_crypto_info_chacha20_poly1305
 * { key, iv = s->iv, rec_seq }. Its seal and open are then the identity (the socket seals and
 * opens) and record types travel in TLS_SET_RECORD_TYPE / TLS_GET_RECORD_TYPE cmsgs: tls.c would
 * write plaintext to the socket instead of sealed records (record_ops.kernel says which). The
 * limits, alerts and close_notify below stay as they are.
 */
#ifndef AMESH_TLS_RECORD_H
#define AMESH_TLS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECORD_HDR 5
#define RECORD_MAX_PLAIN 16384
/* RFC 5246 6.2.3: TLSCiphertext.length may exceed the plaintext limit by at most 2048. */
#define RECORD_MAX_FRAGMENT (RECORD_MAX_PLAIN + 2048)
#define RECORD_TAG 16
/* AES-GCM's explicit nonce (RFC 5288); ChaCha20-Poly1305 has none (RFC 7905). */
#define RECORD_EXPLICIT_NONCE 8
/* The most a sealed record adds to its plaintext, header included. */
#define RECORD_MAX_OVERHEAD (RECORD_HDR + RECORD_EXPLICIT_NONCE + RECORD_TAG)

enum record_type {
	RECORD_CHANGE_CIPHER_SPEC = 20,
	RECORD_ALERT = 21,
	RECORD_HANDSHAKE = 22,
	RECORD_APPLICATION_DATA = 23,
};

/* TLS alert descriptions this layer sends or names. */
enum record_alert {
	RECORD_ALERT_CLOSE_NOTIFY = 0,
	RECORD_ALERT_UNEXPECTED_MESSAGE = 10,
	RECORD_ALERT_BAD_RECORD_MAC = 20,
	RECORD_ALERT_RECORD_OVERFLOW = 22,
	RECORD_ALERT_DECODE_ERROR = 50,
	RECORD_ALERT_PROTOCOL_VERSION = 70,
	RECORD_ALERT_INTERNAL_ERROR = 80,
	RECORD_ALERT_NO_RENEGOTIATION = 100,
};

enum record_cipher {
	RECORD_AES_128_GCM,
	RECORD_AES_256_GCM,
	RECORD_CHACHA20_POLY1305,
};

/* One direction's keys and state: what a kTLS crypto_info carries too. */
struct record_secret {
	enum record_cipher cipher;
	uint8_t key[32];
	size_t key_len;  /* 16 or 32 */
	uint8_t iv[12];  /* AES-GCM: the 4-byte implicit salt, then zeros; ChaCha20: all 12 */
	uint64_t seq;    /* the next record's sequence number */
};

struct record_dir;

struct record_ops {
	const char *name;  /* "openssl" */
	bool kernel;       /* the socket seals and opens (kTLS); seal/open pass bytes through */
	/* Seals in[0..len) then in2[0..len2) as one record of type with sequence number seq into
	 * out (room for RECORD_HDR + len + len2 + record_overhead(d)); sets *out_len. Returns 0 or
	 * a negative code. */
	int (*seal)(struct record_dir *d, uint64_t seq, uint8_t type, const uint8_t *in,
	    size_t len, const uint8_t *in2, size_t len2, uint8_t *out, size_t *out_len);
	/* Opens, in place, the fragment of the record whose 5-byte header is hdr; the plaintext is
	 * left at frag + *plain_off, *plain_len bytes. Returns 0, or AMESH_ERR_INVALID when the
	 * record does not authenticate. */
	int (*open)(struct record_dir *d, uint64_t seq, const uint8_t hdr[RECORD_HDR],
	    uint8_t *frag, size_t len, size_t *plain_off, size_t *plain_len);
	void (*destroy)(struct record_dir *d);
};

/* One direction of a connection's records. */
struct record_dir {
	const struct record_ops *ops;
	void *impl;
	enum record_cipher cipher;
	uint64_t seq;  /* next sequence number */
	bool spent;    /* the last sequence number (2^64 - 1) was used: no record may follow */
};

/* True when this build has a fast record layer (configure found OpenSSL's libcrypto). */
bool record_available(void);
/* Fetches the ciphers once, at start-up, before any connection (record.c says why); 0 or
 * AMESH_ERR_NOMEM (then each connection fetches its own, as before). */
int record_init(void);
/* The cipher of an mbedTLS ciphersuite id, or -1 when this layer does not do it. */
int record_cipher_of_suite(int suite_id);
/* Bytes a record of this cipher adds to its plaintext, without the header. */
size_t record_overhead(enum record_cipher cipher);

/*
 * Splits mbedTLS's TLS 1.2 key block (client_write_key, server_write_key, client_write_IV,
 * server_write_IV for an AEAD: no MAC keys) into our write (tx) and read (rx) secrets. keylen and
 * ivlen are what mbedTLS's export callback says (AES-GCM: ivlen 4, the implicit salt; ChaCha20:
 * 12). Returns 0 or AMESH_ERR_INVALID when the lengths do not fit the cipher.
 */
int record_secrets_from_key_block(enum record_cipher cipher, bool is_server, const uint8_t *kb,
    size_t maclen, size_t keylen, size_t ivlen, struct record_secret *tx,
    struct record_secret *rx);

/* Sets up one direction (sealing when seal, else opening) from s. Returns 0 or a negative code
 * (AMESH_ERR_NOMEM, AMESH_ERR_INVALID: no implementation). */
int record_dir_init(struct record_dir *d, const struct record_secret *s, bool seal);
/* Frees what record_dir_init made; safe on a zeroed or already freed d. */
void record_dir_free(struct record_dir *d);

/*
 * Seals len (<= RECORD_MAX_PLAIN) bytes as one record into out, which must have room for
 * RECORD_HDR + len + record_overhead(); advances the sequence number. Returns the bytes written,
 * AMESH_ERR_RANGE when the sequence numbers are used up (close instead), or another negative code.
 */
int record_seal(struct record_dir *d, uint8_t type, const uint8_t *in, size_t len, uint8_t *out,
    size_t cap);
/* The same for the plaintext in[0..len) followed by in2[0..len2) (len + len2 <= RECORD_MAX_PLAIN):
 * a record gathered from two buffers without copying them together first. */
int record_seal2(struct record_dir *d, uint8_t type, const uint8_t *in, size_t len,
    const uint8_t *in2, size_t len2, uint8_t *out, size_t cap);

/*
 * Looks at the start of a stream of records. Returns 0 when buf does not yet hold a whole record,
 * the length of the first record (header included) when it does, or minus a record_alert (a
 * value in -1..-255) when the header is not acceptable: record_overflow for a fragment over
 * RECORD_MAX_FRAGMENT, protocol_version for a version other than TLS 1.2, unexpected_message for an
 * unknown type.
 */
int record_frame(const uint8_t *buf, size_t len);

/*
 * Opens the whole record rec (rec_len bytes, from record_frame) in place and advances the sequence
 * number. On success returns 0 with the type in *type and the plaintext at rec + *plain_off,
 * *plain_len bytes. On failure returns minus the alert to send: bad_record_mac (does not
 * authenticate, or too short to), record_overflow (plaintext over RECORD_MAX_PLAIN),
 * internal_error (sequence numbers used up).
 */
int record_open(struct record_dir *d, uint8_t *rec, size_t rec_len, uint8_t *type,
    size_t *plain_off, size_t *plain_len);

#endif
