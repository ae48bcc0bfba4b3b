/*
 * master.h - the master process: configuration loading, listeners, the
 * worker pool and the admin control socket.
 */
#ifndef GW_MASTER_H
#define GW_MASTER_H

#include <sched.h>

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
    int metrics_fd; /* the metrics.listen socket, or -1 */
    int *admin_fds; /* admin_fds[i] belongs to cfg->admin_listen[i] */
    size_t nadmin;
};

int gw_master_listen_open(const struct gw_config *cfg, struct gw_listeners *out);
/* The same for a reload: addresses that old already listens on keep their
 * sockets (duplicated), so nothing is unbound in between. */
int gw_master_listen_reopen(const struct gw_config *cfg, const struct gw_config *old,
                            const struct gw_listeners *old_l, struct gw_listeners *out);
void gw_master_listen_close(struct gw_listeners *l);
/*
 * Socket activation: the same as gw_master_listen_open, but first takes
 * the sockets systemd passed (sd_listen_fds: LISTEN_FDS for this pid).
 * Each address of cfg->listen, cfg->metrics_listen (into
 * out->metrics_fd) and cfg->admin_listen (into out->admin_fds) gets the
 * passed socket bound to that address ("*" or an empty host: a socket on
 * that port bound to any address when none is bound to the wildcard);
 * addresses no passed socket serves are bound here; passed sockets that serve none are logged and
 * closed.  Without LISTEN_FDS it is gw_master_listen_open.  Call it once, at start (a later call
 * finds nothing passed); reloads then reuse the sockets like any other.  0 or GW_E*; on failure
 * nothing is left open.
 */
int gw_master_listen_inherit(const struct gw_config *cfg, struct gw_listeners *out);

/*
 * The worker pool, Apache prefork style: one slot per worker, a worker
 * that dies is replaced, with back-off when it keeps dying young; one that
 * exits GW_EXIT_FATAL is not (a restart cannot fix it).  Workers retired
 * by a reload that changed the listeners or the pool size finish their
 * requests and exit; they are reaped but not replaced.
 */
struct gw_pool_slot {
    pid_t pid; /* 0: empty */
    int sb;    /* scoreboard entry in shm */
    int64_t started_ms;
    int64_t respawn_at_ms;
    unsigned failures; /* consecutive early deaths */
    bool fatal;
    bool wanted; /* the pool wants a worker here (spares grow and trim this) */
};

struct gw_master;
struct gw_health;

struct gw_master_pool {
    struct gw_pool_slot *slots;
    int n;
    /* The CPUs aigwd was started on, which workers.cpu_affinity shares
     * out (spawn.c); taken when the pool is made, before any pinning. */
    cpu_set_t cpus;
    bool pinned;    /* cpu_affinity set the master's CPUs at the last pool change */
    pid_t *retired; /* told to finish and exit; reaped, not replaced */
    size_t nretired;
    struct gw_master *m;
    int grow_step; /* next growth batch while idle workers run short */
    bool stopping;
};

/* The master's state: one object, passed to every part of the master. */
struct gw_master {
    struct gw_config *cfg; /* the running configuration; replaced whole on reload */
    const char *conf_path;
    struct gw_store *store;
    struct gw_shm shm;
    struct gw_listeners listeners;
    struct gw_master_pool pool;
    unsigned char secret[GW_SECRET_LEN];
    unsigned char provider_key[GW_SEAL_KEY_LEN]; /* seals BYOK credentials (shm/seal.c) */
    int64_t started;                             /* unix seconds */
    pid_t pid;
    int master_fds[2]; /* admin socket, signalfd: closed in workers */
    int ring_bell;     /* eventfd: workers wake the master to drain usage (gw_shm_ring_bell) */
    /* Active health checks (health.c), or NULL. */
    struct gw_health *health;
    bool usage_upgraded; /* no stored record of an older version is left */
    /* The response cache (cache.c), or NULL while no model caches. */
    struct gw_cache *cache;
};

