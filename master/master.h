/*
 * master.h - the master process: configuration loading, listeners, the
 * worker pool and the admin control socket.
 */
#ifndef GW_MASTER_H
#define GW_MASTER_H

#include "shm/shm.h"

/*
 * Load and validate the YAML file at path.  On success *out owns a new
 * configuration (release it with gw_config_free).  On failure returns
 * GW_ECONFIG (or GW_EIO when the file cannot be read) and writes one line
 * "FILE:LINE:COLUMN: message" into err (errlen bytes).  Provider secrets
 * named by api_key_env / api_key_file are resolved here, so a missing
 * secret file is reported at load time with the key's position.
 */
int gw_master_config_load(const char *path, struct gw_config **out, char *err, size_t errlen);

/* Parse "30s", "500ms", "2m", "1h" (a bare number is seconds) into ms.
 * Returns 0 or GW_EINVAL. */
int gw_master_config_parse_duration(const char *s, long *ms);

/* Parse "16k", "8m", "1g", "512" (bytes) into bytes.  0 or GW_EINVAL. */
int gw_master_config_parse_size(const char *s, size_t *bytes);

/*
 * Listening sockets.  Binds every "host:port" of cfg->listen, non-blocking,
 * SO_REUSEADDR.  On failure logs which address failed and why.
 */
struct gw_listeners {
    int *fds;
    size_t n;
};

int gw_master_listen_open(const struct gw_config *cfg, struct gw_listeners *out);
void gw_master_listen_close(struct gw_listeners *l);

/*
 * The worker pool, Apache prefork style: one slot per worker, a worker
 * that dies is replaced, with back-off when it keeps dying young; one that
 * exits GW_EXIT_FATAL is not (a restart cannot fix it).
 */
struct gw_pool_slot {
    pid_t pid;           /* 0: empty */
    int64_t started_ms;
    int64_t respawn_at_ms;
    unsigned failures;   /* consecutive early deaths */
    bool fatal;
};

struct gw_master_pool {
    struct gw_pool_slot *slots;
    int n;
    const struct gw_config *cfg;
    const struct gw_listeners *listeners;
    const unsigned char *secret;
    pid_t master;
    bool stopping;
};

int gw_master_pool_create(struct gw_master_pool *p, const struct gw_config *cfg,
                          const struct gw_listeners *l, const unsigned char *secret);
void gw_master_pool_destroy(struct gw_master_pool *p);
/* Start workers in empty slots whose time has come; returns the ms until
 * the next one is due, or -1 when none is waiting. */
long gw_master_pool_spawn(struct gw_master_pool *p);
/* Collect exited workers (after SIGCHLD); returns how many were reaped. */
int gw_master_pool_reap(struct gw_master_pool *p);
void gw_master_pool_signal(struct gw_master_pool *p, int sig);
int gw_master_pool_alive(const struct gw_master_pool *p);
/* True when every slot holds a worker that exited fatally. */
bool gw_master_pool_failed(const struct gw_master_pool *p);

/*
 * The admin Unix socket.  Binds cfg->admin_socket with cfg->admin_mode,
 * refusing to start when another master answers on it.  Returns the
 * listening fd or -1.
 */
int gw_master_control_open(const struct gw_config *cfg);

/*
 * Accept one admin connection on lfd and serve its request: check the
 * caller with SO_PEERCRED, read one JSON line, run the command, reply.
 * Bounded by short socket timeouts, so a stuck client costs the master at
 * most that long.
 */
struct gw_master_state {
    const struct gw_config *cfg;
    struct gw_store *store;
    const unsigned char *secret;
    const struct gw_master_pool *pool;
    int64_t started;
};

void gw_master_control_serve(int lfd, struct gw_master_state *st);

#endif
