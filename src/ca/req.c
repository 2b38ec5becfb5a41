/* SPDX-License-Identifier: Apache-2.0 */
/* The CA service's request reading (see req.h). */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ca/proto.h"
#include "ca/req.h"
#include "telemetry/httpmsg.h"

static const struct http_route routes[] = {
	{ "POST", CA_PATH_JOIN, NULL },
	{ "POST", CA_PATH_SIGN, NULL },
	{ "GET", CA_PATH_BUNDLE, NULL },
	{ NULL, NULL, NULL },
};

/* Amesh-TTL in seconds, capped at max; absent: max. Returns 0 or -1 when malformed. */
static int
req_ttl(const struct http_req *req, uint64_t max, uint64_t *out)
{
	const char *v = http_req_header(req, CA_HDR_TTL);
	unsigned long long n;
	char *end;

	*out = max;
	if (v == NULL)
		return 0;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n == 0)
		return -1;
	if (n < *out)
		*out = n;
	return 0;
}

int
ca_req_parse(struct http_msg *m, uint64_t max_ttl, struct ca_req *out, char *why, size_t whylen)
{
	const struct http_route *hit;
	const char *auth;
	char allow[64];
	int status;

	out->kind = CA_REQ_BUNDLE;
	out->token = NULL;
	out->identity = NULL;
	out->ttl_status = 0;
	out->ttl = max_ttl;
	if ((status = http_msg_request(m, &out->http, out->hv, out->path)) != 0) {
		snprintf(why, whylen, "%s", "bad request target");
		return status;
	}
	hit = http_route_find(routes, out->http.method, out->http.path, &status, allow,
	    sizeof(allow));
	if (hit == NULL) {
		snprintf(why, whylen, "%s %s: %s", out->http.method, out->http.path,
		    status == 405 ? "method not allowed" : "no such endpoint");
		return status;
	}
	if (strcmp(hit->path, CA_PATH_JOIN) == 0) {
		out->kind = CA_REQ_JOIN;
		auth = http_req_header(&out->http, "Authorization");
		if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0)
			out->token = auth + 7;
	} else if (strcmp(hit->path, CA_PATH_SIGN) == 0) {
		out->kind = CA_REQ_SIGN;
		out->identity = http_req_header(&out->http, CA_HDR_IDENTITY);
		if (req_ttl(&out->http, max_ttl, &out->ttl) != 0)
			out->ttl_status = 400;
	} else {
		out->kind = CA_REQ_BUNDLE;
	}
	return 0;
}
