/*
 * control.c - the admin Unix socket and the management commands behind
 * it.  Every management operation exists once, here; aigwctl and the HTTP
 * admin API (a worker forwards each call, acting for the API key's owner:
 * see gw_master_accounts_act_as) are clients.
 *
 * Protocol: one JSON request per line, one JSON reply per line, then the
 * master closes.  Callers are checked with SO_PEERCRED: root and the
 * master's own user may manage the gateway.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "master/master.h"

#define CONTROL_IO_TIMEOUT_S 2
#define KEY_NAME_MAX 128

int
gw_master_control_open(const struct gw_config *cfg)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char *path = cfg->admin_socket;
    int fd = -1;

    if (strlen(path) >= sizeof(sa.sun_path)) {
        gw_log(GW_LOG_ERROR, "admin socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);

    /* A socket file that still answers belongs to a running master. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        gw_log(GW_LOG_ERROR, "socket(AF_UNIX): %s", strerror(errno));
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        gw_log(GW_LOG_ERROR, "another aigwd is running on admin socket %s", path);
        goto fail;
    }
    unlink(path);

    char dir[sizeof(sa.sun_path)];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash != NULL && slash != dir) {
        *slash = '\0';
        if (gw_mkdir_p(dir, 0755) != 0)
            goto fail;
    }
    /* Bind under a restrictive umask so there is no moment at which the
     * socket is more open than configured. */
    mode_t old = umask(0177);
    int brc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (brc != 0) {
        gw_log(GW_LOG_ERROR, "bind(%s): %s", path, strerror(errno));
        goto fail;
    }
    if (chmod(path, cfg->admin_mode) != 0) {
        gw_log(GW_LOG_ERROR, "chmod(%s, %04o): %s", path, cfg->admin_mode, strerror(errno));
        goto fail;
    }
    if (listen(fd, 64) != 0) {
        gw_log(GW_LOG_ERROR, "listen(%s): %s", path, strerror(errno));
        goto fail;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
fail:
    close(fd);
    return -1;
}

/* ------------------------------------------------------------ replies */

struct json_object *
gw_master_reply_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    struct json_object *o = json_object_new_object();

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    json_object_object_add(o, "ok", json_object_new_boolean(0));
    json_object_object_add(o, "error", json_object_new_string(msg));
    return o;
}

struct json_object *
gw_master_reply_ok(void)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "ok", json_object_new_boolean(1));
    return o;
}

static struct json_object *
key_json(const struct gw_key *k)
{
    struct json_object *o = json_object_new_object(), *models = json_object_new_array();

    json_object_object_add(o, "id", json_object_new_string(k->id));
    json_object_object_add(o, "name", json_object_new_string(k->name));
    json_object_object_add(o, "prefix", json_object_new_string(k->prefix));
    for (size_t i = 0; i < k->nmodels; i++)
        json_object_array_add(models, json_object_new_string(k->models[i]));
    json_object_object_add(o, "models", models);
    json_object_object_add(o, "disabled", json_object_new_boolean(k->disabled));
    json_object_object_add(o, "created", json_object_new_int64(k->created));
    json_object_object_add(o, "expires", k->expires > 0 ? json_object_new_int64(k->expires) : NULL);
    json_object_object_add(o, "route", json_object_new_string(k->route ? k->route : ""));
    json_object_object_add(o, "route_header", json_object_new_boolean(k->route_header));
    json_object_object_add(o, "owner", json_object_new_string(k->owner ? k->owner : ""));
    json_object_object_add(o, "tenant", json_object_new_string(k->tenant ? k->tenant : ""));
    return o;
}

