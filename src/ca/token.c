/* SPDX-License-Identifier: Apache-2.0 */
/* Join tokens and revoked nodes as files in the CA directory (see token.h). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <mbedtls/base64.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ca/token.h"
#include "core/err.h"
#include "core/util.h"
#include "tls/ca.h"
#include "tls/cert.h"
#include "tls/rng.h"

#define TOKEN_FILE_MAX 256

/* The token's shape: the prefix and 43 base64url characters. */
static bool
token_shape_ok(const char *tok)
{
	size_t pl = strlen(TOKEN_PREFIX);

	if (strlen(tok) != TOKEN_LEN || strncmp(tok, TOKEN_PREFIX, pl) != 0)
		return false;
	for (const char *p = tok + pl; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' &&
		    *p <= '9') || *p == '-' || *p == '_'))
			return false;
	return true;
}

/* DIR/tokens[/used]/SHA256HEX */
static int
token_path(char *buf, size_t len, const char *dir, const char *tok, bool used)
{
	unsigned char h[32];
	char hex[65];
	int n;

	mbedtls_sha256_ret((const unsigned char *)tok, strlen(tok), h, 0);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", h[i]);
	n = snprintf(buf, len, "%s/tokens/%s%s", dir, used ? "used/" : "", hex);
	return n < 0 || (size_t)n >= len ? AMESH_ERR_TOOLONG : 0;
}

static int
make_dir(const char *path, char *why, size_t whylen)
{
	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return cert_fail(why, whylen, -errno, "cannot create %s: %s", path, strerror(errno));
	return 0;
}

/* Removes expired tokens; counts those left. */
static size_t
sweep(const char *dir, time_t now)
{
	char tdir[4096], path[4352];
	struct dirent *de;
	size_t left = 0;
	DIR *d;

	snprintf(tdir, sizeof(tdir), "%s/tokens", dir);
	if ((d = opendir(tdir)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		char node[128];
		long long exp = 0;
		FILE *f;

		if (strlen(de->d_name) != 64)
			continue;
		snprintf(path, sizeof(path), "%s/%s", tdir, de->d_name);
		if ((f = fopen(path, "re")) == NULL)
			continue;
		if (fscanf(f, "node %127s expires %lld", node, &exp) == 2 && exp < (long long)now)
			unlink(path);
		else
			left++;
		fclose(f);
	}
	closedir(d);
	return left;
}

int
token_create(const char *dir, const char *node, uint64_t ttl, time_t now, char *tok, char *why,
    size_t whylen)
{
	unsigned char rnd[32];
	char path[4096], sub[4096], body[TOKEN_FILE_MAX];
	size_t olen = 0, pl = strlen(TOKEN_PREFIX);
	int r, n;

	if (ttl == 0 || ttl > TOKEN_TTL_MAX)
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "token lifetime must be 1s..%ds",
		    TOKEN_TTL_MAX);
	snprintf(sub, sizeof(sub), "%s/tokens", dir);
	if ((r = make_dir(sub, why, whylen)) != 0)
		return r;
	snprintf(sub, sizeof(sub), "%s/tokens/used", dir);
	if ((r = make_dir(sub, why, whylen)) != 0)
		return r;
	if (sweep(dir, now) >= TOKEN_MAX_PENDING)
		return cert_fail(why, whylen, AMESH_ERR_RANGE, "%d tokens wait unused in %s/tokens: use "
		    "or remove some first", TOKEN_MAX_PENDING, dir);
	rng_fill(rng_ctx(), rnd, sizeof(rnd));
	memcpy(tok, TOKEN_PREFIX, pl);
	/* 32 bytes are 44 base64 characters, the last one '=' padding. */
	{
		unsigned char b64[48];

		if (mbedtls_base64_encode(b64, sizeof(b64), &olen, rnd, sizeof(rnd)) != 0 ||
		    olen != 44)
			return cert_fail(why, whylen, AMESH_ERR_INVALID, "cannot encode the token");
		for (size_t i = 0; i < 43; i++)
			tok[pl + i] = b64[i] == '+' ? '-' : b64[i] == '/' ? '_' : (char)b64[i];
		tok[pl + 43] = '\0';
		mbedtls_platform_zeroize(b64, sizeof(b64));
	}
	mbedtls_platform_zeroize(rnd, sizeof(rnd));
	if ((r = token_path(path, sizeof(path), dir, tok, false)) != 0)
		return cert_fail(why, whylen, r, "%s: path too long", dir);
	n = snprintf(body, sizeof(body), "node %s\nexpires %lld\n", node,
	    (long long)(now + (time_t)ttl));
	if (n < 0 || (size_t)n >= sizeof(body))
		return cert_fail(why, whylen, AMESH_ERR_TOOLONG, "node name too long");
	return ca_write_file(path, body, (size_t)n, 0600, false, why, whylen);
}

