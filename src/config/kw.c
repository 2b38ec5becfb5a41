/* SPDX-License-Identifier: Apache-2.0 */
/* Typed storage for keyword tables: parse a value by its row, free it by its row. */
#include "config.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/kw.h"
#include "core/err.h"
#include "core/util.h"

#define FIELD(base, kw, type) ((type *)(void *)((char *)(base) + (kw)->off))

static int
fail(char *why, size_t whylen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
fail(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return AMESH_ERR_INVALID;
}

bool
kw_is_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!(islower((unsigned char)c) || isdigit((unsigned char)c) || c == '-'))
			return false;
	}
	return s[0] != '-' && s[n - 1] != '-';
}

bool
kw_is_hostname(const char *s)
{
	char label[64];
	size_t n = strlen(s);
	const char *p = s;

	if (n == 0 || n > 253)
		return false;
	while (*p != '\0') {
		size_t l = strcspn(p, ".");

		if (l == 0 || l > 63)
			return false;
		memcpy(label, p, l);
		label[l] = '\0';
		if (!kw_is_name(label))
			return false;
		p += l;
		if (*p == '.' && *++p == '\0')
			return false;
	}
	return true;
}

const char *
kw_pattern_check(const char *p)
{
	size_t n = strlen(p);
	const char *star = strchr(p, '*');

	if (n == 0)
		return "empty pattern";
	for (const char *c = p; *c != '\0'; c++)
		if (isspace((unsigned char)*c) || !isprint((unsigned char)*c))
			return "pattern contains a blank or control character";
	if (star == NULL || n == 1)
		return NULL;
	if (strchr(star + 1, '*') != NULL)
		return "pattern may hold one '*', at its start or end";
	if (star != p && star != p + n - 1)
		return "'*' may only stand at the start or the end of a pattern";
	return NULL;
}

bool
kw_pattern_match(const char *p, const char *s)
{
	size_t pn = strlen(p), sn = strlen(s);

	if (strcmp(p, "*") == 0)
		return true;
	if (pn > 0 && p[pn - 1] == '*')
		return sn >= pn - 1 && strncmp(p, s, pn - 1) == 0;
	if (p[0] == '*')
		return sn >= pn - 1 && strcmp(s + sn - (pn - 1), p + 1) == 0;
	return strcmp(p, s) == 0;
}

/* Splits a comma-separated list into trimmed items; empty items are errors. Caller frees *items. */
static int
split_list(const char *value, char ***items, size_t *n, char *why, size_t whylen)
{
	char *copy = xstrdup(value), *p = copy;
	char **v = NULL;
	size_t cnt = 0;

	*items = NULL;
	*n = 0;
	for (;;) {
		char *comma = strchr(p, ',');
		char *item;

		if (comma != NULL)
			*comma = '\0';
		item = strtrim(p);
		if (*item == '\0') {
			for (size_t i = 0; i < cnt; i++)
				free(v[i]);
			free(v);
			free(copy);
			return fail(why, whylen, "empty item in list");
		}
		if (cnt >= KW_LIST_MAX) {
			for (size_t i = 0; i < cnt; i++)
				free(v[i]);
			free(v);
			free(copy);
			return fail(why, whylen, "list longer than %d items", KW_LIST_MAX);
		}
		v = xrealloc(v, cnt + 1, sizeof(*v));
		v[cnt++] = xstrdup(item);
		if (comma == NULL)
			break;
		p = comma + 1;
	}
	free(copy);
	*items = v;
	*n = cnt;
	return 0;
}

static void
free_items(char **items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(items[i]);
	free(items);
}

/* Label keys follow Kubernetes: optional "prefix/" then name of [A-Za-z0-9._-]; values likewise. */
static bool
label_part_ok(const char *s, size_t max, bool allow_slash)
{
	size_t n = strlen(s);

	if (n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!(isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.' ||
		    (allow_slash && c == '/')))
			return false;
	}
	return n == 0 || (isalnum((unsigned char)s[0]) && isalnum((unsigned char)s[n - 1]));
}

