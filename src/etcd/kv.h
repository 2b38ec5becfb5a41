/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON of etcd's v3 gateway: requests built and responses read, nothing sent. Keys and values
 * travel base64-encoded; 64-bit numbers come as JSON strings ("revision": "42"), which these
 * functions accept as well as numbers. Pure functions, so tests/unit checks them without etcd.
 */
#ifndef AMESH_ETCD_KV_H
#define AMESH_ETCD_KV_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Base64 of n bytes at p (malloc'd, NUL-terminated). */
char *etcd_b64(const void *p, size_t n);
/* Decodes s into *out (malloc'd, NUL-terminated, *len without the NUL). 0 or AMESH_ERR_INVALID. */
int etcd_unb64(const char *s, char **out, size_t *len);
/* The range_end that selects every key starting with prefix: prefix with its last byte + 1. */
char *etcd_prefix_end(const char *prefix);
/* A 64-bit field: a JSON integer or a string of digits; absent is 0; anything else -1. */
int64_t etcd_int(const json_t *v);

struct etcd_kv {
	char *key;
	char *value;          /* NUL-terminated (the value may hold NULs: use vlen) */
	size_t vlen;
	int64_t mod_revision;
};

struct etcd_range {
	int64_t revision;     /* the store's revision the answer was read at */
	struct etcd_kv *kvs;
	size_t n;
	bool more;            /* etcd left keys out (the limit) */
};

/* {"key": b64(key), "range_end": b64(range_end), "revision": rev (0: latest)} (malloc'd). */
char *etcd_range_request(const char *key, const char *range_end, int64_t revision, size_t limit);
/*
 * Reads a range answer. At most max_keys keys and max_value bytes per value, else
 * AMESH_ERR_TOOLONG; a malformed answer is AMESH_ERR_INVALID; why says which. out is zeroed
 * first; free it with etcd_range_free even on failure.
 */
int etcd_range_parse(const json_t *resp, struct etcd_range *out, size_t max_keys,
    size_t max_value, char *why, size_t whylen);
void etcd_range_free(struct etcd_range *r);

/* {"create_request": {"key", "range_end", "start_revision"}} (malloc'd). */
char *etcd_watch_request(const char *key, const char *range_end, int64_t start_revision);

struct etcd_watch_msg {
	int64_t revision;          /* header.revision */
	bool created, canceled;
	int64_t compact_revision;  /* > 0: the start revision was compacted; reload whole */
	size_t nevents;
	int64_t event_revision;    /* the newest mod_revision among the events (0: none) */
	char reason[200];          /* cancel_reason or the error's message */
};

/* One event of a watch message: a put (value set) or a delete. */
struct etcd_event {
	bool deleted;
	struct etcd_kv kv;         /* a delete has no value (NULL, vlen 0) */
};

/*
 * The events of a watch message, in order (etcd never splits one revision's events over two
 * messages). At most max_value bytes per value. 0 with *out (free with etcd_events_free) and *n;
 * AMESH_ERR_INVALID or AMESH_ERR_TOOLONG with why.
 */
int etcd_watch_events(const json_t *msg, size_t max_value, struct etcd_event **out, size_t *n,
    char *why, size_t whylen);
void etcd_events_free(struct etcd_event *ev, size_t n);

/* Reads one message of a watch stream ({"result": {...}} or {"error": {...}}). 0 or
 * AMESH_ERR_INVALID with why. */
int etcd_watch_parse(const json_t *msg, struct etcd_watch_msg *out, char *why, size_t whylen);

#endif