const char *
gw_master_arg_string(struct json_object *req, const char *name)
{
    struct json_object *v;

    if (!json_object_object_get_ex(req, name, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* ----------------------------------------------------------- commands */

/* Workers by state, from the scoreboard. */
static void
workers_count(struct gw_master *m, int counts[GW_WORKER_NSTATES], int64_t *in_flight,
              int64_t *conns)
{
    const struct gw_shm *shm = &m->shm;

    memset(counts, 0, GW_WORKER_NSTATES * sizeof(int));
    *in_flight = *conns = 0;
    for (uint64_t i = 0; i < shm->hdr->nworkers; i++) {
        struct gw_shm_worker *w = gw_shm_worker(shm, i);
        if (atomic_load(&w->pid) == 0)
            continue;
        int state = atomic_load(&w->state);
        if (state >= 0 && state < GW_WORKER_NSTATES)
            counts[state]++;
        *in_flight += atomic_load(&w->busy); /* requests a worker has in hand */
        *conns += atomic_load(&w->conns);
    }
}

static struct json_object *
cmd_status(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct gw_shm_header *h = m->shm.hdr;
    struct json_object *o = gw_master_reply_ok(), *workers = json_object_new_object();
    int counts[GW_WORKER_NSTATES];
    int64_t in_flight, conns;

    (void)req, (void)a;
    workers_count(m, counts, &in_flight, &conns);
    json_object_object_add(o, "version", json_object_new_string(GW_VERSION));
    json_object_object_add(o, "pid", json_object_new_int64(getpid()));
    json_object_object_add(o, "config", json_object_new_string(m->conf_path));
    json_object_object_add(o, "uptime", json_object_new_int64(time(NULL) - m->started));
    json_object_object_add(o, "shm", json_object_new_string(m->shm.name));
    json_object_object_add(o, "generation", json_object_new_int64((int64_t)h->generation));
    json_object_object_add(o, "reloads", json_object_new_int64((int64_t)h->reloads));
    json_object_object_add(o, "reload_failures",
                           json_object_new_int64((int64_t)h->reload_failures));
    json_object_object_add(workers, "configured",
                           json_object_new_int(gw_master_pool_wanted(&m->pool)));
    json_object_object_add(workers, "max", json_object_new_int(m->pool.n));
    for (int st = GW_WORKER_STARTING; st < GW_WORKER_NSTATES; st++)
        json_object_object_add(workers, gw_shm_worker_state_names[st],
                               json_object_new_int(counts[st]));
    json_object_object_add(o, "workers", workers);
    json_object_object_add(o, "requests",
                           json_object_new_int64((int64_t)atomic_load(&h->requests)));
    json_object_object_add(o, "in_flight", json_object_new_int64(in_flight));
    json_object_object_add(o, "connections", json_object_new_int64(conns));
    json_object_object_add(o, "models", json_object_new_int64((int64_t)m->cfg->nmodels));
    json_object_object_add(o, "providers", json_object_new_int64((int64_t)m->cfg->nproviders));
    return o;
}

static struct json_object *
cmd_workers(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const struct gw_shm *shm = &m->shm;
    struct json_object *o = gw_master_reply_ok(), *arr = json_object_new_array();
    int64_t now_ms = (int64_t)time(NULL) * 1000;

    (void)req, (void)a;
    for (uint64_t i = 0; i < shm->hdr->nworkers; i++) {
        struct gw_shm_worker *w = gw_shm_worker(shm, i);
        pid_t pid = atomic_load(&w->pid);
        if (pid <= 0)
            continue;
        int state = atomic_load(&w->state);
        struct json_object *e = json_object_new_object();
        json_object_object_add(e, "slot", json_object_new_int64((int64_t)i));
        json_object_object_add(e, "pid", json_object_new_int64(pid));
        json_object_object_add(e, "state",
                               json_object_new_string(state >= 0 && state < GW_WORKER_NSTATES
                                                          ? gw_shm_worker_state_names[state]
                                                          : "?"));
        json_object_object_add(e, "requests",
                               json_object_new_int64((int64_t)atomic_load(&w->requests)));
        json_object_object_add(e, "started", json_object_new_int64(atomic_load(&w->started)));
        json_object_object_add(e, "connections", json_object_new_int(atomic_load(&w->conns)));
        /* "?" when it cannot be read: the process just went. */
        cpu_set_t set;
        char cpus[256];
        json_object_object_add(
            e, "cpus",
            json_object_new_string(sched_getaffinity(pid, sizeof(set), &set) == 0
                                       ? gw_master_cpus_text(&set, cpus, sizeof(cpus))
                                       : "?"));
        json_object_object_add(e, "busy_ms",
                               json_object_new_int64(state == GW_WORKER_BUSY
                                                         ? now_ms - atomic_load(&w->busy_since)
                                                         : 0));
        json_object_array_add(arr, e);
    }
    json_object_object_add(o, "workers", arr);
    return o;
}

static struct json_object *
cmd_reload(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    char err[1024];

    (void)req, (void)a;
    gw_log(GW_LOG_INFO, "reload requested over the admin socket");
    if (gw_master_reload(m, err, sizeof(err)) != 0)
        return gw_master_reply_error("%s", err);
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "generation", json_object_new_int64((int64_t)m->shm.hdr->generation));
    return o;
}

static struct json_object *
cmd_usage(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct gw_usage_totals t;
    int rc;

    (void)req, (void)a;
    /* What workers accounted a moment ago is in the ring: store it first. */
    gw_master_usage_drain(m);
    if ((rc = gw_store_usage_totals(m->store, &t)) != 0)
        return gw_master_reply_error("could not read usage: %s", gw_strerror(rc));
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "requests", json_object_new_int64((int64_t)t.requests));
    json_object_object_add(o, "input_tokens", json_object_new_int64((int64_t)t.input_tokens));
    json_object_object_add(o, "output_tokens", json_object_new_int64((int64_t)t.output_tokens));
    return o;
}

/* usage.stats and usage.detail of an admin: everything. */
static struct json_object *
cmd_usage_stats(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    return gw_master_stats_usage(m, req, a, NULL);
}

static struct json_object *
cmd_usage_detail(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    return gw_master_stats_detail(m, req, a, NULL);
}

/* When a key made now with --expires s stops working: a date, or a time
 * from now ("30s", "12h", "90d", "2w"); it must be in the future. */
static int
expires_parse(const char *s, int64_t *out)
{
    int64_t now = time(NULL), us;
    char *end;
    long long n = strtoll(s, &end, 10);

    if (end != s && n > 0 && end[0] != '\0' && end[1] == '\0' && strchr("smhdw", end[0])) {
        static const int64_t unit[] = {['s' - 'a'] = 1,
                                       ['m' - 'a'] = 60,
                                       ['h' - 'a'] = 3600,
                                       ['d' - 'a'] = 86400,
                                       ['w' - 'a'] = 604800};
        if (n > 100LL * 366 * 86400 / unit[end[0] - 'a'])
            return GW_EINVAL;
        *out = now + (int64_t)n * unit[end[0] - 'a'];
        return 0;
    }
    if (gw_master_stats_time_parse(s, &us) != 0 || us / 1000000 <= now)
        return GW_EINVAL;
    *out = us / 1000000;
    return 0;
}

static struct json_object *
cmd_key_create(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct gw_key key = {0};
    char id[GW_KEY_ID_LEN + 1], secret[GW_KEY_SECRET_LEN];
    unsigned char hash[GW_KEY_HASH_LEN];
    struct json_object *models, *o;
    const char *name = gw_master_arg_string(req, "name");
    int rc;

    if (name == NULL || name[0] == '\0')
        return gw_master_reply_error("a key needs a name (--name NAME)");
    if (strlen(name) > KEY_NAME_MAX)
        return gw_master_reply_error("key name is longer than %d characters", KEY_NAME_MAX);
    /* A name is printed on administrators' terminals. */
    for (const char *c = name; *c; c++)
        if (gw_utf8_control(c) != 0)
            return gw_master_reply_error("key name contains a control character");
    if (json_object_object_get_ex(req, "models", &models) &&
        json_object_is_type(models, json_type_array)) {
        key.nmodels = json_object_array_length(models);
        key.models = gw_arena_alloc(a, (key.nmodels + 1) * sizeof(char *));
        for (size_t i = 0; i < key.nmodels; i++) {
            const char *model = json_object_get_string(json_object_array_get_idx(models, i));
            if (model == NULL || !gw_config_callable(m->cfg, model))
                return gw_master_reply_error("unknown model \"%s\" (not in %s)", model ? model : "",
                                             m->cfg->path);
            key.models[i] = gw_arena_strdup(a, model);
        }
    }
    const char *route = gw_master_arg_string(req, "route");
    if (route != NULL && route[0] != '\0') {
        int known = 0;
        for (int i = 0; i < GW_ROUTE_NSTRATEGIES; i++)
            known |= strcmp(route, gw_route_strategy_names[i]) == 0;
        if (!known)
            return gw_master_reply_error(
                "unknown routing strategy \"%s\" (weighted, sticky, least_busy, "
                "latency, price, throughput)",
                route);
        key.route = (char *)route;
    }
    struct json_object *rh;
    if (json_object_object_get_ex(req, "route_header", &rh))
        key.route_header = json_object_get_boolean(rh);
    const char *expires = gw_master_arg_string(req, "expires");
    if (expires != NULL && expires_parse(expires, &key.expires) != 0)
        return gw_master_reply_error("--expires %s: expected a date (YYYY-MM-DD or "
                                     "YYYY-MM-DDTHH:MM[:SS]Z) or a time from now (30s, 12h, "
                                     "90d, 2w) in the future",
                                     expires);
    if (gw_key_generate(id, secret) != 0)
        return gw_master_reply_error("could not generate a key: no randomness");
    key.id = id;
    key.name = (char *)name;
    /* The owner was checked, and its tenant set, by gw_master_accounts_run. */
    key.owner = (char *)gw_master_arg_string(req, "user");
    key.tenant = (char *)gw_master_arg_string(req, "tenant");
    /* Enough of the secret to recognise it in a list, far too little to use. */
    key.prefix = gw_arena_printf(a, "%.12s...", secret);
    key.created = time(NULL);
    gw_key_hash(m->secret, secret, strlen(secret), hash);
    if ((rc = gw_store_key_add(m->store, &key, hash)) != 0)
        return gw_master_reply_error("could not store the key: %s", gw_strerror(rc));
    atomic_fetch_add(&m->shm.hdr->keys_generation, 1);
    gw_log(GW_LOG_INFO, "key %s (\"%s\") created", id, name);
    o = gw_master_reply_ok();
    json_object_object_add(o, "key", key_json(&key));
    json_object_object_add(o, "secret", json_object_new_string(secret));
    memset(secret, 0, sizeof(secret));
    return o;
}

static struct json_object *
cmd_key_list(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct gw_key **keys;
    size_t n;
    int rc = gw_store_key_list(m->store, a, &keys, &n);

    (void)req;
    if (rc != 0)
        return gw_master_reply_error("could not list keys: %s", gw_strerror(rc));
    struct json_object *o = gw_master_reply_ok(), *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++)
        json_object_array_add(arr, key_json(keys[i]));
    json_object_object_add(o, "keys", arr);
    return o;
}