/* HTTP header field name token (RFC 9110), stored lower-case as HTTP/2 requires. */
static bool
header_name_ok(char *s)
{
	if (*s == '\0')
		return false;
	for (char *c = s; *c != '\0'; c++) {
		if (!(isalnum((unsigned char)*c) || strchr("!#$%&'*+-.^_`|~", *c) != NULL))
			return false;
		*c = (char)tolower((unsigned char)*c);
	}
	return true;
}

/*
 * A KW_WEIGHTED_LIST name: a DNS name, or KIND/NAME when kw->enums lists the kinds (route backends:
 * service/NAME or workload/NAME, to say which a name means when it is both).
 */
static bool
weighted_name_ok(const struct kw *kw, const char *item, char *why, size_t whylen)
{
	const char *slash = strchr(item, '/'), *name = item;

	if (slash != NULL && kw->enums != NULL) {
		char allowed[256] = "";
		size_t kl = (size_t)(slash - item), e;

		for (e = 0; kw->enums[e] != NULL; e++) {
			if (strlen(kw->enums[e]) == kl && strncmp(kw->enums[e], item, kl) == 0)
				break;
			snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed),
			    "%s%s", e ? ", " : "", kw->enums[e]);
		}
		if (kw->enums[e] == NULL) {
			fail(why, whylen, "'%s': expected NAME or KIND/NAME, KIND one of %s", item,
			    allowed);
			return false;
		}
		name = slash + 1;
	}
	if (!kw_is_hostname(name)) {
		fail(why, whylen, "'%s' is not a valid name", item);
		return false;
	}
	return true;
}

/*
 * List items, one kind per list type: parse() turns an item's text into *out, which then owns what
 * it allocated (kw_free releases it), or fails with why; repeats(), when a list refuses repeats,
 * says whether b repeats a and names the repeat in why.
 */
struct list_item_ops {
	enum kw_type type;
	size_t size;
	int (*parse)(const struct kw *kw, char *text, void *out, char *why, size_t whylen);
	bool (*repeats)(const void *a, const void *b, const char *text, char *why, size_t whylen);
};

static int
item_ip(const struct kw *kw, char *text, void *out, char *why, size_t whylen)
{
	const char *reason;

	return parse_ip(text, out, &reason) == 0 ? 0 : fail(why, whylen, "'%s': %s", text, reason);
}

static bool
repeats_ip(const void *a, const void *b, const char *text, char *why, size_t whylen)
{
	if (!ip_equal(a, b))
		return false;
	fail(why, whylen, "'%s' listed twice", text);
	return true;
}

static int
item_prefix(const struct kw *kw, char *text, void *out, char *why, size_t whylen)
{
	const char *reason;

	return parse_prefix(text, out, &reason) == 0 ? 0 :
	    fail(why, whylen, "'%s': %s", text, reason);
}

static int
item_port(const struct kw *kw, char *text, void *out, char *why, size_t whylen)
{
	const char *reason;

	return parse_port(text, out, &reason) == 0 ? 0 : fail(why, whylen, "'%s': %s", text, reason);
}

/* PORT or PORT:TARGET_PORT. */
static int
item_portmap(const struct kw *kw, char *text, void *out, char *why, size_t whylen)
{
	struct portmap *pm = out;
	char *colon = strchr(text, ':');
	const char *reason;
	int bad;

	if (colon != NULL)
		*colon = '\0';
	bad = parse_port(text, &pm->port, &reason) != 0 ||
	    (colon != NULL && parse_port(colon + 1, &pm->target, &reason) != 0);
	if (colon != NULL)
		*colon = ':';
	if (bad)
		return fail(why, whylen, "'%s': %s (expected PORT or PORT:TARGET_PORT)", text, reason);
	if (colon == NULL)
		pm->target = pm->port;
	return 0;
}

static bool
repeats_portmap(const void *a, const void *b, const char *text, char *why, size_t whylen)
{
	const struct portmap *x = a, *y = b;

	if (x->port != y->port)
		return false;
	fail(why, whylen, "port %u listed twice", y->port);
	return true;
}

