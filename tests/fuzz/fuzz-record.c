/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: the TLS record layer (src/tls/record.c) from arbitrary bytes. The first byte
 * picks the cipher; the rest is read as a stream of records from a peer, as tls.c reads them (a
 * header accepted by record_frame lies within the buffer and the size limits; a record that
 * opens has plaintext within its fragment), then sealed as one record and opened again, which
 * must give the same bytes back. */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tls/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t buf[65536 + RECORD_MAX_OVERHEAD];

static void
secret(struct record_secret *s, enum record_cipher c)
{
	memset(s, 0, sizeof(*s));
	s->cipher = c;
	s->key_len = c == RECORD_AES_128_GCM ? 16 : 32;
	memset(s->key, 0x42, s->key_len);
	memset(s->iv, 0x24, c == RECORD_CHACHA20_POLY1305 ? 12 : 4);
	s->seq = 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct record_secret s;
	struct record_dir tx, rx;
	size_t off = 0, len, plen, poff;
	uint8_t type;
	int n;

	if (size < 1 || size > 65536 || !record_available())
		return 0;
	secret(&s, (enum record_cipher)(data[0] % 3));
	data++;
	size--;
	if (record_dir_init(&tx, &s, true) != 0 || record_dir_init(&rx, &s, false) != 0)
		abort();
	memcpy(buf, data, size);
	while ((n = record_frame(buf + off, size - off)) > 0) {
		if ((size_t)n > size - off || (size_t)n > RECORD_HDR + RECORD_MAX_FRAGMENT)
			abort();
		if (record_open(&rx, buf + off, (size_t)n, &type, &poff, &plen) == 0 &&
		    (poff + plen > (size_t)n || plen > RECORD_MAX_PLAIN))
			abort();
		off += (size_t)n;
	}
	if (n < -255)
		abort();

	len = size < RECORD_MAX_PLAIN ? size : RECORD_MAX_PLAIN;
	record_dir_free(&rx);
	record_dir_init(&rx, &s, false);
	n = record_seal(&tx, RECORD_APPLICATION_DATA, data, len, buf, sizeof(buf));
	if (n != (int)(RECORD_HDR + len + record_overhead(s.cipher)) ||
	    record_frame(buf, (size_t)n) != n ||
	    record_open(&rx, buf, (size_t)n, &type, &poff, &plen) != 0 ||
	    type != RECORD_APPLICATION_DATA || plen != len || memcmp(buf + poff, data, len) != 0)
		abort();
	record_dir_free(&tx);
	record_dir_free(&rx);
	return 0;
}