/* A CPU set as ranges, the way /proc's Cpus_allowed_list writes it
 * ("0-3,6"), into out; returns out. */
const char *gw_master_cpus_text(const cpu_set_t *set, char *out, size_t len);
/* A pool that starts start workers and may grow to max. */
int gw_master_pool_create(struct gw_master_pool *p, struct gw_master *m, int start, int max);
void gw_master_pool_destroy(struct gw_master_pool *p);
/* Start workers in empty slots whose time has come; returns the ms until
 * the next one is due, or -1 when none is waiting. */
long gw_master_pool_spawn(struct gw_master_pool *p);
/* Collect exited workers (after SIGCHLD); returns how many were reaped. */
int gw_master_pool_reap(struct gw_master_pool *p);
void gw_master_pool_signal(struct gw_master_pool *p, int sig);
/* Workers alive, retired ones included. */
int gw_master_pool_alive(const struct gw_master_pool *p);
/* True when every slot holds a worker that exited fatally. */
bool gw_master_pool_failed(const struct gw_master_pool *p);
/* Retire every worker (SIGTERM: finish, then exit) and start n new ones:
 * how a reload applies new listeners or a new pool size. */
int gw_master_pool_replace(struct gw_master_pool *p, int start, int max);
/* How many workers the pool wants now (spares move this). */
int gw_master_pool_wanted(const struct gw_master_pool *p);
/* Clear scoreboard entries of dead processes that are not our children
 * (workers of a master that died before us). */
void gw_master_pool_sweep(struct gw_master_pool *p);
/* Grow or trim toward min_spare..max_spare idle workers (about 1/s). */
void gw_master_pool_maintain(struct gw_master_pool *p);

/*
 * Reload: load path, and if it is valid make it the running configuration
 * (a new routing generation in shm; new listeners and pool size applied
 * by replacing the workers).  If not, nothing changes and err says why
 * ("FILE:LINE:COLUMN: message").  Returns 0 or a GW_E* code.
 */
int gw_master_reload(struct gw_master *m, char *err, size_t errlen);

/* Publish cfg as the next routing generation, waiting (bounded) for a
 * free slot while long requests hold the others. */
int gw_master_publish(struct gw_master *m, const struct gw_config *cfg);

/* Move usage records from the shm ring into LMDB; returns how many. */
size_t gw_master_usage_drain(struct gw_master *m);
/* Have the master's long store transactions give the workers their CPU. */
void gw_master_usage_pace_init(struct gw_master *m);
/*
 * When to drain next, in milliseconds, after a drain moved drained
 * records that came in over the last elapsed_ms: soon enough that an
 * eighth of the ring's nring slots fills between two drains at that
 * rate, from GW_USAGE_DRAIN_MIN_MS to GW_USAGE_DRAIN_MAX_MS.
 */
#define GW_USAGE_DRAIN_MIN_MS 10
#define GW_USAGE_DRAIN_MAX_MS 500
long gw_master_usage_drain_every(uint64_t nring, size_t drained, int64_t elapsed_ms);
/* After attaching a segment: skip ring records LMDB already holds. */
void gw_master_usage_reconcile(struct gw_master *m);
/*
 * Retention, from the master's maintenance tick: upgrade records of an
 * older version, then delete detail records older than
 * usage.detail_days and aggregates older than usage.aggregate_days (whole
 * UTC days), in transactions of at most 1,000 deletions and for at most
 * about 20 ms per call, so requests and the admin socket never wait long.
 */
void gw_master_usage_maintain(struct gw_master *m);

/*
 * Active health checks (health.c), run by the master on a libcurl multi
 * handle so they never block it.  create: after curl_global_init and the
 * shm segment, for m->cfg; reload: after a reload swapped m->cfg in (the
 * checks own copies of what they use, so the old configuration may go);
 * tick: from every turn of the master's loop, returns the ms until it
 * wants to run again (at most 50 while a check is in flight) or -1 when
 * no provider is checked; destroy: at exit (NULL m->health is fine).
 * state: "up", "down" or "unchecked" for a provider's name.
 */
