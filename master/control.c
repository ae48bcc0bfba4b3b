/*
 * control.c - the admin Unix socket and the management commands behind
 * it.  Every management operation exists once, here; aigwctl (and later
 * the HTTP admin API) are clients.
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

static struct json_object *
reply_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static struct json_object *
reply_error(const char *fmt, ...)
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

static struct json_object *
reply_ok(void)
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
    json_object_object_add(o, "route", json_object_new_string(k->route ? k->route : ""));
    json_object_object_add(o, "route_header", json_object_new_boolean(k->route_header));
    return o;
}

static const char *
arg_string(struct json_object *req, const char *name)
{
    struct json_object *v;

    if (!json_object_object_get_ex(req, name, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

/* ----------------------------------------------------------- commands */

/* Workers by state, from the scoreboard. */
static void
workers_count(struct gw_master *m, int counts[GW_WORKER_NSTATES], uint64_t *served)
{
    const struct gw_shm *shm = &m->shm;

    memset(counts, 0, GW_WORKER_NSTATES * sizeof(int));
    *served = 0;
    for (uint64_t i = 0; i < shm->hdr->nworkers; i++) {
        struct gw_shm_worker *w = gw_shm_worker(shm, i);
        if (atomic_load(&w->pid) == 0)
            continue;
        int state = atomic_load(&w->state);
        if (state >= 0 && state < GW_WORKER_NSTATES)
            counts[state]++;
        *served += atomic_load(&w->requests);
    }
}

static struct json_object *
cmd_status(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct gw_shm_header *h = m->shm.hdr;
    struct json_object *o = reply_ok(), *workers = json_object_new_object();
    int counts[GW_WORKER_NSTATES];
    uint64_t served;

    (void)req, (void)a;
    workers_count(m, counts, &served);
    json_object_object_add(o, "version", json_object_new_string(GW_VERSION));
    json_object_object_add(o, "pid", json_object_new_int64(getpid()));
    json_object_object_add(o, "config", json_object_new_string(m->conf_path));
    json_object_object_add(o, "uptime", json_object_new_int64(time(NULL) - m->started));
    json_object_object_add(o, "shm", json_object_new_string(m->shm.name));
    json_object_object_add(o, "generation", json_object_new_int64((int64_t)h->generation));
    json_object_object_add(o, "reloads", json_object_new_int64((int64_t)h->reloads));
    json_object_object_add(o, "reload_failures",
                           json_object_new_int64((int64_t)h->reload_failures));
    json_object_object_add(workers, "configured", json_object_new_int(m->pool.n));
    for (int st = GW_WORKER_STARTING; st < GW_WORKER_NSTATES; st++)
        json_object_object_add(workers, gw_shm_worker_state_names[st],
                               json_object_new_int(counts[st]));
    json_object_object_add(o, "workers", workers);
    json_object_object_add(o, "requests", json_object_new_int64((int64_t)served));
    json_object_object_add(o, "in_flight", json_object_new_int(counts[GW_WORKER_BUSY]));
    json_object_object_add(o, "models", json_object_new_int64((int64_t)m->cfg->nmodels));
    json_object_object_add(o, "providers", json_object_new_int64((int64_t)m->cfg->nproviders));
    return o;
}

static struct json_object *
cmd_workers(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const struct gw_shm *shm = &m->shm;
    struct json_object *o = reply_ok(), *arr = json_object_new_array();
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
        json_object_object_add(e, "state", json_object_new_string(
                                               state >= 0 && state < GW_WORKER_NSTATES ? gw_shm_worker_state_names[state] : "?"));
        json_object_object_add(e, "requests",
                               json_object_new_int64((int64_t)atomic_load(&w->requests)));
        json_object_object_add(e, "started", json_object_new_int64(atomic_load(&w->started)));
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
        return reply_error("%s", err);
    struct json_object *o = reply_ok();
    json_object_object_add(o, "generation",
                           json_object_new_int64((int64_t)m->shm.hdr->generation));
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
        return reply_error("could not read usage: %s", gw_strerror(rc));
    struct json_object *o = reply_ok();
    json_object_object_add(o, "requests", json_object_new_int64((int64_t)t.requests));
    json_object_object_add(o, "input_tokens", json_object_new_int64((int64_t)t.input_tokens));
    json_object_object_add(o, "output_tokens", json_object_new_int64((int64_t)t.output_tokens));
    return o;
}

