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

/* n strings one after another; returns the offset of the first. */
static uint32_t
gen_strs(struct gen_writer *w, char *const *v, size_t n)
{
    size_t total = 0;

    for (size_t i = 0; i < n; i++)
        total += strlen(v[i]) + 1;
    if (total == 0)
        return 0;
    uint32_t off = gen_alloc(w, total);
    if (off == 0)
        return 0;
    for (size_t i = 0, at = off; i < n; i++) {
        size_t len = strlen(v[i]) + 1;
        memcpy(w->base + at, v[i], len);
        at += len;
    }
    return off;
}

/*
 * The safety rules, with a stat entry per rule and direction it applies
 * to ("s:input:block:NAME"), claimed here so that /metrics lists every
 * rule from the start.
 */
static void
safety_write(struct gen_writer *w, const struct gw_shm *shm, const struct gw_safety *sf,
             struct gw_gen *g)
{
    static const char *const dirs[2] = {"input", "output"};

    g->nsafety = (uint32_t)sf->nrules;
    g->safety_window = (uint32_t)sf->stream_window;
    g->nallow_keys = (uint32_t)sf->nallow_keys;
    g->allow_keys = gen_strs(w, sf->allow_keys, sf->nallow_keys);
    g->nallow_tenants = (uint32_t)sf->nallow_tenants;
    g->allow_tenants = gen_strs(w, sf->allow_tenants, sf->nallow_tenants);
    g->nallow_models = (uint32_t)sf->nallow_models;
    g->allow_models = gen_strs(w, sf->allow_models, sf->nallow_models);
    if (sf->moderation_model != NULL) {
        g->moderation_model = (uint32_t)sf->moderation_index + 1;
        g->nmoderation_categories = (uint32_t)sf->nmoderation_categories;
        g->moderation_categories =
            gen_strs(w, sf->moderation_categories, sf->nmoderation_categories);
        g->moderation_action = (uint8_t)sf->moderation_action;
        g->moderation_fail_closed = sf->moderation_fail_closed;
    }
    if (sf->nrules == 0)
        return;
    g->safety = gen_alloc(w, sf->nrules * sizeof(struct gw_gen_safety_rule));
    for (size_t i = 0; i < sf->nrules && !w->overflow; i++) {
        const struct gw_safety_rule *r = &sf->rules[i];
        struct gw_gen_safety_rule gr = {
            .name = gen_str(w, r->name),
            .type = (uint8_t)r->type,
            .action = (uint8_t)r->action,
            .detector = (uint8_t)r->detector,
            .on = (uint8_t)r->on,
            .whole_word = r->whole_word,
            .restore = r->restore,
            .pattern = gen_str(w, r->pattern),
            .words = gen_strs(w, r->words, r->nwords),
            .nwords = (uint32_t)r->nwords,
            .mask = gen_str(w, r->mask),
            .stat = {-1, -1},
        };
        for (int d = 0; d < 2; d++) {
            char stat[GW_SHM_NAME_LEN];
            if (!(r->on & (1u << d)))
                continue;
            snprintf(stat, sizeof(stat), "s:%s:%s:%s", dirs[d], gw_safety_action_names[r->action],
                     r->name);
            gr.stat[d] = (int32_t)gw_shm_stat_find(shm, stat, true);
        }
        if (!w->overflow)
            memcpy(w->base + g->safety + i * sizeof(gr), &gr, sizeof(gr));
    }
}

bool
gw_gen_list_has(const struct gw_gen *g, uint32_t off, uint32_t n, const char *s)
{
    const char *p = gw_gen_str(g, off);

    for (uint32_t i = 0; i < n && p != NULL; i++, p += strlen(p) + 1)
        if (strcmp(p, s) == 0)
            return true;
    return false;
}