static struct json_object *
cmd_key_show(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const char *id = gw_master_arg_string(req, "id");
    struct gw_key *k;
    int rc;

    if (id == NULL)
        return gw_master_reply_error("which key? (give its id)");
    if ((rc = gw_store_key_get(m->store, id, a, &k)) == GW_ENOENT)
        return gw_master_reply_error("no key with id \"%s\"", id);
    if (rc != 0)
        return gw_master_reply_error("could not read key %s: %s", id, gw_strerror(rc));
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "key", key_json(k));
    return o;
}

/* enable, disable and delete differ only in the store call and the word. */
static struct json_object *
key_change(struct gw_master *m, struct json_object *req, const char *verb)
{
    const char *id = gw_master_arg_string(req, "id");
    int rc;

    if (id == NULL)
        return gw_master_reply_error("which key? (give its id)");
    if (strcmp(verb, "deleted") == 0)
        rc = gw_store_key_del(m->store, id);
    else
        rc = gw_store_key_set_disabled(m->store, id, strcmp(verb, "disabled") == 0);
    if (rc == GW_ENOENT)
        return gw_master_reply_error("no key with id \"%s\"", id);
    if (rc != 0)
        return gw_master_reply_error("could not change key %s: %s", id, gw_strerror(rc));
    /* Workers cache keys: this tells them their copies are stale. */
    atomic_fetch_add(&m->shm.hdr->keys_generation, 1);
    gw_log(GW_LOG_INFO, "key %s %s", id, verb);
    return gw_master_reply_ok();
}

