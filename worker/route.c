/*
 * route.c - choosing the target of a model for one attempt, and learning
 * from how the attempt went.
 *
 * Every figure a choice depends on lives in the target's entry of the
 * shared stat table (in flight, latency and throughput averages, failures,
 * breaker, health), so all workers decide from the same picture.  A
 * target is eligible when its active health check passes, no Retry-After
 * holds it back, its breaker is closed (or open past its cool-down, when
 * one request may probe it), and this request has not tried it yet.
 *
 * A breaker opens on failures in a row, or on the failed share of the
 * attempts in a window of time.  The window is three atomics of the stat
 * entry (its start and two counts), moved on without a lock: counts that
 * race with the start of a new window may land in either, which a rate
 * over many attempts does not notice.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "worker/worker.h"

/* Weight of a new sample in the moving averages. */
#define EWMA_ALPHA 0.2
/* One latency-routed request in this many goes elsewhere, to keep the
 * other targets' figures fresh. */
#define LATENCY_EXPLORE_ONE_IN 20
/* A Retry-After longer than this is not believed. */
#define RETRY_AFTER_MAX_MS 60000

static struct gw_shm_stat *
target_stat(const struct gw_worker *w, const struct gw_gen_target *t)
{
    return t->stat >= 0 ? gw_shm_stat_at(w->env->shm, (size_t)t->stat) : NULL;
}

static bool
tried_has(const uint64_t tried[4], uint32_t i)
{
    return i < 256 && (tried[i / 64] >> (i % 64)) & 1;
}

void
gw_worker_route_tried_add(uint64_t tried[4], uint32_t i)
{
    if (i < 256)
        tried[i / 64] |= 1ULL << (i % 64);
}

/* Has m a breaker at all: by failures in a row, by error rate, or both? */
static bool
breaker_on(const struct gw_gen_model *m)
{
    return m->breaker_failures > 0 || m->breaker_error_rate > 0;
}

/* May target t take a request now?  (Breaker probes are claimed later.) */
static bool
eligible(const struct gw_worker *w, const struct gw_gen_model *m, const struct gw_gen_target *t,
         int64_t now)
{
    struct gw_shm_stat *st = target_stat(w, t);

    if (st == NULL)
        return true;
    if (atomic_load(&st->health_down) || atomic_load(&st->not_before_ms) > now)
        return false;
    if (!breaker_on(m))
        return true;
    int state = atomic_load(&st->breaker_state);
    /* Open past its cool-down, or a probe that never reported back. */
    return state == GW_BREAKER_CLOSED || atomic_load(&st->breaker_until_ms) <= now;
}

/*
 * The target chosen is about to get a request.  Through a breaker that is
 * not closed only one request goes: the probe.  Returns false when another
 * worker's probe got there first.
 */
static bool
claim(const struct gw_worker *w, const struct gw_gen_model *m, const struct gw_gen_target *t,
      int64_t now, bool *probe)
{
    struct gw_shm_stat *st = target_stat(w, t);

    *probe = false;
    if (st == NULL || !breaker_on(m))
        return true;
    int32_t state = atomic_load(&st->breaker_state);
    if (state == GW_BREAKER_CLOSED)
        return true;
    int64_t until = atomic_load(&st->breaker_until_ms);
    if (until > now)
        return false;
    /* Whoever moves the deadline wins the probe; the probe itself has the
     * cool-down to report back before another one may go. */
    if (!atomic_compare_exchange_strong(&st->breaker_until_ms, &until,
                                        now + m->breaker_cooldown_ms))
        return false;
    atomic_store(&st->breaker_state, GW_BREAKER_HALF_OPEN);
    *probe = true;
    return true;
}