/* KEY=VALUE (labels) or NAME: VALUE (headers). */
static int
item_pair(const struct kw *kw, char *text, void *out, char *why, size_t whylen)
{
	struct label *lb = out;
	bool labels = kw->type == KW_LABELS;
	char *s = strchr(text, labels ? '=' : ':'), *k, *v;

	if (s == NULL)
		return fail(why, whylen, labels ? "'%s': expected KEY=VALUE" :
		    "'%s': expected NAME: VALUE", text);
	*s = '\0';
	k = strtrim(text);
	v = strtrim(s + 1);
	if (labels) {
		const char *slash = strchr(k, '/');
		bool prefix_ok = true;

		if (slash != NULL) {
			char *prefix = xstrndup(k, (size_t)(slash - k));

			prefix_ok = kw_is_hostname(prefix);
			free(prefix);
		}
		if (*k == '\0' || !prefix_ok || !label_part_ok(slash ? slash + 1 : k, 63, false) ||
		    (slash ? slash[1] == '\0' : false))
			return fail(why, whylen, "bad label key '%s'", k);
		if (!label_part_ok(v, 63, false))
			return fail(why, whylen, "bad label value '%s' for '%s'", v, k);
	} else {
		if (!header_name_ok(k))
			return fail(why, whylen, "bad header name '%s'", k);
		if (*v == '\0')
			return fail(why, whylen, "header '%s' has no value", k);
	}
	lb->key = xstrdup(k);
	lb->value = xstrdup(v);
	return 0;
}

static bool
repeats_pair(const void *a, const void *b, const char *text, char *why, size_t whylen)
{
	const struct label *x = a, *y = b;

	if (strcmp(x->key, y->key) != 0)
		return false;
	fail(why, whylen, "'%s' given twice", y->key);
	return true;
}

/* A string, checked as the type says: a pattern, a header name, one of kw->enums, or anything. */
static int
item_str(const struct kw *kw, char *text, void *out, char *why, size_t whylen)
{
	const char *reason;

	if (kw->type == KW_PATTERN_LIST && (reason = kw_pattern_check(text)) != NULL)
		return fail(why, whylen, "'%s': %s", text, reason);
	if (kw->type == KW_HEADER_NAME_LIST && !header_name_ok(text))
		return fail(why, whylen, "bad header name '%s'", text);
	if (kw->type == KW_ENUM_LIST) {
		size_t e;

		for (e = 0; kw->enums[e] != NULL; e++)
			if (strcmp(kw->enums[e], text) == 0)
				break;
		if (kw->enums[e] == NULL)
			return fail(why, whylen, "unknown value '%s'", text);
	}
	*(char **)out = xstrdup(text);
	return 0;
}

/* NAME [WEIGHT]. */
static int
item_weighted(const struct kw *kw, char *text, void *out, char *why, size_t whylen)
{
	struct weighted *wt = out;
	char *sp = strpbrk(text, " \t");
	const char *reason;
	uint64_t w = 1;

	if (sp != NULL) {
		*sp = '\0';
		if (parse_uint(strtrim(sp + 1), 0, kw->max, &w, &reason) != 0)
			return fail(why, whylen, "'%s': weight must be 0-%llu", text,
			    (unsigned long long)kw->max);
	}
	if (!weighted_name_ok(kw, text, why, whylen))
		return AMESH_ERR_INVALID;
	wt->name = xstrdup(text);
	wt->weight = (uint32_t)w;
	return 0;
}

static bool
repeats_weighted(const void *a, const void *b, const char *text, char *why, size_t whylen)
{
	const struct weighted *x = a, *y = b;

	if (strcmp(x->name, y->name) != 0)
		return false;
	fail(why, whylen, "'%s' listed twice", y->name);
	return true;
}

static const struct list_item_ops list_items[] = {
	{ KW_IP_LIST, sizeof(struct ip_addr), item_ip, repeats_ip },
	{ KW_PREFIX_LIST, sizeof(struct ip_prefix), item_prefix, NULL },
	{ KW_PORT_LIST, sizeof(uint16_t), item_port, NULL },
	{ KW_PORTMAP_LIST, sizeof(struct portmap), item_portmap, repeats_portmap },
	{ KW_LABELS, sizeof(struct label), item_pair, repeats_pair },
	{ KW_HEADER_LIST, sizeof(struct label), item_pair, repeats_pair },
	{ KW_STR_LIST, sizeof(char *), item_str, NULL },
	{ KW_PATTERN_LIST, sizeof(char *), item_str, NULL },
	{ KW_ENUM_LIST, sizeof(char *), item_str, NULL },
	{ KW_HEADER_NAME_LIST, sizeof(char *), item_str, NULL },
	{ KW_WEIGHTED_LIST, sizeof(struct weighted), item_weighted, repeats_weighted },
};