static struct json_object *
cmd_key_disable(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    (void)a;
    return key_change(m, req, "disabled");
}

static struct json_object *
cmd_key_enable(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    (void)a;
    return key_change(m, req, "enabled");
}

static struct json_object *
cmd_key_delete(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    (void)a;
    return key_change(m, req, "deleted");
}

/* ------------------------------------------------------- rate limits */

/*
 * The scope a limit or quota command names: "key:ID" (a key that
 * exists), "user:NAME", "tenant:NAME" (that exist) or "model:NAME" (a
 * model of the running configuration), in a.  With check false the thing
 * need not exist (clearing what a deleted key left).  NULL with *err set
 * when not exactly one is given, or the thing is not there.
 */
const char *
gw_master_scope_arg(struct gw_master *m, struct json_object *req, struct gw_arena *a, bool check,
                    struct json_object **err)
{
    static const char *const kinds[] = {"key", "user", "tenant", "model"};
    const char *kind = NULL, *name = NULL;
    char *json;
    struct gw_key *k;
    int rc = 0;

    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        const char *v = gw_master_arg_string(req, kinds[i]);
        if (v == NULL)
            continue;
        if (kind != NULL) {
            *err = gw_master_reply_error("name one scope only, not --%s and --%s", kind, kinds[i]);
            return NULL;
        }
        kind = kinds[i];
        name = v;
    }
    if (kind == NULL) {
        *err = gw_master_reply_error(
            "name one scope: --key ID, --user NAME, --tenant NAME or --model NAME");
        return NULL;
    }
    /* Bucket and counter names in shm hold the scope and a little more. */
    if (strlen(kind) + 1 + strlen(name) >= GW_SHM_NAME_LEN - 8) {
        *err = gw_master_reply_error("%s name too long", kind);
        return NULL;
    }
    if (!check)
        return gw_arena_printf(a, "%s:%s", kind, name);
    if (strcmp(kind, "model") == 0) {
        if (gw_config_model_find(m->cfg, name) == NULL) {
            *err =
                gw_master_reply_error("no model named \"%s\" in the running configuration", name);
            return NULL;
        }
    } else if (strcmp(kind, "key") == 0) {
        rc = gw_store_key_get(m->store, name, a, &k);
    } else {
        rc = gw_store_rec_get(m->store, kind[0] == 'u' ? GW_DB_USERS : GW_DB_TENANTS, name, a,
                              &json);
    }
    if (rc == GW_ENOENT) {
        *err = strcmp(kind, "key") == 0 ? gw_master_reply_error("no key with id \"%s\"", name)
                                        : gw_master_reply_error("no %s \"%s\"", kind, name);
        return NULL;
    }
    if (rc != 0) {
        *err = gw_master_reply_error("could not read %s %s: %s", kind, name, gw_strerror(rc));
        return NULL;
    }
    return gw_arena_printf(a, "%s:%s", kind, name);
}

static void
limit_add(struct json_object *o, const char *name, uint64_t v)
{
    json_object_object_add(o, name, v == GW_LIMIT_UNSET ? NULL : json_object_new_int64((int64_t)v));
}

/* The configured default of scope (before any override). */
static struct gw_limits
limit_default(const struct gw_master *m, const char *scope)
{
    if (strncmp(scope, "model:", 6) == 0) {
        const struct gw_model *md = gw_config_model_find(m->cfg, scope + 6);
        if (md != NULL)
            return md->limits;
        return m->cfg->model_limits;
    }
    if (strncmp(scope, "user:", 5) == 0)
        return m->cfg->user_limits;
    if (strncmp(scope, "tenant:", 7) == 0)
        return m->cfg->tenant_limits;
    return m->cfg->key_limits;
}

static struct json_object *
limit_json(const struct gw_master *m, const char *scope, const struct gw_limits *over)
{
    struct json_object *o = json_object_new_object(), *d = json_object_new_object();
    struct json_object *ov = NULL;
    struct gw_limits def = limit_default(m, scope);

    json_object_object_add(o, "scope", json_object_new_string(scope));
    limit_add(o, "rpm", over != NULL && over->rpm != GW_LIMIT_UNSET ? over->rpm : def.rpm);
    limit_add(o, "tpm", over != NULL && over->tpm != GW_LIMIT_UNSET ? over->tpm : def.tpm);
    limit_add(d, "rpm", def.rpm);
    limit_add(d, "tpm", def.tpm);
    json_object_object_add(o, "default", d);
    if (over != NULL) {
        ov = json_object_new_object();
        limit_add(ov, "rpm", over->rpm);
        limit_add(ov, "tpm", over->tpm);
    }
    json_object_object_add(o, "override", ov);
    return o;
}

