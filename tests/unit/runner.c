/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Runs each unit test in a forked child with a timeout and prints TAP, so automake's driver reports
 * every test by name. A crash or a hang fails that test only. Run one test: amesh-unit NAME.
 * Exit status 77 from a test means "skipped"; its last line of stderr is the reason.
 */
#include "config.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config/registry.h"
#include "core/diag.h"
#include "runner.h"
#include "test-list.h"

#define DECLARE(name) void test_##name(void);
TEST_LIST(DECLARE)

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
#define ENTRY(name) { #name, test_##name },
	TEST_LIST(ENTRY)
};

#define NTESTS (sizeof(tests) / sizeof(tests[0]))
#define TIMEOUT_SECONDS 60

static char tmpdir[256];

const char *
test_tmpdir(void)
{
	if (tmpdir[0] == '\0') {
		const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

		snprintf(tmpdir, sizeof(tmpdir), "%s/amesh-unit.XXXXXX", base);
		if (mkdtemp(tmpdir) == NULL) {
			perror("mkdtemp");
			exit(1);
		}
	}
	return tmpdir;
}

const char *
test_write(const char *dir, const char *name, const char *data)
{
	static char path[512];
	FILE *fp;

	mkdir(dir, 0755);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fp = fopen(path, "w");
	if (fp == NULL || fputs(data, fp) < 0 || fclose(fp) != 0) {
		perror(path);
		exit(1);
	}
	return path;
}

static int
run_one(size_t i)
{
	pid_t pid;
	int status;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return -1;
	}
	if (pid == 0) {
		alarm(TIMEOUT_SECONDS);
		tests[i].fn();
		/* Remove the test's temp dir; failures leave it for inspection. */
		if (tmpdir[0] != '\0') {
			char cmd[300];

			snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
			if (system(cmd) != 0)
				fprintf(stderr, "could not remove %s\n", tmpdir);
		}
		exit(0);
	}
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		printf("ok %zu - %s\n", i + 1, tests[i].name);
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
		printf("ok %zu - %s # SKIP see log\n", i + 1, tests[i].name);
	else if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM)
		printf("not ok %zu - %s # timed out after %ds\n", i + 1, tests[i].name,
		    TIMEOUT_SECONDS);
	else if (WIFSIGNALED(status))
		printf("not ok %zu - %s # killed by signal %d\n", i + 1, tests[i].name,
		    WTERMSIG(status));
	else
		printf("not ok %zu - %s # exit %d\n", i + 1, tests[i].name, WEXITSTATUS(status));
	return WIFEXITED(status) && (WEXITSTATUS(status) == 0 || WEXITSTATUS(status) == 77) ? 0 : 1;
}

int
main(int argc, char **argv)
{
	int failed = 0;

	if (argc > 1) {
		for (size_t i = 0; i < NTESTS; i++)
			if (strcmp(tests[i].name, argv[1]) == 0) {
				printf("1..1\n");
				return run_one(i) == 0 ? 0 : 1;
			}
		fprintf(stderr, "no test named %s\n", argv[1]);
		return 2;
	}
	printf("1..%zu\n", NTESTS);
	for (size_t i = 0; i < NTESTS; i++)
		failed += run_one(i) != 0;
	return failed ? 1 : 0;
}

struct registry *
test_registry(const char *text)
{
	struct registry *r;
	struct diag d;

	diag_init(&d);
	if (registry_parse_buffer("reg.conf", text, strlen(text), &r, &d) != 0) {
		diag_print(&d, stderr);
		ASSERT(!"registry did not parse");
	}
	diag_clear(&d);
	return r;
}