/* Every list struct of kw.h: a pointer to its items and their count. */
struct any_list {
	void *v;
	size_t n;
};

/*
 * Parses a comma-separated value into kw's list, appended to what is there (append) or in its
 * place. A bad item or a repeat fails the whole key: the list is freed, why says which item.
 */
static int
set_list(const struct kw *kw, void *base, const char *value, bool append, char *why,
    size_t whylen)
{
	const struct list_item_ops *ops = NULL;
	struct any_list *l = FIELD(base, kw, struct any_list);
	char **items;
	size_t n, at;
	int r;

	for (size_t i = 0; i < sizeof(list_items) / sizeof(list_items[0]); i++)
		if (list_items[i].type == kw->type)
			ops = &list_items[i];
	if (ops == NULL)
		return fail(why, whylen, "not a list");
	if ((r = split_list(value, &items, &n, why, whylen)) != 0)
		return r;
	if (!append)
		kw_free(kw, base);
	at = l->n;
	if (at + n > KW_LIST_MAX) {
		free_items(items, n);
		return fail(why, whylen, "list longer than %d items", KW_LIST_MAX);
	}
	l->v = xrealloc(l->v, at + n, ops->size);
	for (size_t i = at; i < at + n; i++) {
		char *item = (char *)l->v + i * ops->size;

		memset(item, 0, ops->size);
		if ((r = ops->parse(kw, items[i - at], item, why, whylen)) != 0)
			goto bad;
		l->n = i + 1; /* kw_free releases it from here on */
		r = AMESH_ERR_INVALID; /* a repeat */
		for (size_t j = 0; ops->repeats != NULL && j < i; j++)
			if (ops->repeats((char *)l->v + j * ops->size, item, items[i - at], why,
			    whylen))
				goto bad;
	}
	free_items(items, n);
	return 0;
bad:
	free_items(items, n);
	kw_free(kw, base);
	return r;
}

int
kw_set(const struct kw *kw, void *base, const char *value, const char *basedir,
    char *why, size_t whylen)
{
	const char *reason = NULL;

	if (*value == '\0')
		return fail(why, whylen, "empty value");
	switch (kw->type) {
	case KW_STRING:
	case KW_NAME:
	case KW_HOSTNAME:
	case KW_PATH: {
		char **p = FIELD(base, kw, char *);

		if (kw->type == KW_NAME && !kw_is_name(value))
			return fail(why, whylen, "'%s' is not a valid name (lower-case letters, "
			    "digits and '-', at most 63)", value);
		if (kw->type == KW_HOSTNAME && !kw_is_hostname(value))
			return fail(why, whylen, "'%s' is not a valid DNS name", value);
		free(*p);
		*p = kw->type == KW_PATH ? path_join(basedir, value) : xstrdup(value);
		return 0;
	}
	case KW_PORT:
		if (parse_port(value, FIELD(base, kw, uint16_t), &reason) != 0)
			break;
		return 0;
	case KW_SOCKADDR:
		if (parse_sockaddr(value, FIELD(base, kw, struct sockaddr_storage), &reason) != 0)
			break;
		return 0;
	case KW_DURATION:
		if (parse_duration(value, FIELD(base, kw, uint64_t), &reason) != 0)
			break;
		if (*FIELD(base, kw, uint64_t) < kw->min) {
			char d[32];

			return fail(why, whylen, "'%s': must be at least %s", value,
			    duration_str(kw->min, d, sizeof(d)));
		}
		return 0;
	case KW_SIZE:
		if (parse_size(value, FIELD(base, kw, uint64_t), &reason) != 0)
			break;
		return 0;
	case KW_UINT: {
		uint64_t v;

		if (parse_uint(value, kw->min, kw->max, &v, &reason) != 0)
			return fail(why, whylen, "'%s': expected an integer %llu-%llu", value,
			    (unsigned long long)kw->min, (unsigned long long)kw->max);
		*FIELD(base, kw, uint64_t) = v;
		return 0;
	}
	case KW_BOOL:
		if (parse_bool(value, FIELD(base, kw, bool), &reason) != 0)
			break;
		return 0;
	case KW_ENUM: {
		char allowed[256] = "";

		for (int i = 0; kw->enums[i] != NULL; i++) {
			if (strcmp(kw->enums[i], value) == 0) {
				*FIELD(base, kw, int) = i;
				return 0;
			}
			snprintf(allowed + strlen(allowed), sizeof(allowed) - strlen(allowed),
			    "%s%s", i ? ", " : "", kw->enums[i]);
		}
		return fail(why, whylen, "'%s': expected one of %s", value, allowed);
	}
	case KW_IP:
		if (parse_ip(value, FIELD(base, kw, struct ip_addr), &reason) != 0)
			break;
		return 0;
	default:
		return set_list(kw, base, value, false, why, whylen);
	}
	return fail(why, whylen, "'%s': %s", value, reason);
}