/* An integer argument 0..1e9, or GW_LIMIT_UNSET when absent. */
static int
limit_arg(struct json_object *req, const char *name, uint64_t *out)
{
    struct json_object *v;

    *out = GW_LIMIT_UNSET;
    if (!json_object_object_get_ex(req, name, &v))
        return 0;
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
        json_object_get_int64(v) > 1000000000)
        return GW_EINVAL;
    *out = (uint64_t)json_object_get_int64(v);
    return 0;
}

static struct json_object *
cmd_limit_set(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct json_object *err = NULL;
    const char *scope = gw_master_scope_arg(m, req, a, true, &err);
    struct gw_limits l, old;
    int rc;

    if (scope == NULL)
        return err;
    if (limit_arg(req, "rpm", &l.rpm) != 0 || limit_arg(req, "tpm", &l.tpm) != 0)
        return gw_master_reply_error("--rpm and --tpm take a whole number from 0 to 1000000000");
    if (l.rpm == GW_LIMIT_UNSET && l.tpm == GW_LIMIT_UNSET)
        return gw_master_reply_error("give --rpm N, --tpm N or both");
    /* A field not given keeps what an earlier set gave it. */
    if ((rc = gw_store_limit_get(m->store, scope, &old)) == 0) {
        if (l.rpm == GW_LIMIT_UNSET)
            l.rpm = old.rpm;
        if (l.tpm == GW_LIMIT_UNSET)
            l.tpm = old.tpm;
    } else if (rc != GW_ENOENT) {
        return gw_master_reply_error("could not read the limits of %s: %s", scope, gw_strerror(rc));
    }
    if ((rc = gw_store_limit_set(m->store, scope, &l)) != 0)
        return gw_master_reply_error("could not store the limits of %s: %s", scope,
                                     gw_strerror(rc));
    /* Workers cache overrides with the keys: this makes them re-read. */
    atomic_fetch_add(&m->shm.hdr->keys_generation, 1);
    gw_log(GW_LOG_INFO, "limits of %s set", scope);
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "limit", limit_json(m, scope, &l));
    return o;
}

static struct json_object *
cmd_limit_show(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct json_object *err = NULL, *o, *arr = json_object_new_array();
    struct gw_limits l, *ls;
    char **scopes;
    size_t n;
    int rc;

    if (gw_master_arg_string(req, "key") != NULL || gw_master_arg_string(req, "model") != NULL ||
        gw_master_arg_string(req, "user") != NULL || gw_master_arg_string(req, "tenant") != NULL) {
        const char *scope = gw_master_scope_arg(m, req, a, true, &err);
        if (scope == NULL) {
            json_object_put(arr);
            return err;
        }
        rc = gw_store_limit_get(m->store, scope, &l);
        if (rc != 0 && rc != GW_ENOENT) {
            json_object_put(arr);
            return gw_master_reply_error("could not read the limits of %s: %s", scope,
                                         gw_strerror(rc));
        }
        json_object_array_add(arr, limit_json(m, scope, rc == 0 ? &l : NULL));
    } else {
        if ((rc = gw_store_limit_list(m->store, a, &scopes, &ls, &n)) != 0) {
            json_object_put(arr);
            return gw_master_reply_error("could not list limits: %s", gw_strerror(rc));
        }
        for (size_t i = 0; i < n; i++)
            json_object_array_add(arr, limit_json(m, scopes[i], &ls[i]));
    }
    o = gw_master_reply_ok();
    json_object_object_add(o, "limits", arr);
    return o;
}

static struct json_object *
cmd_limit_clear(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct json_object *err = NULL;
    /* A deleted key or a model gone from the configuration may still have
     * an override to clear: name the scope without checking it exists. */
    const char *scope = gw_master_scope_arg(m, req, a, false, &err);
    int rc;

    if (scope == NULL)
        return err;
    if ((rc = gw_store_limit_del(m->store, scope)) == GW_ENOENT)
        return gw_master_reply_error("%s has no limit override", scope);
    if (rc != 0)
        return gw_master_reply_error("could not clear the limits of %s: %s", scope,
                                     gw_strerror(rc));
    atomic_fetch_add(&m->shm.hdr->keys_generation, 1);
    gw_log(GW_LOG_INFO, "limits of %s cleared", scope);
    return gw_master_reply_ok();
}

/* ------------------------------------------------- breakers, endpoints */

static const char *const breaker_state_names[] = {"closed", "open", "half-open"};

/* The stat entry of target t of cfg ("t:provider/model"), or NULL when
 * there is none (yet). */
static struct gw_shm_stat *
target_stat(const struct gw_master *m, const struct gw_target *t)
{
    char name[GW_SHM_NAME_LEN];

    snprintf(name, sizeof(name), "t:%s/%s", m->cfg->providers[t->provider].name, t->model);
    long idx = gw_shm_stat_find(&m->shm, name, false);
    return idx >= 0 ? gw_shm_stat_at(&m->shm, (size_t)idx) : NULL;
}

