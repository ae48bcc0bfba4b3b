/*
 * quota.c - token and call quotas of a tenant, a user, a key and a model,
 * per UTC day, per UTC month or in total, checked before the upstream
 * call and counted after it.
 *
 * The quotas themselves are state (LMDB "quotas", set with aigwctl quota
 * set); a worker keeps a copy and reads it again when keys_generation in
 * shm moves.  What each quota has used in its period is a counter in shm
 * (shm/quota.c) shared by every worker.
 *
 * A call quota is reserved at admission (an atomic add, taken back when
 * over), so calls are never over their quota.  Tokens are known only
 * afterwards: a request is admitted while its quota has tokens left and
 * counted when it ends, so the overshoot is bounded by the requests in
 * flight when the quota ran out.  A call is given back when the request
 * fails; one that dies with its worker stays counted.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "worker/worker.h"

/* The worker's copy of the stored quotas. */
static struct {
    uint64_t generation;
    bool loaded;
    struct gw_quota *q;
    size_t n;
} quotas;

static void
quotas_load(struct gw_worker *w)
{
    uint64_t gen = atomic_load(&w->env->shm->hdr->keys_generation);
    struct gw_arena *a;
    char **json;
    size_t n;

    if (quotas.loaded && quotas.generation == gen)
        return;
    if ((a = gw_arena_create(4096)) == NULL)
        return;
    int rc = gw_store_rec_list(w->store, GW_DB_QUOTAS, false, 0, a, &json, &n);
    if (rc != 0) {
        gw_log(GW_LOG_ERROR, "quotas could not be read: %s; keeping the last ones read",
               gw_strerror(rc));
        gw_arena_destroy(a);
        return;
    }
    struct gw_quota *q = n > 0 ? calloc(n, sizeof(*q)) : NULL;
    size_t used = 0;
    if (n > 0 && q == NULL) {
        gw_arena_destroy(a);
        return;
    }
    for (size_t i = 0; i < n; i++)
        if (gw_quota_decode(json[i], &q[used]) == 0)
            used++;
    free(quotas.q);
    quotas.q = q;
    quotas.n = used;
    quotas.generation = gen;
    quotas.loaded = true;
    gw_arena_destroy(a);
}

/* Does quota q apply to a request of key to model? */
static bool
quota_matches(const struct gw_quota *q, const struct gw_key *key, const char *model)
{
    const char *colon = strchr(q->scope, ':');
    const char *id;

    if (colon == NULL)
        return false;
    size_t kind = (size_t)(colon - q->scope);
    if (kind == 3 && strncmp(q->scope, "key", 3) == 0)
        id = key->id;
    else if (kind == 4 && strncmp(q->scope, "user", 4) == 0)
        id = key->owner;
    else if (kind == 6 && strncmp(q->scope, "tenant", 6) == 0)
        id = key->tenant;
    else if (kind == 5 && strncmp(q->scope, "model", 5) == 0)
        id = model;
    else
        return false;
    return id != NULL && id[0] != '\0' && strcmp(colon + 1, id) == 0;
}

static const char *const period_words[GW_QUOTA_NPERIODS] = {"daily", "monthly", "total"};

/* "tenant acme's daily token quota (500000 tokens)" */
static const char *
quota_text(struct gw_arena *a, const struct gw_quota *q, bool calls)
{
    const char *colon = strchr(q->scope, ':');

    return gw_arena_printf(a, "%.*s %s's %s %s quota (%" PRId64 " %s)", (int)(colon - q->scope),
                           q->scope, colon + 1, period_words[q->period], calls ? "call" : "token",
                           calls ? q->calls : q->tokens, calls ? "calls" : "tokens");
}