void
kw_free(const struct kw *kw, void *base)
{
	switch (kw->type) {
	case KW_STRING:
	case KW_NAME:
	case KW_HOSTNAME:
	case KW_PATH: {
		char **p = FIELD(base, kw, char *);

		free(*p);
		*p = NULL;
		break;
	}
	case KW_IP_LIST:
	case KW_PREFIX_LIST:
	case KW_PORT_LIST:
	case KW_PORTMAP_LIST: {
		/* All four lists start with a pointer and a count. */
		struct ip_list *l = FIELD(base, kw, struct ip_list);

		free(l->v);
		l->v = NULL;
		l->n = 0;
		break;
	}
	case KW_LABELS:
	case KW_HEADER_LIST: {
		struct label_list *l = FIELD(base, kw, struct label_list);

		for (size_t i = 0; i < l->n; i++) {
			free(l->v[i].key);
			free(l->v[i].value);
		}
		free(l->v);
		l->v = NULL;
		l->n = 0;
		break;
	}
	case KW_STR_LIST:
	case KW_PATTERN_LIST:
	case KW_ENUM_LIST:
	case KW_HEADER_NAME_LIST: {
		struct str_list *l = FIELD(base, kw, struct str_list);

		free_items(l->v, l->n);
		l->v = NULL;
		l->n = 0;
		break;
	}
	case KW_WEIGHTED_LIST: {
		struct weighted_list *l = FIELD(base, kw, struct weighted_list);

		for (size_t i = 0; i < l->n; i++)
			free(l->v[i].name);
		free(l->v);
		l->v = NULL;
		l->n = 0;
		break;
	}
	default:
		break;
	}
}

bool
kw_is_list(enum kw_type t)
{
	return t >= KW_IP_LIST;
}

int
kw_append(const struct kw *kw, void *base, const char *value, char *why, size_t whylen)
{
	if (!kw_is_list(kw->type))
		return fail(why, whylen, "not a list");
	if (*value == '\0')
		return fail(why, whylen, "empty value");
	return set_list(kw, base, value, true, why, whylen);
}

const char *
kw_type_name(enum kw_type t)
{
	static const char *const names[] = {
		[KW_STRING] = "string", [KW_NAME] = "name", [KW_HOSTNAME] = "DNS name",
		[KW_PATH] = "path", [KW_PORT] = "port", [KW_SOCKADDR] = "address:port",
		[KW_DURATION] = "duration", [KW_SIZE] = "size", [KW_UINT] = "integer",
		[KW_BOOL] = "boolean", [KW_ENUM] = "keyword", [KW_IP] = "IP address",
		[KW_IP_LIST] = "IP address list", [KW_PREFIX_LIST] = "prefix list",
		[KW_PORT_LIST] = "port list", [KW_PORTMAP_LIST] = "port[:target] list",
		[KW_LABELS] = "label list", [KW_STR_LIST] = "list", [KW_PATTERN_LIST] = "pattern list",
		[KW_HEADER_LIST] = "header list", [KW_WEIGHTED_LIST] = "weighted list",
		[KW_ENUM_LIST] = "keyword list", [KW_HEADER_NAME_LIST] = "header name list",
	};

	return names[t];
}
