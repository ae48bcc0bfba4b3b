/*
 * limit.c - requests-per-minute and tokens-per-minute limits of a key, of
 * its owner (all the user's keys), of the owner's tenant (all its keys)
 * and of a model (all keys together), enforced after authorization and
 * before the upstream call.
 *
 * Each limited scope has two token buckets in shm, shared by every worker
 * (shm/bucket.c): "rk:ID", "ru:USER", "rt:TENANT", "rm:MODEL" hold
 * requests (rpm of them, filling at rpm/60 per second), "tk:", "tu:",
 * "tt:", "tm:" tokens.  A request takes one
 * request and an estimate of its tokens up front; once the response is
 * out, gw_worker_limit_settle moves the token bucket to the real usage.
 *
 * The limit of a scope is its override (LMDB "limits", set with aigwctl
 * limit set) where one is stored, else the configured default.  Overrides
 * are cached here like keys: any change bumps keys_generation in shm,
 * which empties the cache at the next lookup.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "worker/worker.h"

/* Tokens a request is taken to produce when it does not say (max_tokens). */
#define LIMIT_DEFAULT_COMPLETION 256

#define LIMIT_CACHE_SLOTS 256

struct limit_cache_entry {
    uint64_t generation;
    bool used;
    bool found;
    char scope[GW_SHM_NAME_LEN + 8];
    struct gw_limits limits;
};

static struct limit_cache_entry limit_cache[LIMIT_CACHE_SLOTS];