static struct json_object *
cmd_key_create(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct gw_key key = {0};
    char id[GW_KEY_ID_LEN + 1], secret[GW_KEY_SECRET_LEN];
    unsigned char hash[GW_KEY_HASH_LEN];
    struct json_object *models, *o;
    const char *name = arg_string(req, "name");
    int rc;

    if (name == NULL || name[0] == '\0')
        return reply_error("a key needs a name (--name NAME)");
    if (strlen(name) > KEY_NAME_MAX)
        return reply_error("key name is longer than %d characters", KEY_NAME_MAX);
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            return reply_error("key name contains a control character");
    if (json_object_object_get_ex(req, "models", &models) &&
        json_object_is_type(models, json_type_array)) {
        key.nmodels = json_object_array_length(models);
        key.models = gw_arena_alloc(a, (key.nmodels + 1) * sizeof(char *));
        for (size_t i = 0; i < key.nmodels; i++) {
            const char *model = json_object_get_string(json_object_array_get_idx(models, i));
            if (model == NULL || gw_config_model_find(m->cfg, model) == NULL)
                return reply_error("unknown model \"%s\" (not in %s)", model ? model : "",
                                   m->cfg->path);
            key.models[i] = gw_arena_strdup(a, model);
        }
    }
    const char *route = arg_string(req, "route");
    if (route != NULL && route[0] != '\0') {
        int known = 0;
        for (int i = 0; i < GW_ROUTE_NSTRATEGIES; i++)
            known |= strcmp(route, gw_route_strategy_names[i]) == 0;
        if (!known)
            return reply_error("unknown routing strategy \"%s\" (weighted, sticky, least_busy, "
                               "latency, price, throughput)",
                               route);
        key.route = (char *)route;
    }
    struct json_object *rh;
    if (json_object_object_get_ex(req, "route_header", &rh))
        key.route_header = json_object_get_boolean(rh);
    if (gw_key_generate(id, secret) != 0)
        return reply_error("could not generate a key: no randomness");
    key.id = id;
    key.name = (char *)name;
    /* Enough of the secret to recognise it in a list, far too little to use. */
    key.prefix = gw_arena_printf(a, "%.12s...", secret);
    key.created = time(NULL);
    gw_key_hash(m->secret, secret, strlen(secret), hash);
    if ((rc = gw_store_key_add(m->store, &key, hash)) != 0)
        return reply_error("could not store the key: %s", gw_strerror(rc));
    gw_log(GW_LOG_INFO, "key %s (\"%s\") created", id, name);
    o = reply_ok();
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
        return reply_error("could not list keys: %s", gw_strerror(rc));
    struct json_object *o = reply_ok(), *arr = json_object_new_array();
    for (size_t i = 0; i < n; i++)
        json_object_array_add(arr, key_json(keys[i]));
    json_object_object_add(o, "keys", arr);
    return o;
}

static struct json_object *
cmd_key_show(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const char *id = arg_string(req, "id");
    struct gw_key *k;
    int rc;

    if (id == NULL)
        return reply_error("which key? (give its id)");
    if ((rc = gw_store_key_get(m->store, id, a, &k)) == GW_ENOENT)
        return reply_error("no key with id \"%s\"", id);
    if (rc != 0)
        return reply_error("could not read key %s: %s", id, gw_strerror(rc));
    struct json_object *o = reply_ok();
    json_object_object_add(o, "key", key_json(k));
    return o;
}

/* enable, disable and delete differ only in the store call and the word. */
static struct json_object *
key_change(struct gw_master *m, struct json_object *req, const char *verb)
{
    const char *id = arg_string(req, "id");
    int rc;

    if (id == NULL)
        return reply_error("which key? (give its id)");
    if (strcmp(verb, "deleted") == 0)
        rc = gw_store_key_del(m->store, id);
    else
        rc = gw_store_key_set_disabled(m->store, id, strcmp(verb, "disabled") == 0);
    if (rc == GW_ENOENT)
        return reply_error("no key with id \"%s\"", id);
    if (rc != 0)
        return reply_error("could not change key %s: %s", id, gw_strerror(rc));
    gw_log(GW_LOG_INFO, "key %s %s", id, verb);
    return reply_ok();
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

static const struct command {
    const char *name;
    struct json_object *(*run)(struct gw_master *m, struct json_object *req,
                               struct gw_arena *a);
} commands[] = {
    {"status", cmd_status},           {"workers", cmd_workers},
    {"reload", cmd_reload},           {"usage", cmd_usage},
    {"key.create", cmd_key_create},
    {"key.list", cmd_key_list},       {"key.show", cmd_key_show},
    {"key.disable", cmd_key_disable}, {"key.enable", cmd_key_enable},
    {"key.delete", cmd_key_delete},
};

/* ------------------------------------------------------------- serving */

static bool
peer_allowed(int fd, struct ucred *cred)
{
    socklen_t len = sizeof(*cred);

    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) != 0) {
        gw_log(GW_LOG_WARN, "getsockopt(SO_PEERCRED): %s", strerror(errno));
        return false;
    }
    return cred->uid == 0 || cred->uid == geteuid();
}

static struct json_object *
dispatch(struct gw_master *m, const char *line, struct gw_arena *a)
{
    struct json_object *req = json_tokener_parse(line), *reply;
    const char *cmd = req != NULL ? arg_string(req, "cmd") : NULL;

    if (cmd == NULL) {
        reply = reply_error("malformed request: expected a JSON object with \"cmd\"");
        goto out;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(cmd, commands[i].name) == 0) {
            reply = commands[i].run(m, req, a);
            goto out;
        }
    }
    reply = reply_error("unknown command \"%s\"", cmd);
out:
    json_object_put(req);
    return reply;
}

void
gw_master_control_serve(int lfd, struct gw_master *m)
{
    struct timeval tv = {.tv_sec = CONTROL_IO_TIMEOUT_S};
    struct gw_buf in = {0};
    struct ucred cred = {.pid = 0, .uid = (uid_t)-1, .gid = (gid_t)-1};
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
    if (!peer_allowed(fd, &cred)) {
        gw_log(GW_LOG_WARN, "admin: refused uid %ld (pid %ld)", (long)cred.uid, (long)cred.pid);
        reply = reply_error("permission denied: uid %ld may not manage this gateway",
                            (long)cred.uid);
    } else {
        int rc = gw_proto_read_line(fd, &in, &line, &used);
        if (rc == GW_ETOOBIG)
            reply = reply_error("request line too long");
        else if (rc < 0)
            goto out; /* the client went away or said nothing */
        else {
            a = gw_arena_create(4096);
            reply = dispatch(m, line, a);
        }
    }
    size_t len;
    const char *s = json_object_to_json_string_length(reply, JSON_C_TO_STRING_PLAIN, &len);
    if (gw_write_all(fd, s, len) != 0 || gw_write_all(fd, "\n", 1) != 0)
        gw_log(GW_LOG_WARN, "admin: reply not delivered: %s", strerror(errno));
out:
    json_object_put(reply);
    gw_arena_destroy(a);
    gw_buf_free(&in);
    close(fd);
}