int gw_master_health_create(struct gw_master *m);
int gw_master_health_reload(struct gw_master *m);
long gw_master_health_tick(struct gw_master *m);
void gw_master_health_destroy(struct gw_master *m);
const char *gw_master_health_state(const struct gw_master *m, const char *provider);

/*
 * Connectivity test (endpoint.c): one minimal chat completion through
 * each target of model (only target index only_target when it is >= 0),
 * all at once, blocking until every call answered or timed out (timeouts
 * are those of the model and provider, capped at 10 s).  Returns a new
 * JSON array (owned by the caller) of one object per target: target,
 * provider, model, status (0 without an answer), latency_ms, ok, error;
 * *all_ok is set when every call answered 2xx.  Meant for a child of the
 * master (see control.c): it blocks.
 */
struct json_object;

/*
 * Usage statistics (stats.c), for the admin commands "usage.stats" and
 * "usage.detail" (and "usage" for a caller who is not an admin).
 *
 * Every request takes since (or from) and until (or to): YYYY-MM-DD,
 * ISO 8601 or a time ago ("24h", "7d"; since inclusive, until exclusive),
 * and the filters key, user, tenant, model, target.  stats_usage also
 * takes by (comma-separated dimensions); it drains the ring, adds up the
 * daily aggregates of whole days before the store's pruned_before and the
 * records from then on, and returns {"ok", "by", "rows": [...], "totals"},
 * rows sorted by the dimensions.  stats_detail takes limit (1..1000),
 * until_us and skip (paging) and returns {"ok", "rows": [...], "more"},
 * newest first.  stats_totals: {"ok", "requests", "input_tokens",
 * "output_tokens"} of what scope sees.  Each returns a new reply (owned by
 * the caller), or {"ok": false, "error"} (bad arguments, bounds).
 *
 * scope, when not NULL, narrows the answer to what a caller who is not a
 * gateway admin may see: records of keys owned by user (when the request
 * was made, or now: keys) and of the models the user holds any grant on.
 *
 * time_parse gives unix microseconds of an absolute time; when_parse also
 * takes "now" and a time ago (N followed by s, m, h, d or w) before
 * now_us.  dims_parse fills dims (room for GW_STATS_NDIMS) with enum
 * gw_stats_dim values and returns GW_EINVAL for an unknown name, GW_EEXIST
 * for one named twice.
 */
enum gw_stats_dim {
    GW_STATS_KEY,
    GW_STATS_USER,
    GW_STATS_TENANT,
    GW_STATS_MODEL,
    GW_STATS_TARGET,
    GW_STATS_STATUS,
    GW_STATS_DAY,
    GW_STATS_MONTH,
    GW_STATS_HOUR,
    GW_STATS_BYOK,       /* "yes": served with the tenant's own credential, "no": the platform's */
    GW_STATS_CAPABILITY, /* chat, embeddings, transcription, speech, images, video */
    GW_STATS_TIER,       /* images: "SIZE/QUALITY"; "" for the others */
    GW_STATS_NDIMS
};
struct gw_stats_scope {
    const char *user;
    char **keys;
    size_t nkeys;
    char **models;
    size_t nmodels;
};
struct gw_arena;
struct json_object *gw_master_stats_usage(struct gw_master *m, struct json_object *req,
                                          struct gw_arena *a, const struct gw_stats_scope *scope);
struct json_object *gw_master_stats_detail(struct gw_master *m, struct json_object *req,
                                           struct gw_arena *a, const struct gw_stats_scope *scope);
struct json_object *gw_master_stats_totals(struct gw_master *m, struct json_object *req,
                                           struct gw_arena *a, const struct gw_stats_scope *scope);
