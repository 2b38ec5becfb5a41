/* SPDX-License-Identifier: Apache-2.0 */
/* The state_dir records of enrolled workloads (records.h). */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/kw.h"
#include "core/util.h"
#include "net/records.h"

/* The longest namespace path a record holds (as a hand-off message's). */
#define RECORD_PATH_MAX 4096

bool
records_name_ok(const char *name)
{
	return name[0] != '.' && kw_is_hostname(name);
}

int
records_write(const char *dir, const char *name, const char *netns)
{
	char *path = xasprintf("%s/%s", dir, name);
	char *tmp = xasprintf("%s/.%s.tmp", dir, name);
	FILE *fp;
	int r = 0;

	fp = fopen(tmp, "we");
	if (fp == NULL || fprintf(fp, "%s\n", netns) < 0 || fflush(fp) != 0 ||
	    fsync(fileno(fp)) != 0)
		r = -errno;
	if (fp != NULL && fclose(fp) != 0 && r == 0)
		r = -errno;
	if (r == 0 && rename(tmp, path) != 0)
		r = -errno;
	if (r != 0)
		unlink(tmp);
	free(path);
	free(tmp);
	return r;
}

int
records_remove(const char *dir, const char *name)
{
	char *path = xasprintf("%s/%s", dir, name);
	int r = unlink(path) == 0 || errno == ENOENT ? 0 : -errno;

	free(path);
	return r;
}

char *
records_read(const char *dir, const char *name)
{
	char *path = xasprintf("%s/%s", dir, name);
	char line[RECORD_PATH_MAX + 2] = "";
	FILE *fp = fopen(path, "re");

	free(path);
	if (fp == NULL)
		return NULL;
	if (fgets(line, sizeof(line), fp) == NULL)
		line[0] = '\0';
	fclose(fp);
	line[strcspn(line, "\n")] = '\0';
	if (line[0] == '\0')
		return NULL;
	for (const char *s = line; *s != '\0'; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f)
			return NULL;
	return xstrdup(line);
}

void
records_foreach(const char *dir, void (*fn)(const char *name, const char *netns, void *arg),
    void *arg)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		char *ns;

		if (!records_name_ok(de->d_name) || (ns = records_read(dir, de->d_name)) == NULL)
			continue;
		fn(de->d_name, ns, arg);
		free(ns);
	}
	closedir(d);
}