static uint64_t
hash64(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ seed;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    /* Finalise (splitmix64) so that near names spread apart. */
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

/*
 * Weighted rendezvous hashing: every (session, target) pair gets a score
 * and the best eligible target wins.  Adding a target moves only the
 * sessions that now score best on it; removing one moves only its own.
 */
static double
rendezvous_score(const char *session, const struct gw_gen *g, const struct gw_gen_target *t)
{
    const char *model = gw_gen_str(g, t->model);
    const char *prov = gw_gen_str(g, gw_gen_provider(g, t->provider)->name);
    uint64_t h = hash64(session, hash64(prov, hash64(model, 0)));
    double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */

    return -(double)t->weight / log(u);
}

int
gw_worker_route_pick(const struct gw_worker *w, const struct gw_gen *g,
                     const struct gw_gen_model *m, enum gw_route_strategy strategy,
                     const char *session, const uint64_t tried[4], bool *probe)
{
    struct gw_shm_stat *ms = m->stat >= 0 ? gw_shm_stat_at(w->env->shm, (size_t)m->stat) : NULL;
    int64_t now = gw_now_ms();
    uint64_t spin = ms != NULL ? atomic_fetch_add(&ms->rr, 1) : 0;

    if (strategy == GW_ROUTE_STICKY && (session == NULL || *session == '\0'))
        strategy = GW_ROUTE_WEIGHTED; /* no session to stick to */
    for (int round = 0; round < 4; round++) {
        int best = -1;
        double best_score = 0;

        if (strategy == GW_ROUTE_WEIGHTED && m->nschedule > 0) {
            const uint16_t *sched = (const uint16_t *)((const char *)g + m->schedule);
            for (uint32_t k = 0; k < m->nschedule && best < 0; k++) {
                uint32_t i = sched[(spin + k) % m->nschedule];
                if (!tried_has(tried, i) &&
                    eligible(w, m, gw_gen_target(g, m->first_target + i), now))
                    best = (int)i;
            }
        } else {
            bool explore = strategy == GW_ROUTE_LATENCY && spin % LATENCY_EXPLORE_ONE_IN == 0;
            /* Start the scan at a rotating place, so ties spread out; an
             * exploring pick rotates by its own count, or it would always
             * land on the same target when ntargets divides the period. */
            uint64_t start = explore ? spin / LATENCY_EXPLORE_ONE_IN : spin;
            for (uint32_t k = 0; k < m->ntargets; k++) {
                uint32_t i = (uint32_t)((start + k) % m->ntargets);
                const struct gw_gen_target *t = gw_gen_target(g, m->first_target + i);
                if (tried_has(tried, i) || !eligible(w, m, t, now))
                    continue;
                struct gw_shm_stat *st = target_stat(w, t);
                double score;
                switch (strategy) {
                case GW_ROUTE_STICKY: score = rendezvous_score(session, g, t); break;
                case GW_ROUTE_LEAST_BUSY:
                    score = st ? -(double)atomic_load(&st->in_flight) / t->weight : 0;
                    break;
                case GW_ROUTE_LATENCY: {
                    int64_t ewma = st ? atomic_load(&st->ewma_ttft_us) : 0;
                    /* No figure yet: try it first; exploring: take the next one. */
                    score = explore || ewma == 0 ? INFINITY : -(double)ewma;
                    break;
                }
                case GW_ROUTE_PRICE: score = -(t->price_input + t->price_output); break;
                case GW_ROUTE_THROUGHPUT: {
                    int64_t tps = st ? atomic_load(&st->ewma_tokens_per_s_milli) : 0;
                    score = tps == 0 ? INFINITY : (double)tps;
                    break;
                }
                default: score = 0; break;
                }
                if (best < 0 || score > best_score) {
                    best = (int)i;
                    best_score = score;
                }
            }
        }
        if (best < 0)
            return -1;
        if (claim(w, m, gw_gen_target(g, m->first_target + (uint32_t)best), now, probe))
            return best;
        /* Another worker's probe holds it: choose again without it. */
        gw_worker_route_tried_add((uint64_t *)tried, (uint32_t)best);
    }
    return -1;
}

static void
ewma_update(_Atomic int64_t *avg, int64_t sample)
{
    int64_t old = atomic_load(avg), next;

    do {
        next = old == 0 ? sample : (int64_t)((1 - EWMA_ALPHA) * (double)old + EWMA_ALPHA * sample);
        if (next == 0)
            next = 1; /* 0 means "no sample" */
    } while (!atomic_compare_exchange_weak(avg, &old, next));
}

/* Start a new error-rate window at now, with no attempts in it. */
static void
window_restart(struct gw_shm_stat *st, int64_t now)
{
    atomic_store(&st->window_start_ms, now);
    atomic_store(&st->window_requests, 0);
    atomic_store(&st->window_failures, 0);
}

/*
 * Count one attempt on st in its error-rate window, m's window long; a
 * window that is over is replaced by one starting now, by whichever worker
 * moves its start first.  Returns true when the attempt failed and the
 * window, with at least m's min_requests attempts in it, has failed as
 * large a share of them as m's error_rate; *failed and *attempts are then
 * the window's counts.
 */
static bool
window_count(struct gw_shm_stat *st, const struct gw_gen_model *m, int64_t now, bool ok,
             uint64_t *failed, uint64_t *attempts)
{
    int64_t start = atomic_load(&st->window_start_ms);

    if (now - start >= m->breaker_window_ms &&
        atomic_compare_exchange_strong(&st->window_start_ms, &start, now)) {
        atomic_store(&st->window_requests, 0);
        atomic_store(&st->window_failures, 0);
    }
    *attempts = atomic_fetch_add(&st->window_requests, 1) + 1;
    if (ok)
        return false;
    *failed = atomic_fetch_add(&st->window_failures, 1) + 1;
    return *attempts >= m->breaker_min_requests &&
           (double)*failed >= m->breaker_error_rate * (double)*attempts;
}

void
gw_worker_route_result(const struct gw_worker *w, const struct gw_gen *g,
                       const struct gw_gen_model *m, const struct gw_gen_target *t, bool ok,
                       bool probe, const struct gw_call *call, int64_t duration_us)
{
    struct gw_shm_stat *st = target_stat(w, t);
    int64_t now = gw_now_ms();
    uint64_t failed = 0, attempts = 0;

    if (st == NULL)
        return;
    if (ok) {
        atomic_store(&st->consecutive_failures, 0);
        if (probe || atomic_load(&st->breaker_state) != GW_BREAKER_CLOSED) {
            if (atomic_exchange(&st->breaker_state, GW_BREAKER_CLOSED) != GW_BREAKER_CLOSED) {
                /* The failures that opened it are not held against it again. */
                window_restart(st, now);
                gw_log(GW_LOG_INFO, "breaker of %s/%s closed: the probe succeeded",
                       gw_gen_str(g, gw_gen_provider(g, t->provider)->name),
                       gw_gen_str(g, t->model));
            }
        }
        if (m->breaker_error_rate > 0)
            window_count(st, m, now, true, &failed, &attempts);
        /* Measured from this attempt's own start, not the request's. */
        if (call->attempt_first_byte_us > 0)
            ewma_update(&st->ewma_ttft_us, call->attempt_first_byte_us);
        /* A stream's rate is over its generation; a whole answer's, over
         * its whole time (the first byte is the last one there). */
        int64_t gen_us = call->stream ? duration_us - call->attempt_first_byte_us : duration_us;
        if (call->completion_tokens > 0 && gen_us > 1000)
            ewma_update(&st->ewma_tokens_per_s_milli,
                        call->completion_tokens * 1000000000LL / gen_us);
        return;
    }
    atomic_fetch_add(&st->failures, 1);
    uint64_t n = atomic_fetch_add(&st->consecutive_failures, 1) + 1;
    if (call->fail.retry_after_ms > 0) {
        int64_t wait = call->fail.retry_after_ms < RETRY_AFTER_MAX_MS ? call->fail.retry_after_ms
                                                                      : RETRY_AFTER_MAX_MS;
        atomic_store(&st->not_before_ms, now + wait);
    }
    bool by_rate = m->breaker_error_rate > 0 && window_count(st, m, now, false, &failed, &attempts);
    if (!breaker_on(m))
        return;
    bool by_count = m->breaker_failures > 0 && n >= m->breaker_failures;
    int32_t closed = GW_BREAKER_CLOSED;
    if (probe || ((by_count || by_rate) &&
                  atomic_compare_exchange_strong(&st->breaker_state, &closed, GW_BREAKER_OPEN))) {
        char why[128];
        if (probe || by_count)
            snprintf(why, sizeof(why), "%s",
                     probe ? "the probe failed" : "too many consecutive failures");
        else
            snprintf(why, sizeof(why),
                     "error rate %.0f%% over the last window (%llu of %llu attempts failed)",
                     100.0 * (double)failed / (double)attempts, (unsigned long long)failed,
                     (unsigned long long)attempts);
        atomic_store(&st->breaker_state, GW_BREAKER_OPEN);
        atomic_store(&st->breaker_until_ms, now + m->breaker_cooldown_ms);
        atomic_fetch_add(&st->breaker_opened, 1);
        gw_log(GW_LOG_WARN, "breaker of %s/%s opened for %lld ms: %s",
               gw_gen_str(g, gw_gen_provider(g, t->provider)->name), gw_gen_str(g, t->model),
               (long long)m->breaker_cooldown_ms, why);
    }
}