int gw_master_stats_time_parse(const char *s, int64_t *us);
int gw_master_stats_when_parse(const char *s, int64_t now_us, int64_t *us);
int gw_master_stats_dims_parse(const char *s, int *dims, size_t *n);
const char *gw_master_stats_dim_name(int dim);

struct json_object *gw_master_endpoint_test(const struct gw_config *cfg,
                                            const struct gw_model *model, long only_target,
                                            bool *all_ok);

/*
 * BYOK provider credentials (providers.c): the commands provider.add
 * (name, type, tenant, for, base_url, api_key: the secret, scrubbed from
 * req once read), provider.list (tenant: only its), provider.delete
 * (name), and provider.test (name), which answers on fd from a child of
 * the master and returns NULL when the child took the connection over.
 */
struct json_object *gw_master_provider_add(struct gw_master *m, struct json_object *req,
                                           struct gw_arena *a);
struct json_object *gw_master_provider_list(struct gw_master *m, struct json_object *req,
                                            struct gw_arena *a);
struct json_object *gw_master_provider_delete(struct gw_master *m, struct json_object *req,
                                              struct gw_arena *a);
struct json_object *gw_master_provider_test(struct gw_master *m, struct json_object *req,
                                            struct gw_arena *a, int fd);

/*
 * The model catalogue (catalogue.c): model.list, every model of the
 * running generation as GET /v1/models gives it; model.show (model), one
 * of them with "url", where clients reach the gateway.
 */
struct json_object *gw_master_model_list(struct gw_master *m, struct json_object *req,
                                         struct gw_arena *a);
struct json_object *gw_master_model_show(struct gw_master *m, struct json_object *req,
                                         struct gw_arena *a);

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
void gw_master_control_serve(int lfd, struct gw_master *m);

/*
 * Replies of the admin protocol, for every file that implements commands:
 * {"ok": false, "error": message} and {"ok": true}; the caller owns the
 * object.  gw_master_arg_string: a string argument of the request, or NULL.
 */
struct json_object;
struct json_object *gw_master_reply_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
struct json_object *gw_master_reply_ok(void);
const char *gw_master_arg_string(struct json_object *req, const char *name);

/*
 * Accounts (accounts.c): tenants, users, grants, key rotation and the
 * audit log, and who the admin socket's caller is.
 *
 * gw_master_accounts_caller: map the peer's uid/gid to a caller: root,
 * the master's own uid and members of the "aigw" group are gateway
 * admins; another uid is the user added with that --uid (an admin when
 * granted gateway-admin).  GW_EPERM when the uid maps to no one.
 *
 * gw_master_accounts_act_as: a request that carries "as_user" (the HTTP
 * admin API: a worker forwards it for the owner of the API key, named in
 * "as_user", the key in "via_key") runs as that user, with that user's
 * permissions, exactly as for an aigwctl caller mapped to the user.  Only
 * a peer whose uid is root or the master's own effective uid (the
 * workers' uid) may ask; the user must hold a role that may use the admin
 * API (any but endpoint-user).  Fills *out, takes the two fields out of
 * req and returns NULL, or returns the refusal (owned by the caller).
 * peer is the socket caller.
 *
 * gw_master_accounts_run: before control.c's own table: refuses what the
 * caller may not run (the permission table), runs the accounts commands,
 * and prepares key.create (the owner's tenant).  Returns a reply (owned by
 * the caller) and sets *handled, or returns NULL with *handled false to
 * let control.c run cmd.
 *
 * gw_master_accounts_after: with every reply: records a successful change
 * in the audit log, narrows what a non-admin caller sees, and gives an
 * error reply its "code" (permission_denied, not_found, unknown_command,
 * internal, invalid) for the HTTP admin API to answer with.  Returns the
 * reply to send (reply itself, or a replacement after releasing it).
 */
struct gw_caller {
    uid_t uid; /* the socket peer's uid; (uid_t)-1 for a user without --uid over HTTP */
    bool admin;
    char name[96]; /* the user's name, or the account name of the uid */
    bool http;     /* acting for the owner of an API key (the HTTP admin API) */
    char key[32];  /* that key's id */
};