static uint32_t
limit_hash(const char *s)
{
    uint32_t h = 2166136261u;

    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

/* The override of scope ("key:ID"), or false when it has none. */
static bool
limit_override(struct gw_worker *w, const char *scope, struct gw_limits *out)
{
    uint64_t gen = atomic_load(&w->env->shm->hdr->keys_generation);
    struct limit_cache_entry *e = &limit_cache[limit_hash(scope) % LIMIT_CACHE_SLOTS];

    if (!e->used || e->generation != gen || strcmp(e->scope, scope) != 0) {
        int rc = gw_store_limit_get(w->store, scope, &e->limits);
        if (rc != 0 && rc != GW_ENOENT)
            gw_log(GW_LOG_WARN, "limits of %s could not be read: %s; using the defaults", scope,
                   gw_strerror(rc));
        e->found = rc == 0;
        e->used = true;
        e->generation = gen;
        snprintf(e->scope, sizeof(e->scope), "%s", scope);
    }
    if (e->found)
        *out = e->limits;
    return e->found;
}

/*
 * Whether any override is stored at all, read again when keys_generation
 * moves (every override change bumps it).  With none, a scope without a
 * configured default is not limited, and a request whose scopes have no
 * default costs no lookup and no name formatting: rate limits that are
 * not in use cost next to nothing.
 */
static bool
limit_overrides_exist(struct gw_worker *w)
{
    static uint64_t generation;
    static bool known, exist;
    uint64_t gen = atomic_load(&w->env->shm->hdr->keys_generation);
    size_t n = 0;

    if (known && generation == gen)
        return exist;
    int rc = gw_store_limit_count(w->store, &n);
    /* Unsure is the same as some: look each scope up as before. */
    exist = rc != 0 || n > 0;
    known = rc == 0;
    generation = gen;
    return exist;
}

/* The limits in force: the override's fields where it sets them. */
static struct gw_limits
limit_effective(struct gw_worker *w, const char *scope, struct gw_limits def)
{
    struct gw_limits o;

    if (limit_override(w, scope, &o)) {
        if (o.rpm != GW_LIMIT_UNSET)
            def.rpm = o.rpm;
        if (o.tpm != GW_LIMIT_UNSET)
            def.tpm = o.tpm;
    }
    return def;
}

/*
 * A duration as OpenAI writes it in x-ratelimit-reset-*: "17ms", "1s",
 * "1.5s", "6m0s", "1h2m3s".
 */
static const char *
duration_text(struct gw_arena *a, int64_t ms)
{
    char secs[32];
    int64_t h = ms / 3600000, m = ms / 60000 % 60;
    size_t len;

    if (ms < 1000)
        return gw_arena_printf(a, "%lldms", (long long)(ms < 0 ? 0 : ms));
    snprintf(secs, sizeof(secs), "%.3f", (double)(ms % 60000) / 1000.0);
    len = strlen(secs);
    while (secs[len - 1] == '0')
        secs[--len] = '\0';
    if (secs[len - 1] == '.')
        secs[--len] = '\0';
    if (h > 0)
        return gw_arena_printf(a, "%lldh%lldm%ss", (long long)h, (long long)m, secs);
    if (m > 0)
        return gw_arena_printf(a, "%lldm%ss", (long long)m, secs);
    return gw_arena_printf(a, "%ss", secs);
}

/* The figures of the scope with the least left, for the headers. */
struct limit_view {
    bool set;
    uint64_t limit;
    double remaining;
    int64_t reset_ms;
};

static void
view_note(struct limit_view *v, uint64_t limit, double remaining, int64_t reset_ms)
{
    if (remaining < 0)
        remaining = 0;
    if (!v->set || remaining < v->remaining) {
        v->set = true;
        v->limit = limit;
        v->remaining = remaining;
        v->reset_ms = reset_ms;
    }
}

/* The time until a bucket of limit per minute with remaining left is full. */
static int64_t
reset_ms(uint64_t limit, double remaining)
{
    double missing = (double)limit - remaining;

    return missing <= 0 ? 0 : (int64_t)ceil(missing * 60000.0 / (double)limit);
}

/* The three x-ratelimit-* lines of one kind ("requests" or "tokens"). */
static const char *
headers_of(struct gw_arena *a, const char *kind, const struct limit_view *v)
{
    if (!v->set)
        return "";
    return gw_arena_printf(a,
                           "x-ratelimit-limit-%s: %llu\r\n"
                           "x-ratelimit-remaining-%s: %.0f\r\n"
                           "x-ratelimit-reset-%s: %s\r\n",
                           kind, (unsigned long long)v->limit, kind, v->remaining, kind,
                           duration_text(a, v->reset_ms));
}

static const char *
headers_text(struct gw_arena *a, const struct limit_view *rq, const struct limit_view *tk)
{
    return gw_arena_printf(a, "%s%s", headers_of(a, "requests", rq), headers_of(a, "tokens", tk));
}

/* Prompt bytes / 4 plus the completion asked for (or a default). */
static double
tokens_estimate(const struct gw_request *req, struct gw_call *call)
{
    /* A pass-through request has no call: its prompt is its bytes. */
    struct json_object *v, *body = call != NULL ? gw_worker_call_json(call) : NULL;
    int64_t out = LIMIT_DEFAULT_COMPLETION;

    if ((json_object_object_get_ex(body, "max_completion_tokens", &v) ||
         json_object_object_get_ex(body, "max_tokens", &v)) &&
        json_object_is_type(v, json_type_int) && json_object_get_int64(v) >= 0)
        out = json_object_get_int64(v);
    return (double)(req->body_len / 4) + (double)out;
}

/* One limited scope of a request: a key, its owner, the owner's tenant,
 * the model. */
struct limit_scope {
    const char *kind; /* "key", "user", "tenant", "model" */
    const char *id;
    struct gw_limits l;
    char rname[GW_SHM_NAME_LEN]; /* "rk:ID", "ru:NAME", "rt:NAME", "rm:NAME" */
    bool took_request;
};

#define LIMIT_SCOPES 4

/* The scopes of a request with a limit in force; returns how many. */
static int
limit_scopes(struct gw_worker *w, const struct gw_key *key, const struct gw_gen_model *m,
             struct limit_scope sc[LIMIT_SCOPES])
{
    const struct gw_gen *g = w->gen;
    const struct {
        const char *kind, *id;
        struct gw_limits def;
    } all[LIMIT_SCOPES] = {
        {"key", key->id, g->key_limits},
        {"user", key->owner, g->user_limits},
        {"tenant", key->tenant, g->tenant_limits},
        {"model", m != NULL ? gw_gen_str(g, m->name) : NULL,
         m != NULL ? m->limits : (struct gw_limits){0}},
    };
    char scope[GW_SHM_NAME_LEN + 8];
    bool overrides = limit_overrides_exist(w);
    int n = 0;

    for (int i = 0; i < LIMIT_SCOPES; i++) {
        if (all[i].id == NULL || all[i].id[0] == '\0')
            continue; /* a key without an owner has no user or tenant */
        if (!overrides && all[i].def.rpm == 0 && all[i].def.tpm == 0)
            continue; /* not limited: no name to build, nothing to look up */
        sc[n].l = all[i].def;
        if (overrides) {
            snprintf(scope, sizeof(scope), "%s:%s", all[i].kind, all[i].id);
            sc[n].l = limit_effective(w, scope, all[i].def);
        }
        if (sc[n].l.rpm == 0 && sc[n].l.tpm == 0)
            continue;
        sc[n].kind = all[i].kind;
        sc[n].id = all[i].id;
        sc[n].took_request = false;
        snprintf(sc[n].rname, sizeof(sc[n].rname), "r%c:%s", all[i].kind[0], all[i].id);
        n++;
    }
    return n;
}

int
gw_worker_limit_admit(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                      const struct gw_gen_model *m, struct gw_call *call,
                      struct gw_limit_hold *hold, bool *refused)
{
    const struct gw_shm *shm = w->env->shm;
    struct limit_scope sc[LIMIT_SCOPES];
    struct limit_view rq = {0}, tk = {0};
    const char *what = NULL;
    double estimate, need = 0;
    int64_t wait_ms = 0;
    uint64_t limit = 0;
    int refused_at = -1, n;

    memset(hold, 0, sizeof(*hold));
    *refused = false;
    if ((n = limit_scopes(w, key, m, sc)) == 0)
        return 0;
    estimate = tokens_estimate(req, call);

    /* Requests first: a request refused by its RPM takes no tokens. */
    for (int i = 0; i < n && refused_at < 0; i++) {
        double remaining, rpm = (double)sc[i].l.rpm;
        if (sc[i].l.rpm == 0)
            continue;
        if (!gw_shm_bucket_take(shm, sc[i].rname, rpm / 60.0, rpm, 1, &wait_ms, &remaining)) {
            refused_at = i;
            what = "requests";
            limit = sc[i].l.rpm;
            view_note(&rq, sc[i].l.rpm, 0, wait_ms);
            break;
        }
        sc[i].took_request = true;
        view_note(&rq, sc[i].l.rpm, remaining, reset_ms(sc[i].l.rpm, remaining));
    }
    for (int i = 0; i < n && refused_at < 0; i++) {
        double remaining, tpm = (double)sc[i].l.tpm;
        if (sc[i].l.tpm == 0)
            continue;
        /* Never more than the whole bucket, or it could never pass. */
        need = estimate < tpm ? estimate : tpm;
        snprintf(hold->s[hold->nscopes].tname, sizeof(hold->s[0].tname), "t%c:%s", sc[i].kind[0],
                 sc[i].id);
        if (!gw_shm_bucket_take(shm, hold->s[hold->nscopes].tname, tpm / 60.0, tpm, need, &wait_ms,
                                &remaining)) {
            refused_at = i;
            what = "tokens";
            limit = sc[i].l.tpm;
            view_note(&tk, sc[i].l.tpm, remaining, reset_ms(sc[i].l.tpm, remaining));
            hold->s[hold->nscopes].tname[0] = '\0';
            break;
        }
        hold->s[hold->nscopes].tpm = tpm;
        hold->s[hold->nscopes].charged = need;
        hold->nscopes++;
        view_note(&tk, sc[i].l.tpm, remaining, reset_ms(sc[i].l.tpm, remaining));
    }
    if (refused_at < 0) {
        req->limit_headers = headers_text(req->arena, &rq, &tk);
        return 0;
    }

    /* Refused: give back whatever this request took. */
    for (int i = 0; i < n; i++)
        if (sc[i].took_request)
            gw_shm_bucket_give(shm, sc[i].rname, (double)sc[i].l.rpm / 60.0, 1);
    for (int i = 0; i < hold->nscopes; i++)
        gw_shm_bucket_give(shm, hold->s[i].tname, hold->s[i].tpm / 60.0, hold->s[i].charged);
    hold->nscopes = 0;
    *refused = true;
    /* Refused by tokens: the request each scope took is back. */
    if (strcmp(what, "tokens") == 0 && rq.set)
        rq.remaining += 1;
    long long retry = (wait_ms + 999) / 1000;
    if (retry < 1)
        retry = 1;
    req->limit_headers = gw_arena_printf(req->arena, "%sRetry-After: %lld\r\n",
                                         headers_text(req->arena, &rq, &tk), retry);
    gw_log(GW_LOG_INFO, "req=%s rate limit of %s %s reached (%llu %s per minute)", req->id,
           sc[refused_at].kind, sc[refused_at].id, (unsigned long long)limit, what);
    if (strcmp(what, "tokens") == 0)
        return gw_worker_http_error(
            &w->conn, req, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
            "Rate limit reached for %s %s: %llu tokens per minute (this request needs about "
            "%.0f). Please try again in %s.",
            sc[refused_at].kind, sc[refused_at].id, (unsigned long long)limit, need,
            duration_text(req->arena, wait_ms));
    return gw_worker_http_error(&w->conn, req, 429, "rate_limit_error", "rate_limit_exceeded", NULL,
                                "Rate limit reached for %s %s: %llu requests per minute. Please "
                                "try again in %s.",
                                sc[refused_at].kind, sc[refused_at].id, (unsigned long long)limit,
                                duration_text(req->arena, wait_ms));
}

void
gw_worker_limit_settle(struct gw_worker *w, const struct gw_request *req,
                       const struct gw_limit_hold *hold)
{
    double used;

    if (hold->nscopes == 0)
        return;
    if (req->have_usage)
        used = (double)(req->prompt_tokens + req->completion_tokens);
    else if (req->status >= 400)
        used = 0; /* failed before the upstream produced anything we know of */
    else
        used = -1; /* no usage reported: the estimate stands */
    for (int i = 0; i < hold->nscopes; i++) {
        double diff = used - hold->s[i].charged;
        if (used < 0 || diff == 0)
            continue;
        if (diff < 0)
            gw_shm_bucket_give(w->env->shm, hold->s[i].tname, hold->s[i].tpm / 60.0, -diff);
        else
            gw_shm_bucket_charge(w->env->shm, hold->s[i].tname, hold->s[i].tpm / 60.0, diff);
    }
}
