/* SPDX-License-Identifier: Apache-2.0 */
/* The command table: each subcommand is one entry; main.c dispatches and prints help from it. */
#ifndef AMESH_CMD_CMD_H
#define AMESH_CMD_CMD_H

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
	uv_signal_t sig_hup, sig_term, sig_int;
	uv_timer_t watchdog;
	void (*reload)(void *arg);
	void (*stop)(void *arg);
	void *arg;
};
void cmd_role_start(uv_loop_t *loop, struct cmd_role *r);
void cmd_role_stopping(void);
void cmd_role_close(struct cmd_role *r);
/* Calls fn(arg) from the loop, soon: the admin's /quitquitquit must not close its own listeners
 * from inside its handler. */
void cmd_call_soon(uv_loop_t *loop, void (*fn)(void *arg), void *arg);

/* Prints "amesh CMD SUB: message", the usage line and where to find help; returns EXIT_USAGE. */
int cmd_usage_error(const char *cmd, const char *sub, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