int gw_master_accounts_caller(struct gw_master *m, uid_t uid, gid_t gid, struct gw_caller *out);
struct json_object *gw_master_accounts_act_as(struct gw_master *m, const struct gw_caller *peer,
                                              struct json_object *req, struct gw_caller *out);
struct json_object *gw_master_accounts_run(struct gw_master *m, const struct gw_caller *c,
                                           const char *cmd, struct json_object *req,
                                           struct gw_arena *a, bool *handled);
struct json_object *gw_master_accounts_after(struct gw_master *m, const struct gw_caller *c,
                                             const char *cmd, struct json_object *req,
                                             struct json_object *reply);

/*
 * Quotas (quota.c).  The commands quota.set, quota.show, quota.clear;
 * gw_master_quota_seed_all fills every quota's shm counter from the usage
 * stored for its current period (a fresh segment); gw_master_quota_tick
 * (once a second) raises the alerts of quotas over their threshold.
 */
/* The scope a limit or quota command names (--key, --user, --tenant or
 * --model, exactly one) as "kind:name" in a; with check, the thing must
 * exist.  NULL with *err set otherwise (control.c). */
const char *gw_master_scope_arg(struct gw_master *m, struct json_object *req, struct gw_arena *a,
                                bool check, struct json_object **err);
struct json_object *gw_master_quota_set(struct gw_master *m, struct json_object *req,
                                        struct gw_arena *a);
struct json_object *gw_master_quota_show(struct gw_master *m, struct json_object *req,
                                         struct gw_arena *a);
struct json_object *gw_master_quota_clear(struct gw_master *m, struct json_object *req,
                                          struct gw_arena *a);
int gw_master_quota_seed_all(struct gw_master *m);
void gw_master_quota_tick(struct gw_master *m);

/*
 * The response cache and request capture (cache.c).  start: at start and
 * after each reload: open the cache when a model caches, make the capture
 * directory (capture_prepare, also before privileges are dropped).  tick
 * (once a second): remove expired entries, sync the cache to disk every
 * few seconds.  reader_check: after a worker died.  stop: sync and close.
 * The commands cache.stats, cache.purge and capture.info.
 */
int gw_master_cache_start(struct gw_master *m);
int gw_master_capture_prepare(const struct gw_config *cfg);
void gw_master_cache_tick(struct gw_master *m);
void gw_master_cache_reader_check(struct gw_master *m);
void gw_master_cache_stop(struct gw_master *m);
struct json_object *gw_master_cache_stats(struct gw_master *m, struct json_object *req,
                                          struct gw_arena *a);
struct json_object *gw_master_cache_purge(struct gw_master *m, struct json_object *req,
                                          struct gw_arena *a);
struct json_object *gw_master_capture_info(struct gw_master *m, struct json_object *req,
                                           struct gw_arena *a);

/*
 * Privileges (privs.c).  cfg->user (and cfg->group, default the user's
 * primary group) is who aigwd runs as once root-only work is done.
 *
 * gw_master_privs_chown: when running as root with cfg->user set, make
 * path owned by that user and group (not following a symlink); for a
 * directory, also the plain files directly in it (an LMDB environment
 * and secret left by a run as root).  A path that does not exist is
 * fine.  Otherwise does nothing.  Call it for state_dir, the admin
 * socket, log files and the shm segment before gw_master_privs_drop.
 *
 * gw_master_privs_drop: as root with cfg->user set: initgroups, setgid,
 * setuid, then check that root cannot be regained.  Not root: nothing to
 * drop; a warning when the configured user is not the one running.
 * Both return 0 or GW_E* (unknown user or group: GW_ENOENT) after
 * logging the failed call.
 */
int gw_master_privs_chown(const struct gw_config *cfg, const char *path);
int gw_master_privs_drop(const struct gw_config *cfg);

#endif