/* "provider/model" of t, in a. */
static char *
target_name(const struct gw_master *m, const struct gw_target *t, struct gw_arena *a)
{
    return gw_arena_printf(a, "%s/%s", m->cfg->providers[t->provider].name, t->model);
}

/* Seconds from now (monotonic ms) until at, 0 when past, to 0.1 s. */
static double
seconds_until(int64_t at, int64_t now)
{
    return at > now ? (double)((at - now + 99) / 100) / 10.0 : 0;
}

static struct json_object *
breaker_json(const struct gw_master *m, const struct gw_model *mod, const struct gw_target *t,
             struct gw_arena *a)
{
    struct json_object *o = json_object_new_object();
    const struct gw_provider *p = &m->cfg->providers[t->provider];
    struct gw_shm_stat *st = target_stat(m, t);
    int64_t now = gw_now_ms();
    int32_t state = st ? atomic_load(&st->breaker_state) : GW_BREAKER_CLOSED;
    int64_t ttft_us = st ? atomic_load(&st->ewma_ttft_us) : 0;
    int64_t tps_milli = st ? atomic_load(&st->ewma_tokens_per_s_milli) : 0;
    /* The error-rate window's counts, while it runs; the next attempt
     * would start a new one after it. */
    bool window = st && now - atomic_load(&st->window_start_ms) < mod->routing.breaker_window_ms;
    uint64_t window_requests = window ? atomic_load(&st->window_requests) : 0;
    uint64_t window_failures = window ? atomic_load(&st->window_failures) : 0;

    if (state < GW_BREAKER_CLOSED || state > GW_BREAKER_HALF_OPEN)
        state = GW_BREAKER_CLOSED;
    json_object_object_add(o, "target", json_object_new_string(target_name(m, t, a)));
    json_object_object_add(o, "model", json_object_new_string(mod->name));
    json_object_object_add(o, "state", json_object_new_string(breaker_state_names[state]));
    json_object_object_add(o, "threshold", json_object_new_int64(mod->routing.breaker_failures));
    json_object_object_add(o, "error_rate",
                           json_object_new_double(mod->routing.breaker_error_rate));
    json_object_object_add(o, "window_requests", json_object_new_int64((int64_t)window_requests));
    json_object_object_add(o, "window_failures", json_object_new_int64((int64_t)window_failures));
    json_object_object_add(
        o, "consecutive_failures",
        json_object_new_int64(st ? (int64_t)atomic_load(&st->consecutive_failures) : 0));
    json_object_object_add(o, "failures",
                           json_object_new_int64(st ? (int64_t)atomic_load(&st->failures) : 0));
    json_object_object_add(
        o, "opened", json_object_new_int64(st ? (int64_t)atomic_load(&st->breaker_opened) : 0));
    json_object_object_add(
        o, "retry_in_s",
        json_object_new_double(st && state == GW_BREAKER_OPEN
                                   ? seconds_until(atomic_load(&st->breaker_until_ms), now)
                                   : 0));
    json_object_object_add(
        o, "not_before_s",
        json_object_new_double(st ? seconds_until(atomic_load(&st->not_before_ms), now) : 0));
    json_object_object_add(o, "health",
                           json_object_new_string(p->health_interval_ms <= 0 ? "unchecked"
                                                  : st && atomic_load(&st->health_down) ? "down"
                                                                                        : "up"));
    json_object_object_add(o, "in_flight",
                           json_object_new_int64(st ? atomic_load(&st->in_flight) : 0));
    json_object_object_add(o, "ttft_ms", json_object_new_double((double)ttft_us / 1000.0));
    json_object_object_add(o, "tokens_per_s",
                           json_object_new_double((double)(tps_milli / 100) / 10.0));
    return o;
}

static struct json_object *
cmd_breaker_list(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct json_object *o = gw_master_reply_ok(), *arr = json_object_new_array();

    (void)req;
    for (size_t i = 0; i < m->cfg->nmodels; i++) {
        const struct gw_model *mod = &m->cfg->models[i];
        for (size_t j = 0; j < mod->ntargets; j++)
            json_object_array_add(arr, breaker_json(m, mod, &mod->targets[j], a));
    }
    json_object_object_add(o, "targets", arr);
    return o;
}

/*
 * Close the breaker of one target ("provider/model") or of "all", and
 * forget its consecutive failures, its error-rate window and any
 * Retry-After hold.  Totals (failures, times opened) stay.
 */
