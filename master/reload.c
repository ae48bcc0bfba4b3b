/*
 * reload.c - applying a new configuration to a running gateway.
 *
 * Like nginx, a reload builds a whole new configuration object and only
 * replaces the running one when it is complete and valid.  Routing changes
 * reach the workers as a new generation in shared memory, picked up at
 * their next request; requests in flight finish on the generation they
 * started with.  New listeners or a new pool size are applied by starting
 * a new pool and letting the old workers finish their requests and exit.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "master/master.h"

/* How long a publish waits for requests to let go of an old generation. */
#define PUBLISH_WAIT_MS 5000

int
gw_master_publish(struct gw_master *m, const struct gw_config *cfg)
{
    uint64_t gen = atomic_load(&m->shm.hdr->generation) + 1;
    int64_t deadline = gw_now_ms() + PUBLISH_WAIT_MS;
    int rc;

    /* Every other slot held by a long request: wait a little for one. */
    while ((rc = gw_shm_gen_publish(&m->shm, cfg, gen)) == GW_EEXIST && gw_now_ms() < deadline)
        usleep(10000);
    if (rc == GW_ETOOBIG)
        gw_log(GW_LOG_ERROR,
               "the routing tables of %s do not fit in a generation slot (%llu "
               "bytes)",
               cfg->path, (unsigned long long)m->shm.hdr->gen_size);
    else if (rc == GW_EEXIST)
        gw_log(GW_LOG_ERROR, "every generation slot is held by requests still running on "
                             "older configurations; try again");
    return rc;
}

static bool
same_string(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool
listeners_equal(const struct gw_config *a, const struct gw_config *b)
{
    if (a->nlisten != b->nlisten || !same_string(a->metrics_listen, b->metrics_listen))
        return false;
    for (size_t i = 0; i < a->nlisten; i++)
        if (strcmp(a->listen[i], b->listen[i]) != 0)
            return false;
    if (a->nadmin_listen != b->nadmin_listen)
        return false;
    for (size_t i = 0; i < a->nadmin_listen; i++)
        if (strcmp(a->admin_listen[i], b->admin_listen[i]) != 0)
            return false;
    return true;
}

/* What a reload cannot change, with the reason to give. */
static const char *
unchangeable(const struct gw_master *m, const struct gw_config *new)
{
    const struct gw_config *old = m->cfg;

    if (strcmp(old->state_dir, new->state_dir) != 0)
        return "state_dir cannot change on reload; restart aigwd";
    if (strcmp(old->admin_socket, new->admin_socket) != 0 || old->admin_mode != new->admin_mode)
        return "admin.socket and admin.mode cannot change on reload; restart aigwd";
    if (2 * (uint64_t)(new->workers_max > new->workers ? new->workers_max : new->workers) >
        m->shm.hdr->nworkers)
        return "the pool's new maximum does not fit the shared-memory scoreboard, which is sized "
               "at start; restart aigwd to grow it";
    if (!same_string(old->user, new->user) || !same_string(old->group, new->group))
        return "user and group cannot change on reload (privileges are dropped once, at "
               "start); restart aigwd";
    if (!same_string(old->provider_key_file, new->provider_key_file))
        return "secrets.provider_key_file cannot change on reload (the key is read at start); "
               "restart aigwd";
    return NULL;
}

static void
notify_reloading(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
               (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}

int
gw_master_reload(struct gw_master *m, char *err, size_t errlen)
{
    struct gw_config *cfg = NULL;
    struct gw_listeners fresh = {.metrics_fd = -1};
    const char *why;
    int rc;

    notify_reloading();
    rc = gw_master_config_load(m->conf_path, &cfg, err, errlen);
    if (rc == 0 && (why = unchangeable(m, cfg)) != NULL) {
        snprintf(err, errlen, "%s: %s", m->conf_path, why);
        rc = GW_ECONFIG;
    }
    bool relisten = rc == 0 && !listeners_equal(m->cfg, cfg);
    if (relisten && (rc = gw_master_listen_reopen(cfg, m->cfg, &m->listeners, &fresh)) != 0)
        snprintf(err, errlen, "%s: cannot listen on the new addresses (see the log)", m->conf_path);
    if (rc == 0 && (rc = gw_master_publish(m, cfg)) != 0)
        snprintf(err, errlen, "%s: could not publish the new routing tables: %s", m->conf_path,
                 gw_strerror(rc));
    if (rc != 0) {
        atomic_fetch_add(&m->shm.hdr->reload_failures, 1);
        gw_log(GW_LOG_ERROR, "reload failed, still running generation %llu: %s",
               (unsigned long long)atomic_load(&m->shm.hdr->generation), err);
        gw_master_listen_close(&fresh);
        gw_config_free(cfg);
        sd_notify(0, "READY=1\nSTATUS=reload failed; serving the previous configuration");
        return rc;
    }

    /* The new configuration is live.  Apply what workers cannot pick up
     * from shared memory: sockets and the size of the pool. */
    bool resize = cfg->workers != m->cfg->workers || cfg->workers_max != m->cfg->workers_max ||
                  cfg->max_requests != m->cfg->max_requests ||
                  cfg->worker_connections != m->cfg->worker_connections ||
                  cfg->worker_cpu_affinity != m->cfg->worker_cpu_affinity;
    struct gw_config *old = m->cfg;
    const char *old_log_file = old->log_file;
    m->cfg = cfg;
    gw_log_level = cfg->log_level;
    gw_master_health_reload(m);
    gw_master_cache_start(m);
    if ((cfg->log_file || old_log_file) &&
        (!cfg->log_file || !old_log_file || strcmp(cfg->log_file, old_log_file) != 0)) {
        gw_log_open(cfg->log_file);
        gw_master_pool_signal(&m->pool, SIGUSR1);
    }
    if (relisten) {
        gw_master_listen_close(&m->listeners);
        m->listeners = fresh;
    }
    if (relisten || resize) {
        gw_log(GW_LOG_INFO, "reload: %s; replacing the workers",
               relisten ? "listeners changed" : "pool changed");
        gw_master_pool_replace(&m->pool, cfg->workers, cfg->workers_max);
    }
    /* Workers forked from now on inherit the new object; those running
     * keep their own copy of the old one, so it can go. */
    gw_config_free(old);
    atomic_fetch_add(&m->shm.hdr->reloads, 1);
    gw_log(GW_LOG_INFO, "reloaded %s: generation %llu, %zu models, %zu providers", m->conf_path,
           (unsigned long long)atomic_load(&m->shm.hdr->generation), cfg->nmodels, cfg->nproviders);
    sd_notifyf(0, "READY=1\nSTATUS=serving generation %llu with %d workers",
               (unsigned long long)atomic_load(&m->shm.hdr->generation), cfg->workers);
    return 0;
}
