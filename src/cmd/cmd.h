/* SPDX-License-Identifier: Apache-2.0 */
/* The command table: each subcommand is one entry; main.c dispatches and prints help from it. */
#ifndef AMESH_CMD_CMD_H
#define AMESH_CMD_CMD_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

/* Exit codes shared by every command. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

/* Global options, accepted before or after the command name. */
struct cmd_globals {
	const char *conf_path; /* -c FILE */
	int verbosity;         /* +1 per -v, -1 per -q */
	int log_format;        /* --log-format; -1 when not given */
};

struct cmd_entry {
	const char *name;
	const char *usage; /* arguments after the name */
	const char *desc;  /* one line for amesh --help */
	const char *help;  /* option lines for amesh COMMAND --help; NULL: none */
	/* argv[0] is the command name; global options have been removed. Returns an exit code. */
	int (*exec)(const struct cmd_globals *g, int argc, char **argv);
	const char *man; /* its man page ("amesh-check(8)"); NULL: amesh(8) covers it */
};

extern const struct cmd_entry cmd_ztunnel_entry;
extern const struct cmd_entry cmd_waypoint_entry;
extern const struct cmd_entry cmd_sidecar_entry;
extern const struct cmd_entry cmd_cni_entry;
extern const struct cmd_entry cmd_ca_entry;
extern const struct cmd_entry cmd_check_entry;
extern const struct cmd_entry cmd_registry_entry;

/* amesh ca serve|token|join|revoke-node (cmd/ca-serve.c); argv[1] is the subcommand. Returns
 * an exit code, or -1 when argv[1] is none of these. */
int cmd_ca_fleet(const struct cmd_globals *g, int argc, char **argv);

/* The CNI plugin protocol path (argv[0] "amesh-cni" or CNI_COMMAND set). Returns an exit code. */
int cmd_cni_plugin(void);

struct amesh_conf;
/* Applies [log] from the config, with -v/-q and --log-format on top, and [tls] record_offload. */
void cmd_log_setup(const struct cmd_globals *g, const struct amesh_conf *c);

/* For uv_close of handles that need nothing done when closed. */
void cmd_handle_closed(uv_handle_t *h);
/* sd_notify READY=1 and, under WatchdogSec, WATCHDOG=1 every half period on watchdog (an
 * initialised timer). Without libsystemd: nothing. */
void cmd_notify_ready(uv_timer_t *watchdog);

/*
 * What every daemon role (ztunnel, sidecar, waypoint, ca serve) does around its own work:
 * SIGHUP calls reload, SIGTERM and SIGINT call stop; the systemd watchdog. cmd_role_start at the
 * end of startup (READY=1), cmd_role_stopping when stop begins (STOPPING=1), cmd_role_close once
 * the role's work is drained so that the loop can end.
 */
struct cmd_role {
	uv_signal_t sig_hup, sig_term, sig_int, sig_usr2;
	uv_timer_t watchdog;
	void (*reload)(void *arg);
	void (*stop)(void *arg);
	void (*upgrade)(void *arg); /* SIGUSR2; NULL: the role has none (logged) */
	void *arg;
};
void cmd_role_start(uv_loop_t *loop, struct cmd_role *r);
void cmd_role_stopping(void);
void cmd_role_close(struct cmd_role *r);
/* At startup, before any listener: takes what an upgrading process hands over (core/inherit.h).
 * Returns 0, or EXIT_FAIL with the reason logged. */
int cmd_role_inherit(const char *role);

/* main(): the binary's path and arguments, for an upgrade to start again (cmd/upgrade.c). */
void cmd_upgrade_init(int argc, char **argv);
/*
 * Starts the binary now on disk with this process's arguments and listeners; done(arg, ok, pid)
 * once it serves (ok: the caller stops accepting and drains) or when it did not (it exited, or
 * was silent for a minute: the caller goes on serving). 0, or a negative code (-EBUSY: one is
 * under way).
 */
int cmd_upgrade_start(uv_loop_t *loop, void (*done)(void *arg, bool ok, int pid), void *arg);

/* A role's event loops for its workers key (amesh.conf(5)): configured when > 0, else (0) one per
 * CPU the process may run on less one, at least 1 and at most 8. */
unsigned cmd_auto_workers(uint64_t configured);

/* Calls fn(arg) from the loop, soon: the admin's /quitquitquit must not close its own listeners
 * from inside its handler. */
void cmd_call_soon(uv_loop_t *loop, void (*fn)(void *arg), void *arg);

/*
 * A role's registry source (cmd/regsource.c): the [mesh] registry directory, watched by
 * config/regwatch.h, or an etcd:// source, fed by etcd/feed.h. Load at startup, watch once the
 * role's metrics exist, reload on SIGHUP, stop when draining, free after the loop.
 */
struct amesh_conf;
struct metrics;
struct registry;
struct registry_holder;
struct diag;
struct etcd_feed;
struct cmd_registry {
	const char *role;
	uv_loop_t *loop;
	const struct amesh_conf *conf;
	struct registry_holder *holder;
	struct regwatch *dir;   /* a directory */
	struct etcd_feed *feed; /* etcd */
	uint64_t stamp;         /* the directory before the first load (regwatch_stamp) */
};
/* Loads the registry into holder. 0, or a negative code with d saying why. */
int cmd_registry_load(struct cmd_registry *cr, uv_loop_t *loop, const char *role,
    const struct amesh_conf *conf, struct registry_holder *holder, struct diag *d);
/* Starts watching for changes (logs when it cannot). */
void cmd_registry_watch(struct cmd_registry *cr, struct metrics *m,
    void (*describe)(const struct registry *r, char *buf, size_t n));
void cmd_registry_reload(struct cmd_registry *cr);
void cmd_registry_stop(struct cmd_registry *cr);
void cmd_registry_free(struct cmd_registry *cr);
/* Reads the registry once, from the directory or etcd (amesh check). 0 with *out, or a code
 * with d saying why; *what says where from ("revision 42 of etcd://...", or the directory). */
int cmd_registry_read_once(const struct amesh_conf *conf, struct registry **out, char *what,
    size_t whatlen, struct diag *d);
/* dump (a /config_dump JSON text, taken over) with registry_source added for etcd. */
char *cmd_registry_dump(const struct cmd_registry *cr, char *dump);

/* Prints "amesh CMD SUB: message", the usage line and where to find help; returns EXIT_USAGE. */
int cmd_usage_error(const char *cmd, const char *sub, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
