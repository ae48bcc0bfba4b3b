/*
 * cache.c - the master's side of the response cache and of request
 * capture: it owns the cache's environment (state_dir/cache): opens it
 * when a model caches, removes what has expired, syncs it to disk every few
 * seconds (workers store without a sync) and at the end; it answers
 * cache.stats and cache.purge, and capture.info (where the capture files
 * are, for aigwctl logs), and makes the capture directory.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <json-c/json.h>

#include "master/master.h"

/* Expired entries removed per second, in one short transaction. */
#define SWEEP_MAX 1000
#define SYNC_EVERY_S 5

static bool
cache_configured(const struct gw_config *cfg)
{
    for (size_t i = 0; i < cfg->nmodels; i++)
        if (cfg->models[i].cache_ttl_ms > 0)
            return true;
    return false;
}

static void
cache_dir(const struct gw_config *cfg, char *out, size_t len)
{
    snprintf(out, len, "%s/cache", cfg->state_dir);
}

/* Open the cache when a model caches, or when force (an admin command
 * about a cache that exists from an earlier configuration). */
static struct gw_cache *
cache_open(struct gw_master *m, bool force)
{
    char dir[4200], data[4300];
    struct stat st;

    if (m->cache != NULL)
        return m->cache;
    cache_dir(m->cfg, dir, sizeof(dir));
    snprintf(data, sizeof(data), "%s/data.mdb", dir);
    if (!cache_configured(m->cfg) && !(force && stat(data, &st) == 0))
        return NULL;
    if (gw_cache_open(dir, true, &m->cache) != 0)
        m->cache = NULL;
    return m->cache;
}

int
gw_master_cache_start(struct gw_master *m)
{
    if (cache_configured(m->cfg) && cache_open(m, false) == NULL)
        gw_log(GW_LOG_WARN, "the response cache is off: its database could not be opened");
    return gw_master_capture_prepare(m->cfg);
}

int
gw_master_capture_prepare(const struct gw_config *cfg)
{
    if (cfg->capture_dir == NULL)
        return 0;
    if (gw_mkdir_p(cfg->capture_dir, 0750) != 0)
        return GW_EIO;
    return 0;
}

/* Expired entries the master removes are counted on their model. */
static void
expired(void *ctx, const char *model, bool exp)
{
    struct gw_master *m = ctx;
    char name[GW_SHM_NAME_LEN];

    snprintf(name, sizeof(name), "m:%s", model);
    long i = gw_shm_stat_find(&m->shm, name, false);
    if (i >= 0)
        atomic_fetch_add(exp ? &gw_shm_stat_at(&m->shm, (size_t)i)->cache_expired
                             : &gw_shm_stat_at(&m->shm, (size_t)i)->cache_evictions,
                         1);
}

void
gw_master_cache_tick(struct gw_master *m)
{
    static time_t last_sync;
    struct timespec ts;
    size_t removed;

    if (cache_configured(m->cfg))
        cache_open(m, false);
    if (m->cache == NULL)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gw_cache_sweep(m->cache, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000, SWEEP_MAX, expired,
                   m, &removed);
    if (ts.tv_sec - last_sync >= SYNC_EVERY_S) {
        gw_cache_sync(m->cache);
        last_sync = ts.tv_sec;
    }
}

void
gw_master_cache_reader_check(struct gw_master *m)
{
    if (m->cache != NULL)
        gw_cache_reader_check(m->cache);
}

void
gw_master_cache_stop(struct gw_master *m)
{
    gw_cache_close(m->cache);
    m->cache = NULL;
}

/* ------------------------------------------------------------ commands */

struct stats_ctx {
    struct json_object *models; /* model name -> object */
    struct gw_cache_count total;
};

static struct json_object *
model_entry(struct stats_ctx *s, const char *model)
{
    struct json_object *o;

    if (json_object_object_get_ex(s->models, model, &o))
        return o;
    o = json_object_new_object();
    json_object_object_add(o, "model", json_object_new_string(model));
    json_object_object_add(o, "ttl_ms", json_object_new_int64(0));
    json_object_object_add(o, "entries", json_object_new_int64(0));
    json_object_object_add(o, "bytes", json_object_new_int64(0));
    json_object_object_add(s->models, model, o);
    return o;
}

static void
count_one(void *ctx, const char *model, const struct gw_cache_count *c)
{
    struct stats_ctx *s = ctx;

    if (model == NULL) {
        s->total = *c;
        return;
    }
    struct json_object *o = model_entry(s, model);
    json_object_object_add(o, "entries", json_object_new_int64((int64_t)c->entries));
    json_object_object_add(o, "bytes", json_object_new_int64((int64_t)c->bytes));
}