/* When the period of q ends, as text for the message: "" for total. */
static const char *
reset_text(struct gw_arena *a, const struct gw_quota *q, int64_t now)
{
    time_t end = (time_t)gw_quota_period_end(q->period, now);
    struct tm tm;
    char buf[32];

    if (end == 0)
        return " It does not renew; ask an administrator to raise it.";
    gmtime_r(&end, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return gw_arena_printf(a, " It renews at %s.", buf);
}

void
gw_worker_quota_release(struct gw_worker *w, struct gw_quota_hold *hold)
{
    (void)w;
    for (int i = 0; i < hold->n; i++)
        if (hold->s[i].took_call)
            atomic_fetch_sub(&hold->s[i].counter->calls, 1);
    hold->n = 0;
}

int
gw_worker_quota_admit(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                      const char *model, struct gw_quota_hold *hold, bool *refused)
{
    int64_t now = time(NULL), left_tokens = -1, left_calls = -1;
    const struct gw_quota *out = NULL;
    bool out_calls = false;
    char name[GW_SHM_NAME_LEN + 8];

    hold->n = 0;
    hold->counted = false;
    *refused = false;
    quotas_load(w);
    for (size_t i = 0; i < quotas.n && out == NULL; i++) {
        const struct gw_quota *q = &quotas.q[i];
        struct gw_shm_quota *c;
        if (!quota_matches(q, key, model))
            continue;
        if (hold->n == GW_QUOTA_HOLD_MAX) {
            gw_log(GW_LOG_WARN, "req=%s more than %d quotas apply; %s is not checked", req->id,
                   GW_QUOTA_HOLD_MAX, q->scope);
            continue;
        }
        if (!gw_quota_name(q, name, sizeof(name)) ||
            (c = gw_shm_quota_get(w->env->shm, name, true)) == NULL) {
            gw_log(GW_LOG_WARN, "req=%s quota table full; %s is not checked", req->id, q->scope);
            continue;
        }
        gw_shm_quota_roll(c, gw_quota_period_id(q->period, now));
        hold->s[hold->n].counter = c;
        hold->s[hold->n].took_call = false;
        if (q->tokens >= 0) {
            int64_t left = q->tokens - atomic_load(&c->tokens);
            if (left <= 0) {
                out = q;
                break;
            }
            if (left_tokens < 0 || left < left_tokens)
                left_tokens = left;
        }
        if (q->calls >= 0) {
            int64_t used = atomic_fetch_add(&c->calls, 1) + 1;
            if (used > q->calls) {
                atomic_fetch_sub(&c->calls, 1);
                out = q;
                out_calls = true;
                break;
            }
            hold->s[hold->n].took_call = true;
            if (left_calls < 0 || q->calls - used < left_calls)
                left_calls = q->calls - used;
        }
        hold->n++;
    }
    if (out == NULL) {
        const char *h = req->quota_headers = "";
        if (left_tokens >= 0)
            h = gw_arena_printf(req->arena, "x-aigw-quota-remaining-tokens: %" PRId64 "\r\n",
                                left_tokens);
        if (left_calls >= 0)
            h = gw_arena_printf(req->arena, "%sx-aigw-quota-remaining-calls: %" PRId64 "\r\n", h,
                                left_calls);
        req->quota_headers = h;
        return 0;
    }

    gw_worker_quota_release(w, hold);
    *refused = true;
    int64_t end = gw_quota_period_end(out->period, now);
    req->quota_headers =
        end > 0 ? gw_arena_printf(req->arena, "Retry-After: %" PRId64 "\r\n", end - now) : "";
    const char *what = quota_text(req->arena, out, out_calls);
    gw_log(GW_LOG_INFO, "req=%s quota exhausted: %s", req->id, what);
    return gw_worker_http_error(&w->conn, req, 429, "insufficient_quota", "insufficient_quota",
                                NULL, "You exceeded your current quota: %s is used up.%s", what,
                                reset_text(req->arena, out, now));
}

void
gw_worker_quota_count(struct gw_quota_hold *hold, int64_t tokens)
{
    for (int i = 0; i < hold->n && !hold->counted; i++)
        if (tokens > 0)
            atomic_fetch_add(&hold->s[i].counter->tokens, tokens);
    hold->counted = true;
}

void
gw_worker_quota_settle(struct gw_worker *w, const struct gw_request *req,
                       struct gw_quota_hold *hold)
{
    int64_t used = req->prompt_tokens + req->completion_tokens;
    bool failed = req->status >= 400 || req->status == 0;

    (void)w;
    for (int i = 0; i < hold->n; i++) {
        if (used > 0 && !hold->counted)
            atomic_fetch_add(&hold->s[i].counter->tokens, used);
        if (failed && hold->s[i].took_call)
            atomic_fetch_sub(&hold->s[i].counter->calls, 1);
    }
    hold->n = 0;
}