/* A list of names as an array of string offsets; returns its offset. */
static uint32_t
gen_names(struct gen_writer *w, const struct gw_names *l, uint32_t *n)
{
    uint32_t off;

    *n = 0;
    if (l->n == 0 || (off = gen_alloc(w, l->n * sizeof(uint32_t))) == 0)
        return 0;
    for (size_t i = 0; i < l->n; i++) {
        uint32_t s = gen_str(w, l->v[i]);
        if (w->overflow)
            return 0;
        memcpy(w->base + off + i * sizeof(uint32_t), &s, sizeof(s));
    }
    *n = (uint32_t)l->n;
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
        if (pid > 0 && (atomic_load(&wk->gen_slots) & (1u << slot)) != 0 &&
            (kill(pid, 0) == 0 || errno == EPERM))
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
        .user_limits = cfg->user_limits,
        .tenant_limits = cfg->tenant_limits,
        .cache_max_size = cfg->cache_max_size,
        .capture_journal = cfg->capture_journal,
        .capture_rotate = (uint8_t)cfg->capture_rotate,
        .capture_max_size = cfg->capture_max_size,
        .capture_max_record = cfg->capture_max_record,
    };
    size_t ntargets = 0;
    for (size_t i = 0; i < cfg->nmodels; i++)
        ntargets += cfg->models[i].ntargets;
    g.ntargets = (uint32_t)ntargets;
    g.config_path = gen_str(&w, cfg->path);
    g.log_file = gen_str(&w, cfg->log_file);
    g.access_file = gen_str(&w, cfg->access_file);
    g.access_journal = cfg->access_journal;
    g.access_buffer = (uint32_t)cfg->access_buffer;
    g.access_flush_ms = (uint32_t)cfg->access_flush_ms;
    g.capture_dir = gen_str(&w, cfg->capture_dir);
    g.capture_keys = gen_names(&w, &cfg->capture_keys, &g.ncapture_keys);
    g.capture_tenants = gen_names(&w, &cfg->capture_tenants, &g.ncapture_tenants);
    g.cache_bypass_keys = gen_names(&w, &cfg->cache_bypass.keys, &g.ncache_bypass_keys);
    g.cache_bypass_tenants = gen_names(&w, &cfg->cache_bypass.tenants, &g.ncache_bypass_tenants);
    g.capture_bypass_keys = gen_names(&w, &cfg->capture_bypass.keys, &g.ncapture_bypass_keys);
    g.capture_bypass_tenants =
        gen_names(&w, &cfg->capture_bypass.tenants, &g.ncapture_bypass_tenants);
    g.providers = gen_alloc(&w, cfg->nproviders * sizeof(struct gw_gen_provider));
    g.models = gen_alloc(&w, cfg->nmodels * sizeof(struct gw_gen_model));
    g.targets = gen_alloc(&w, ntargets * sizeof(struct gw_gen_target));
    g.npassthru = (uint32_t)cfg->npassthru;
    g.passthru = gen_alloc(&w, cfg->npassthru * sizeof(struct gw_gen_passthru));
    safety_write(&w, shm, &cfg->safety, &g);
    if (w.overflow)
        return GW_ETOOBIG;

    for (size_t i = 0; i < cfg->npassthru; i++) {
        const struct gw_passthru *p = &cfg->passthru[i];
        struct gw_gen_passthru gp = {
            .kind = p->kind,
            .name = gen_str(&w, p->name),
            .provider = (uint32_t)p->provider,
            .path = p->path != NULL && p->path[0] != '\0' ? gen_str(&w, p->path) : 0,
        };
        memcpy(w.base + g.passthru + i * sizeof(gp), &gp, sizeof(gp));
    }
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
            .safety_rules = m->safety_rules,
            .type = m->type,
            .context_length = m->context_length,
            .cache_ttl_ms = m->cache_ttl_ms,
            .cache_deterministic = m->cache_deterministic,
            .moderation = m->safety_moderation,
            .capture = m->capture,
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

static void
slot_hold(struct gw_gen_refs *refs, int slot)
{
    if (refs->n[slot]++ == 0)
        atomic_fetch_or(&refs->me->gen_slots, 1u << slot);
}

static void
slot_drop(struct gw_gen_refs *refs, int slot)
{
    if (refs->n[slot] > 0 && --refs->n[slot] == 0)
        atomic_fetch_and(&refs->me->gen_slots, ~(1u << slot));
}

const struct gw_gen *
gw_shm_gen_acquire(struct gw_gen_refs *refs)
{
    struct gw_shm_header *h = refs->shm->hdr;

    /* Announce the slot, then check it is still current: the master looks
     * at announcements before it reuses a slot, so either it sees ours or
     * we see its flip and try again. */
    for (;;) {
        int slot = atomic_load(&h->gen_current);
        if (slot < 0)
            return NULL;
        slot_hold(refs, slot);
        if (atomic_load(&h->gen_current) == slot)
            return (const struct gw_gen *)((const char *)h + h->gen_off[slot]);
        slot_drop(refs, slot);
    }
}

const struct gw_gen *
gw_shm_gen_current(const struct gw_shm *shm)
{
    int slot = atomic_load(&shm->hdr->gen_current);

    return slot < 0 ? NULL
                    : (const struct gw_gen *)((const char *)shm->hdr + shm->hdr->gen_off[slot]);
}

void
gw_shm_gen_release(struct gw_gen_refs *refs, const struct gw_gen *g)
{
    const struct gw_shm_header *h = refs->shm->hdr;

    for (int s = 0; g != NULL && s < GW_SHM_GEN_SLOTS; s++)
        if ((const char *)g == (const char *)h + h->gen_off[s])
            slot_drop(refs, s);
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

const char *const gw_passthru_kind_names[GW_PASSTHRU_N] = {"mcp", "agent", "sandbox"};

const struct gw_gen_passthru *
gw_gen_passthru_find(const struct gw_gen *g, enum gw_passthru_kind kind, const char *name,
                     size_t len)
{
    const struct gw_gen_passthru *p =
        (const struct gw_gen_passthru *)((const char *)g + g->passthru);

    for (uint32_t i = 0; i < g->npassthru; i++) {
        const char *n = gw_gen_str(g, p[i].name);
        if (p[i].kind == (uint32_t)kind && strlen(n) == len && memcmp(n, name, len) == 0)
            return &p[i];
    }
    return NULL;
}

bool
gw_gen_names_has(const struct gw_gen *g, uint32_t off, uint32_t n, const char *name)
{
    const uint32_t *v = (const uint32_t *)((const char *)g + off);

    for (uint32_t i = 0; i < n && name != NULL; i++)
        if (strcmp(gw_gen_str(g, v[i]), name) == 0)
            return true;
    return false;
}
