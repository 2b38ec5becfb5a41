/* SPDX-License-Identifier: Apache-2.0 */
/* The cost of a regex before regcomp() compiles it (registry-int.h). */
#include "config.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "config/registry-int.h"

/*
 * glibc's regcomp() copies a subexpression once for each repetition an interval allows, so nested
 * intervals multiply: "((a{1,255}){1,255}){1,255}", 26 bytes, asks it for 16 million copies and
 * takes gigabytes and seconds before it fails; "a++++...+" doubles at each '+'. Estimates that
 * expansion (each atom weighs the product of the repetitions around it; it errs high) and refuses a
 * pattern above the budget before regcomp() sees it. Envoy caps RE2 programs the same way.
 */
#define REGEX_BUDGET 1000
#define REGEX_DEPTH 32

bool
regex_size_ok(const char *re)
{
	/* tot[d]: size of the group open at depth d so far; last[d]: size of its last atom. */
	uint64_t tot[REGEX_DEPTH + 1] = { 0 }, last[REGEX_DEPTH + 1] = { 0 };
	int d = 0;

	for (const char *p = re; *p != '\0'; p++) {
		uint64_t atom = 1;

		switch (*p) {
		case '(':
			if (d == REGEX_DEPTH)
				return false;
			d++;
			tot[d] = last[d] = 0;
			continue;
		case ')':
			if (d == 0)
				break; /* unbalanced: regcomp() says so */
			atom = tot[d] ? tot[d] : 1;
			d--;
			break;
		case '|':
			last[d] = 0;
			continue;
		case '*':
		case '?':
			continue;
		case '+': /* "x+" is "xx*": one more copy, and "x++" copies that again */
			tot[d] += last[d];
			last[d] *= 2;
			if (tot[d] > REGEX_BUDGET)
				return false;
			continue;
		case '{': {
			char *end;
			unsigned long lo = strtoul(p + 1, &end, 10), hi = lo;

			if (end == p + 1)
				break; /* not an interval: a literal or an error for regcomp() */
			if (*end == ',') {
				const char *q = end + 1;

				hi = strtoul(q, &end, 10);
				if (end == q)
					hi = lo + 1; /* "{m,}" is m copies and a star */
			}
			if (*end != '}')
				break;
			if (hi > REGEX_BUDGET)
				return false;
			/* The atom is counted once already. */
			tot[d] += last[d] * (hi > 0 ? hi - 1 : 0);
			last[d] *= hi > 0 ? hi : 1;
			if (tot[d] > REGEX_BUDGET)
				return false;
			p = end;
			continue;
		}
		case '[': {
			/* A bracket expression is one atom: skip to its ']' ("[]a]", "[^]a]", "[[:x:]]"). */
			const char *q = p + 1;

			if (*q == '^')
				q++;
			if (*q == ']')
				q++;
			while (*q != '\0' && *q != ']') {
				if (*q == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '=')) {
					const char *close = strchr(q + 2, q[1]);

					if (close == NULL || close[1] != ']')
						break;
					q = close + 2;
					continue;
				}
				q++;
			}
			if (*q == '\0')
				return true; /* unterminated: regcomp() says so */
			p = q;
			break;
		}
		case '\\':
			if (p[1] != '\0')
				p++;
			break;
		default:
			break;
		}
		tot[d] += atom;
		last[d] = atom;
		if (tot[d] > REGEX_BUDGET)
			return false;
	}
	return true;
}
