/*
 * gen.c - routing generations: the configuration that workers route by,
 * laid out flat in a slot of the segment.
 *
 * Publishing writes a whole generation into a slot no worker holds and
 * then flips the current-slot number with one atomic store; a worker
 * takes the current slot at the start of a request, noting it in its
 * scoreboard entry, and keeps that generation to the end of the request.
 * The master never writes into a slot that a live worker holds, so
 * requests in flight finish on the generation they started with.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "shm/shm.h"

struct gen_writer {
    char *base;
    uint32_t used, cap;
    bool overflow;
};

/* Reserve size bytes (8-aligned); returns the offset, 0 on overflow. */
static uint32_t
gen_alloc(struct gen_writer *w, size_t size)
{
    uint32_t off = (w->used + 7) & ~7u;

    if (w->overflow || (uint64_t)off + size > w->cap) {
        w->overflow = true;
        return 0;
    }
    w->used = off + (uint32_t)size;
    return off;
}

static uint32_t
gen_str(struct gen_writer *w, const char *s)
{
    if (s == NULL)
        return 0;
    size_t len = strlen(s) + 1;
    uint32_t off = gen_alloc(w, len);
    if (off != 0)
        memcpy(w->base + off, s, len);
    return off;
}

static unsigned
gcd(unsigned a, unsigned b)
{
    while (b != 0) {
        unsigned t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/*
 * The smooth weighted round-robin order of m's targets (nginx's
 * algorithm), computed once here for a whole cycle: workers then share
 * one atomic counter and step through it, and over every cycle each
 * target gets exactly its weight's share, spread out evenly.
 */
static uint32_t
schedule_write(struct gen_writer *w, const struct gw_model *m, uint32_t *off)
{
    unsigned g = 0, total = 0;
    int cur[256] = {0};

    if (m->ntargets == 0 || m->ntargets > 256)
        return 0;
    for (size_t i = 0; i < m->ntargets; i++)
        g = gcd(g, m->targets[i].weight ? m->targets[i].weight : 1);
    for (size_t i = 0; i < m->ntargets; i++)
        total += (m->targets[i].weight ? m->targets[i].weight : 1) / g;
    *off = gen_alloc(w, total * sizeof(uint16_t));
    if (w->overflow)
        return 0;
    uint16_t *sched = (uint16_t *)(w->base + *off);
    for (unsigned n = 0; n < total; n++) {
        size_t best = 0;
        for (size_t i = 0; i < m->ntargets; i++) {
            cur[i] += (int)((m->targets[i].weight ? m->targets[i].weight : 1) / g);
            if (cur[i] > cur[best])
                best = i;
        }
        cur[best] -= (int)total;
        sched[n] = (uint16_t)best;
    }
    return total;
}

static bool
slot_held(const struct gw_shm *shm, int slot)
{
    for (uint64_t i = 0; i < shm->hdr->nworkers; i++) {
        struct gw_shm_worker *wk = gw_shm_worker(shm, i);
        pid_t pid = atomic_load(&wk->pid);
        if (pid > 0 && atomic_load(&wk->gen_slot) == slot && (kill(pid, 0) == 0 || errno == EPERM))
            return true;
    }
    return false;
}

int
gw_shm_gen_publish(const struct gw_shm *shm, const struct gw_config *cfg, uint64_t gen)
{
    struct gw_shm_header *h = shm->hdr;
    int current = atomic_load(&h->gen_current), slot = -1;

    for (int i = 1; i <= GW_SHM_GEN_SLOTS && slot < 0; i++) {
        int s = (current + i + GW_SHM_GEN_SLOTS) % GW_SHM_GEN_SLOTS;
        if (s != current && !slot_held(shm, s))
            slot = s;
    }
    if (slot < 0)
        return GW_EEXIST;

    struct gen_writer w = {.base = (char *)h + h->gen_off[slot], .cap = (uint32_t)h->gen_size};
    uint32_t goff = gen_alloc(&w, sizeof(struct gw_gen));
    (void)goff; /* the generation header is at offset 0 */
    struct gw_gen g = {
        .generation = gen,
        .published = time(NULL),
        .log_level = cfg->log_level,
        .access_log = cfg->access_log,
        .http = cfg->http,
        .max_response_size = cfg->max_response_size,
        .nproviders = (uint32_t)cfg->nproviders,
        .nmodels = (uint32_t)cfg->nmodels,
        .key_limits = cfg->key_limits,
    };
    size_t ntargets = 0;
    for (size_t i = 0; i < cfg->nmodels; i++)
        ntargets += cfg->models[i].ntargets;
    g.ntargets = (uint32_t)ntargets;
    g.config_path = gen_str(&w, cfg->path);
    g.log_file = gen_str(&w, cfg->log_file);
    g.access_file = gen_str(&w, cfg->access_file);
    g.access_journal = cfg->access_journal;
    g.providers = gen_alloc(&w, cfg->nproviders * sizeof(struct gw_gen_provider));
    g.models = gen_alloc(&w, cfg->nmodels * sizeof(struct gw_gen_model));
    g.targets = gen_alloc(&w, ntargets * sizeof(struct gw_gen_target));
    if (w.overflow)
        return GW_ETOOBIG;

    for (size_t i = 0; i < cfg->nproviders; i++) {
        const struct gw_provider *p = &cfg->providers[i];
        struct gw_gen_provider gp = {
            .name = gen_str(&w, p->name),
            .base_url = gen_str(&w, p->base_url),
            .api_key = gen_str(&w, p->api_key),
            .type = p->type,
            .timeouts = p->timeouts,
            .quirks = p->quirks,
            .api_version = gen_str(&w, p->api_version),
            .region = gen_str(&w, p->region),
            .max_tokens = p->max_tokens,
        };
        memcpy(w.base + g.providers + i * sizeof(gp), &gp, sizeof(gp));
    }
    uint32_t t = 0;
    for (size_t i = 0; i < cfg->nmodels; i++) {
        const struct gw_model *m = &cfg->models[i];
        char stat[GW_SHM_NAME_LEN];
        snprintf(stat, sizeof(stat), "m:%s", m->name);
        struct gw_gen_model gm = {
            .name = gen_str(&w, m->name),
            .first_target = t,
            .ntargets = (uint32_t)m->ntargets,
            .stat = (int32_t)gw_shm_stat_find(shm, stat, true),
            .timeouts = m->timeouts,
            .strategy = m->routing.strategy,
            .retries = m->routing.retries,
            .deadline_ms = m->routing.deadline_ms,
            .breaker_failures = m->routing.breaker_failures,
            .breaker_cooldown_ms = m->routing.breaker_cooldown_ms,
            .breaker_error_rate = m->routing.breaker_error_rate,
            .breaker_window_ms = m->routing.breaker_window_ms,
            .breaker_min_requests = m->routing.breaker_min_requests,
            .session_header = gen_str(&w, m->routing.session_header),
            .limits = m->limits,
        };
        if (m->nfallbacks > 0) {
            gm.fallbacks = gen_alloc(&w, m->nfallbacks * sizeof(uint32_t));
            gm.nfallbacks = (uint32_t)m->nfallbacks;
            for (size_t f = 0; f < m->nfallbacks && !w.overflow; f++) {
                uint32_t idx = 0;
                for (size_t k = 0; k < cfg->nmodels; k++)
                    if (strcmp(cfg->models[k].name, m->fallbacks[f]) == 0)
                        idx = (uint32_t)k;
                memcpy(w.base + gm.fallbacks + f * sizeof(uint32_t), &idx, sizeof(idx));
            }
        }
        gm.nschedule = schedule_write(&w, m, &gm.schedule);
        memcpy(w.base + g.models + i * sizeof(gm), &gm, sizeof(gm));
        for (size_t j = 0; j < m->ntargets; j++, t++) {
            const struct gw_target *tg = &m->targets[j];
            snprintf(stat, sizeof(stat), "t:%s/%s", cfg->providers[tg->provider].name, tg->model);
            struct gw_gen_target gt = {
                .provider = (uint32_t)tg->provider,
                .model = gen_str(&w, tg->model),
                .stat = (int32_t)gw_shm_stat_find(shm, stat, true),
                .weight = tg->weight ? tg->weight : 1,
                .price_input = tg->price_input,
                .price_output = tg->price_output,
                .deployment = gen_str(&w, tg->deployment),
                .api_version = gen_str(&w, tg->api_version),
            };
            memcpy(w.base + g.targets + t * sizeof(gt), &gt, sizeof(gt));
        }
    }
    if (w.overflow)
        return GW_ETOOBIG;
    g.size = w.used;
    memcpy(w.base, &g, sizeof(g));

    /* Everything above is visible before the flip that makes it current. */
    atomic_thread_fence(memory_order_release);
    atomic_store(&h->gen_current, slot);
    atomic_store(&h->generation, gen);
    return 0;
}

const struct gw_gen *
gw_shm_gen_acquire(const struct gw_shm *shm, struct gw_shm_worker *me)
{
    struct gw_shm_header *h = shm->hdr;

    /* Announce the slot, then check it is still current: the master looks
     * at announcements before it reuses a slot, so either it sees ours or
     * we see its flip and try again. */
    for (;;) {
        int slot = atomic_load(&h->gen_current);
        if (slot < 0)
            return NULL;
        atomic_store(&me->gen_slot, slot);
        if (atomic_load(&h->gen_current) == slot)
            return (const struct gw_gen *)((const char *)h + h->gen_off[slot]);
    }
}

void
gw_shm_gen_release(struct gw_shm_worker *me)
{
    atomic_store(&me->gen_slot, -1);
}

const struct gw_gen_model *
gw_gen_model_find(const struct gw_gen *g, const char *name)
{
    for (uint32_t i = 0; i < g->nmodels; i++) {
        const struct gw_gen_model *m = gw_gen_model_at(g, i);
        if (strcmp(gw_gen_str(g, m->name), name) == 0)
            return m;
    }
    return NULL;
}