static const char *const counter_names[] = {"hits", "misses", "stores", "evictions", "expired"};

static uint64_t
counter(const struct gw_shm_stat *st, size_t i)
{
    switch (i) {
    case 0: return atomic_load(&st->cache_hits);
    case 1: return atomic_load(&st->cache_misses);
    case 2: return atomic_load(&st->cache_stores);
    case 3: return atomic_load(&st->cache_evictions);
    default: return atomic_load(&st->cache_expired);
    }
}

/*
 * cache.stats: {"enabled", "max_size", "entries", "bytes", and the
 * counters hits, misses, stores, evictions, expired; "models": [...] the
 * same per model, with its ttl_ms}.  Entries and bytes are the cache's
 * own; the counters come from shm (since the segment was made).
 */
struct json_object *
gw_master_cache_stats(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct stats_ctx s = {.models = json_object_new_object()};
    struct json_object *reply = gw_master_reply_ok(), *list = json_object_new_array();
    uint64_t totals[5] = {0};
    struct gw_cache *c = cache_open(m, true);

    (void)req, (void)a;
    for (size_t i = 0; i < m->cfg->nmodels; i++)
        if (m->cfg->models[i].cache_ttl_ms > 0)
            json_object_object_add(model_entry(&s, m->cfg->models[i].name), "ttl_ms",
                                   json_object_new_int64(m->cfg->models[i].cache_ttl_ms));
    if (c != NULL)
        gw_cache_counts(c, count_one, &s);
    json_object_object_foreach(s.models, name, o)
    {
        char stat[GW_SHM_NAME_LEN];
        snprintf(stat, sizeof(stat), "m:%s", name);
        long i = gw_shm_stat_find(&m->shm, stat, false);
        for (size_t k = 0; k < 5; k++) {
            uint64_t v = i >= 0 ? counter(gw_shm_stat_at(&m->shm, (size_t)i), k) : 0;
            totals[k] += v;
            json_object_object_add(o, counter_names[k], json_object_new_int64((int64_t)v));
        }
        json_object_array_add(list, json_object_get(o));
    }
    json_object_object_add(reply, "enabled", json_object_new_boolean(cache_configured(m->cfg)));
    json_object_object_add(reply, "max_size",
                           json_object_new_int64((int64_t)m->cfg->cache_max_size));
    json_object_object_add(reply, "entries", json_object_new_int64((int64_t)s.total.entries));
    json_object_object_add(reply, "bytes", json_object_new_int64((int64_t)s.total.bytes));
    for (size_t k = 0; k < 5; k++)
        json_object_object_add(reply, counter_names[k], json_object_new_int64((int64_t)totals[k]));
    json_object_object_add(reply, "models", list);
    json_object_put(s.models);
    return reply;
}

/* cache.purge [model]: remove every entry, or the model's; {"removed"}. */
struct json_object *
gw_master_cache_purge(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    const char *model = gw_master_arg_string(req, "model");
    struct gw_cache *c = cache_open(m, true);
    size_t removed = 0;

    (void)a;
    if (c != NULL && gw_cache_purge(c, model, &removed) != 0)
        return gw_master_reply_error("could not purge the cache (see the log)");
    if (c != NULL)
        gw_cache_sync(c);
    gw_log(GW_LOG_INFO, "cache purged%s%s: %zu entries removed", model ? " for model " : "",
           model ? model : "", removed);
    struct json_object *reply = gw_master_reply_ok();
    json_object_object_add(reply, "removed", json_object_new_int64((int64_t)removed));
    return reply;
}

/* capture.info: {"dir" (or null), "journal", "rotate"}, for aigwctl logs. */
struct json_object *
gw_master_capture_info(struct gw_master *m, struct json_object *req, struct gw_arena *a)
{
    struct json_object *reply = gw_master_reply_ok();

    (void)req, (void)a;
    json_object_object_add(
        reply, "dir", m->cfg->capture_dir ? json_object_new_string(m->cfg->capture_dir) : NULL);
    json_object_object_add(reply, "journal", json_object_new_boolean(m->cfg->capture_journal));
    json_object_object_add(
        reply, "rotate",
        json_object_new_string(m->cfg->capture_rotate == GW_CAPTURE_SIZE ? "size" : "daily"));
    return reply;
}
