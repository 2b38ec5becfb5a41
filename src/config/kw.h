/* SPDX-License-Identifier: Apache-2.0 */
/* Keyword tables: one row per key says its section, type, where it is stored and its default. */
#ifndef AMESH_CONFIG_KW_H
#define AMESH_CONFIG_KW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/parse.h"

enum kw_type {
	KW_STRING,    /* char *, non-empty */
	KW_NAME,      /* char *, DNS-1123 label: lower-case letters, digits, '-', at most 63 */
	KW_HOSTNAME,  /* char *, DNS name */
	KW_PATH,      /* char *, resolved against the file's directory */
	KW_PORT,      /* uint16_t */
	KW_SOCKADDR,  /* struct sockaddr_storage */
	KW_DURATION,  /* uint64_t milliseconds */
	KW_SIZE,      /* uint64_t bytes */
	KW_UINT,      /* uint64_t within [min, max] */
	KW_BOOL,      /* bool */
	KW_ENUM,      /* int: index into enums */
	KW_IP,        /* struct ip_addr */
	KW_IP_LIST,   /* struct ip_list */
	KW_PREFIX_LIST, /* struct prefix_list */
	KW_PORT_LIST, /* struct port_list */
	KW_PORTMAP_LIST, /* struct portmap_list: "port" or "port:target" */
	KW_LABELS,    /* struct label_list: "k=v, k=v" */
	KW_STR_LIST,  /* struct str_list */
	KW_PATTERN_LIST, /* struct str_list of match patterns: exact, "prefix*", "*suffix", "*" */
	KW_HEADER_LIST,  /* struct label_list: "name: value, name: value" */
	KW_WEIGHTED_LIST, /* struct weighted_list: "name [weight], ..."; "KIND/name" when enums */
	KW_ENUM_LIST, /* struct str_list whose items are from enums */
	KW_HEADER_NAME_LIST, /* struct str_list of HTTP header names, lower-cased */
};

struct ip_list { struct ip_addr *v; size_t n; };
struct prefix_list { struct ip_prefix *v; size_t n; };
struct port_list { uint16_t *v; size_t n; };
struct portmap { uint16_t port, target; };
struct portmap_list { struct portmap *v; size_t n; };
struct label { char *key, *value; };
struct label_list { struct label *v; size_t n; };
struct str_list { char **v; size_t n; };
struct weighted { char *name; uint32_t weight; };
struct weighted_list { struct weighted *v; size_t n; };

struct kw {
	const char *section; /* amesh.conf: section; registry: kind */
	const char *key;
	enum kw_type type;
	size_t off;                 /* offset of the field in the section's struct */
	const char *dflt;           /* default, in config syntax; NULL for none */
	uint64_t min, max;          /* KW_UINT bounds; KW_DURATION minimum (ms) in min;
	                               KW_WEIGHTED_LIST weight bound in max */
	const char *const *enums;   /* KW_ENUM, KW_ENUM_LIST: NULL-terminated values;
	                               KW_WEIGHTED_LIST: the KIND prefixes allowed, or NULL */
	bool required;
};

/* Lists are capped: a longer one is an error, so a typo cannot build a huge table. */
#define KW_LIST_MAX 1024

/*
 * Parses value for kw and stores it at base + kw->off, replacing what was there.
 * basedir resolves relative KW_PATH values. Returns 0, or AMESH_ERR_INVALID with the reason
 * written to why.
 */
int kw_set(const struct kw *kw, void *base, const char *value, const char *basedir,
    char *why, size_t whylen);
/*
 * For list types: parses value and appends its items to the list already at base + kw->off, so a
 * long list can be written over several lines (Debian's inih limits a line to 198 bytes).
 * Duplicates across lines are caught as within one line. Same returns as kw_set.
 */
int kw_append(const struct kw *kw, void *base, const char *value, char *why, size_t whylen);
/* True for the list types (the ones kw_append takes). */
bool kw_is_list(enum kw_type t);
/* Frees what kw_set allocated for one field and zeroes it. */
void kw_free(const struct kw *kw, void *base);
/* Human name of a type, for messages and docs ("duration", "port"). */
const char *kw_type_name(enum kw_type t);

/* Checks a pattern: exact, "prefix*", "*suffix" or "*". Returns NULL or the reason. */
const char *kw_pattern_check(const char *p);
/* True if s matches pattern p (exact, "prefix*", "*suffix", "*"). */
bool kw_pattern_match(const char *p, const char *s);
/* True if s is a DNS-1123 label (what Kubernetes allows for namespaces and names). */
bool kw_is_name(const char *s);
/* True if s is a DNS-1123 subdomain (dot-separated labels, at most 253). */
bool kw_is_hostname(const char *s);

#endif