static struct json_object *
cmd_breaker_reset(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const char *which = gw_master_arg_string(req, "target");
    struct json_object *done = json_object_new_array();

    if (which == NULL || which[0] == '\0') {
        json_object_put(done);
        return gw_master_reply_error("which target? give PROVIDER/MODEL, or all");
    }
    bool all = strcmp(which, "all") == 0;
    for (size_t i = 0; i < m->cfg->nmodels; i++) {
        const struct gw_model *mod = &m->cfg->models[i];
        for (size_t j = 0; j < mod->ntargets; j++) {
            const char *name = target_name(m, &mod->targets[j], a);
            struct gw_shm_stat *st = target_stat(m, &mod->targets[j]);
            bool seen = false;
            if (!all && strcmp(name, which) != 0)
                continue;
            /* A target in several models has one breaker: list it once. */
            for (size_t k = 0; k < json_object_array_length(done); k++)
                seen |=
                    strcmp(json_object_get_string(json_object_array_get_idx(done, k)), name) == 0;
            if (seen)
                continue;
            json_object_array_add(done, json_object_new_string(name));
            if (st == NULL)
                continue;
            atomic_store(&st->breaker_state, GW_BREAKER_CLOSED);
            atomic_store(&st->breaker_until_ms, 0);
            atomic_store(&st->consecutive_failures, 0);
            atomic_store(&st->window_start_ms, gw_now_ms());
            atomic_store(&st->window_requests, 0);
            atomic_store(&st->window_failures, 0);
            atomic_store(&st->not_before_ms, 0);
        }
    }
    if (json_object_array_length(done) == 0) {
        json_object_put(done);
        return gw_master_reply_error("no target \"%s\" in the running configuration (give "
                                     "PROVIDER/MODEL as breaker list shows it, or all)",
                                     which);
    }
    gw_log(GW_LOG_INFO, "breaker of %s reset over the admin socket", all ? "every target" : which);
    struct json_object *o = gw_master_reply_ok();
    json_object_object_add(o, "reset", done);
    return o;
}

/* Send reply as one line on fd. */
static void
reply_write(int fd, struct json_object *reply)
{
    size_t len;
    const char *s = json_object_to_json_string_length(reply, JSON_C_TO_STRING_PLAIN, &len);

    if (gw_write_all(fd, s, len) != 0 || gw_write_all(fd, "\n", 1) != 0)
        gw_log(GW_LOG_WARN, "admin: reply not delivered: %s", strerror(errno));
}

/*
 * endpoint.test: a real call through each target of a model.  The calls
 * take up to 10 s, which the master cannot spend: a child of the master
 * makes them and answers on the admin connection, while the master goes on
 * serving (signals, workers, other admin requests).  Returns NULL when the
 * child took the connection over.
 */
static struct json_object *
cmd_endpoint_test(struct gw_master *m, struct json_object *req, struct gw_arena *a, int fd)
{
    const char *model = gw_master_arg_string(req, "model"),
               *target = gw_master_arg_string(req, "target");
    const struct gw_model *mod;
    long only = -1;

    if (model == NULL || model[0] == '\0')
        return gw_master_reply_error("which model? (give its name)");
    if ((mod = gw_config_model_find(m->cfg, model)) == NULL)
        return gw_master_reply_error("unknown model \"%s\" (not in %s)", model, m->cfg->path);
    if (target != NULL && target[0] != '\0') {
        for (size_t j = 0; j < mod->ntargets && only < 0; j++)
            if (strcmp(target_name(m, &mod->targets[j], a), target) == 0)
                only = (long)j;
        if (only < 0)
            return gw_master_reply_error("model \"%s\" has no target \"%s\" (PROVIDER/MODEL)",
                                         model, target);
    }
    pid_t pid = fork();
    if (pid < 0) {
        gw_log(GW_LOG_ERROR, "fork: %s", strerror(errno));
        return gw_master_reply_error("could not start the test: fork: %s", strerror(errno));
    }
    if (pid > 0) {
        gw_log(GW_LOG_INFO, "endpoint test of %s%s%s in process %ld", model,
               only >= 0 ? ", target " : "", only >= 0 ? target : "", (long)pid);
        return NULL;
    }

    /* The child: let go of what the master serves (so a restarted master
     * can bind it again at once), test, answer, exit. */
    gw_log_init("master[endpoint-test]");
    gw_proctitle_set("aigwd: endpoint test %s", model);
    for (size_t i = 0; i < m->listeners.n; i++)
        close(m->listeners.fds[i]);
    if (m->listeners.metrics_fd >= 0)
        close(m->listeners.metrics_fd);
    for (size_t i = 0; i < m->listeners.nadmin; i++)
        close(m->listeners.admin_fds[i]);
    close(m->master_fds[0]);
    close(m->master_fds[1]);
    bool all_ok;
    struct json_object *results = gw_master_endpoint_test(m->cfg, mod, only, &all_ok);
    struct json_object *reply;
    if (json_object_array_length(results) == 0) {
        json_object_put(results);
        reply = gw_master_reply_error("could not run the test: out of memory");
    } else {
        reply = gw_master_reply_ok();
        json_object_object_add(reply, "model", json_object_new_string(model));
        json_object_object_add(reply, "passed", json_object_new_boolean(all_ok));
        json_object_object_add(reply, "targets", results);
    }
    reply_write(fd, reply);
    _exit(0);
}

/* A command runs with run; one that may hand the admin connection fd over
 * (to a child that answers on it) runs with run_conn and returns NULL when
 * it did. */