static int
read_token_file(const char *path, char *node, size_t nodelen, time_t *expires)
{
	char buf[TOKEN_FILE_MAX], name[128];
	long long exp;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	if (sscanf(buf, "node %127s expires %lld", name, &exp) != 2)
		return AMESH_ERR_INVALID;
	snprintf(node, nodelen, "%s", name);
	*expires = (time_t)exp;
	return 0;
}

int
token_peek(const char *dir, const char *tok, time_t now, enum token_state *state, char *node,
    size_t nodelen, time_t *expires, char *why, size_t whylen)
{
	char path[4096];
	int r;

	*state = TOKEN_MALFORMED;
	*expires = 0;
	if (nodelen > 0)
		node[0] = '\0';
	if (!token_shape_ok(tok))
		return 0;
	for (int used = 0; used <= 1; used++) {
		if (token_path(path, sizeof(path), dir, tok, used) != 0)
			return cert_fail(why, whylen, AMESH_ERR_TOOLONG, "%s: path too long", dir);
		r = read_token_file(path, node, nodelen, expires);
		if (r == -ENOENT)
			continue;
		if (r != 0)
			return cert_fail(why, whylen, r, "cannot read %s: %s", path, amesh_strerror(r));
		*state = used ? TOKEN_USED : *expires < now ? TOKEN_EXPIRED : TOKEN_OK;
		return 0;
	}
	*state = TOKEN_UNKNOWN;
	return 0;
}

int
token_consume(const char *dir, const char *tok, char *why, size_t whylen)
{
	char from[4096], to[4096];

	if (token_path(from, sizeof(from), dir, tok, false) != 0 ||
	    token_path(to, sizeof(to), dir, tok, true) != 0)
		return cert_fail(why, whylen, AMESH_ERR_TOOLONG, "%s: path too long", dir);
	/* rename() is atomic: of two requests with the same token, one finds it gone. */
	if (rename(from, to) != 0) {
		if (errno == ENOENT)
			return cert_fail(why, whylen, AMESH_ERR_EXISTS, "join token already used");
		return cert_fail(why, whylen, -errno, "cannot mark the token used (%s): %s", to,
		    strerror(errno));
	}
	return 0;
}

const char *
token_state_str(enum token_state s)
{
	switch (s) {
	case TOKEN_OK: return "valid";
	case TOKEN_MALFORMED: return "malformed";
	case TOKEN_UNKNOWN: return "unknown";
	case TOKEN_USED: return "already used";
	case TOKEN_EXPIRED: return "expired";
	}
	return "?";
}

int
node_revoke(const char *dir, const char *node, bool undo, char *why, size_t whylen)
{
	char path[4096];
	int r;

	if (!ca_valid_name(node))
		return cert_fail(why, whylen, AMESH_ERR_INVALID, "bad node name '%s'", node);
	snprintf(path, sizeof(path), "%s/revoked", dir);
	if ((r = make_dir(path, why, whylen)) != 0)
		return r;
	snprintf(path, sizeof(path), "%s/revoked/%s", dir, node);
	if (undo) {
		if (unlink(path) != 0 && errno != ENOENT)
			return cert_fail(why, whylen, -errno, "cannot remove %s: %s", path,
			    strerror(errno));
		return 0;
	}
	r = ca_write_file(path, "revoked\n", 8, 0600, true, why, whylen);
	return r;
}

bool
node_revoked(const char *dir, const char *node)
{
	char path[4096];
	struct stat st;

	if (!ca_valid_name(node))
		return true;
	snprintf(path, sizeof(path), "%s/revoked/%s", dir, node);
	return stat(path, &st) == 0;
}