static const struct command {
    const char *name;
    struct json_object *(*run)(struct gw_master *m, struct json_object *req, struct gw_arena *a);
    struct json_object *(*run_conn)(struct gw_master *m, struct json_object *req,
                                    struct gw_arena *a, int fd);
} commands[] = {
    {"status", cmd_status, NULL},
    {"workers", cmd_workers, NULL},
    {"reload", cmd_reload, NULL},
    {"usage", cmd_usage, NULL},
    {"usage.stats", cmd_usage_stats, NULL},
    {"usage.detail", cmd_usage_detail, NULL},
    {"key.create", cmd_key_create, NULL},
    {"key.list", cmd_key_list, NULL},
    {"key.show", cmd_key_show, NULL},
    {"key.disable", cmd_key_disable, NULL},
    {"key.enable", cmd_key_enable, NULL},
    {"key.delete", cmd_key_delete, NULL},
    {"limit.set", cmd_limit_set, NULL},
    {"limit.show", cmd_limit_show, NULL},
    {"limit.clear", cmd_limit_clear, NULL},
    {"quota.set", gw_master_quota_set, NULL},
    {"quota.show", gw_master_quota_show, NULL},
    {"quota.clear", gw_master_quota_clear, NULL},
    {"breaker.list", cmd_breaker_list, NULL},
    {"breaker.reset", cmd_breaker_reset, NULL},
    {"endpoint.test", NULL, cmd_endpoint_test},
    {"provider.add", gw_master_provider_add, NULL},
    {"provider.list", gw_master_provider_list, NULL},
    {"provider.delete", gw_master_provider_delete, NULL},
    {"provider.test", NULL, gw_master_provider_test},
    {"model.list", gw_master_model_list, NULL},
    {"model.show", gw_master_model_show, NULL},
    {"cache.stats", gw_master_cache_stats, NULL},
    {"cache.purge", gw_master_cache_purge, NULL},
    {"capture.info", gw_master_capture_info, NULL},
};

/* ------------------------------------------------------------- serving */

/* Who is calling: see gw_master_accounts_caller. */
static bool
peer_allowed(struct gw_master *m, int fd, struct ucred *cred, struct gw_caller *caller)
{
    socklen_t len = sizeof(*cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) != 0) {
        gw_log(GW_LOG_WARN, "getsockopt(SO_PEERCRED): %s", strerror(errno));
        return false;
    }
    return gw_master_accounts_caller(m, cred->uid, cred->gid, caller) == 0;
}

/* Run the request on line; NULL when a command took the connection over. */
static struct json_object *
dispatch(struct gw_master *m, const struct gw_caller *caller, const char *line, struct gw_arena *a,
         int fd)
{
    struct json_object *req = json_tokener_parse(line), *reply;
    const char *cmd = req != NULL ? gw_master_arg_string(req, "cmd") : NULL;
    struct gw_caller acting;
    bool handled;

    if (cmd == NULL) {
        reply = gw_master_reply_error("malformed request: expected a JSON object with \"cmd\"");
        goto out;
    }
    /* A worker forwarding the HTTP admin API acts for a key's owner. */
    if (json_object_object_get_ex(req, "as_user", NULL) ||
        json_object_object_get_ex(req, "via_key", NULL)) {
        if ((reply = gw_master_accounts_act_as(m, caller, req, &acting)) != NULL)
            goto out;
        caller = &acting;
    }
    /* Permissions and the accounts commands first (accounts.c). */
    reply = gw_master_accounts_run(m, caller, cmd, req, a, &handled);
    if (handled)
        goto out;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(cmd, commands[i].name) == 0) {
            reply = commands[i].run != NULL ? commands[i].run(m, req, a)
                                            : commands[i].run_conn(m, req, a, fd);
            goto out;
        }
    }
    reply = gw_master_reply_error("unknown command \"%s\"", cmd);
out:
    if (cmd != NULL)
        reply = gw_master_accounts_after(m, caller, cmd, req, reply);
    json_object_put(req);
    return reply;
}

void
gw_master_control_serve(int lfd, struct gw_master *m)
{
    struct timeval tv = {.tv_sec = CONTROL_IO_TIMEOUT_S};
    struct gw_buf in = {0};
    struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
    struct gw_caller caller;
    struct gw_arena *a = NULL;
    char *line;
    size_t used;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

    if (fd < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            gw_log(GW_LOG_WARN, "accept(admin): %s", strerror(errno));
        return;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct json_object *reply = NULL;
    if (!peer_allowed(m, fd, &cred, &caller)) {
        gw_log(GW_LOG_WARN, "admin: refused uid %ld (pid %ld)", (long)cred.uid, (long)cred.pid);
        reply = gw_master_reply_error("permission denied: uid %ld may not manage this gateway",
                                      (long)cred.uid);
    } else {
        int rc = gw_proto_read_line(fd, &in, &line, &used);
        if (rc == GW_ETOOBIG)
            reply = gw_master_reply_error("request line too long");
        else if (rc < 0)
            goto out; /* the client went away or said nothing */
        else {
            a = gw_arena_create(4096);
            if ((reply = dispatch(m, &caller, line, a, fd)) == NULL)
                goto out; /* a child answers */
        }
    }
    reply_write(fd, reply);
out:
    json_object_put(reply);
    gw_arena_destroy(a);
    /* A request may carry a secret (provider.add): leave no copy behind. */
    if (in.data != NULL)
        explicit_bzero(in.data, in.cap);
    gw_buf_free(&in);
    close(fd);
}
