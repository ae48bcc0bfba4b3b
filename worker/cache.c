/*
 * cache.c - the response cache step of the pipeline.
 *
 * A model with cache: { ttl } answers a request it has answered before,
 * exactly, from state_dir/cache (shm/cache.c) without calling the
 * upstream.  "Exactly" is the SHA-256 of the canonical request: the
 * endpoint and the whole body, object keys sorted and numbers written one
 * way, so that equal requests are equal whatever their JSON looks like;
 * only stream, stream_options and user are left out, because they change
 * how the answer is delivered or who asked, not what it says.  The model
 * name is the client's (it is in the body, and it keys the entry).
 *
 * A hit is sent as it was stored, or replayed as a stream when the client
 * asks for one, with x-aigw-cache: hit; a miss stores the answer once it
 * went out whole (a 200, a stream that ended with [DONE]).  The client's
 * Cache-Control: no-cache skips the lookup but stores; no-store skips
 * both (x-aigw-cache: bypass).
 *
 * The store is the worker's own short LMDB write transaction, made right
 * before the answer's last byte goes to the client (gw_call.on_complete):
 * a client that has the answer finds it stored.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "worker/worker.h"

static const char *const endpoint_names[] = {
    [GW_EP_CHAT] = "chat/completions",
    [GW_EP_EMBEDDINGS] = "embeddings",
    /* text APIs */
    [GW_EP_COMPLETIONS] = "completions",
    [GW_EP_MODERATIONS] = "moderations",
    [GW_EP_RESPONSES] = "responses",
};

/* ------------------------------------------------------ canonical key */

/*
 * The canonical form is a tagged encoding fed to the hash: n null, t/f
 * booleans, d a number (integers, and doubles with an integral value
 * below 2^53, in decimal; other doubles with %.17g), s a string (its
 * length, then its bytes), a an array (its length, then its items), o an
 * object (its size, then key and value pairs by key).  Lengths make it
 * unambiguous without escaping.
 */
static void
put(EVP_MD_CTX *md, const void *p, size_t len)
{
    EVP_DigestUpdate(md, p, len);
}

static void
put_len(EVP_MD_CTX *md, char tag, size_t n)
{
    char b[24];
    int len = snprintf(b, sizeof(b), "%c%zu:", tag, n);

    put(md, b, (size_t)len);
}

static int
key_cmp(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void
canon(EVP_MD_CTX *md, struct json_object *o, bool top)
{
    char num[40];
    int len;

    switch (json_object_get_type(o)) {
    case json_type_null: put(md, "n", 1); break;
    case json_type_boolean: put(md, json_object_get_boolean(o) ? "t" : "f", 1); break;
    case json_type_int:
        len = snprintf(num, sizeof(num), "d%lld;", (long long)json_object_get_int64(o));
        put(md, num, (size_t)len);
        break;
    case json_type_double: {
        double d = json_object_get_double(o);
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            len = snprintf(num, sizeof(num), "d%lld;", (long long)d);
        else
            len = snprintf(num, sizeof(num), "d%.17g;", d);
        put(md, num, (size_t)len);
        break;
    }
    case json_type_string:
        put_len(md, 's', (size_t)json_object_get_string_len(o));
        put(md, json_object_get_string(o), (size_t)json_object_get_string_len(o));
        break;
    case json_type_array: {
        size_t n = gw_worker_json_len(o);
        put_len(md, 'a', n);
        for (size_t i = 0; i < n; i++)
            canon(md, gw_worker_json_at(o, i), false);
        break;
    }
    case json_type_object: {
        size_t n = (size_t)json_object_object_length(o), k = 0;
        const char *stack_keys[64];
        const char **keys = n <= 64 ? stack_keys : malloc(n * sizeof(*keys));
        if (keys == NULL)
            break;
        json_object_object_foreach(o, name, val)
        {
            (void)val;
            /* What changes the delivery or the caller, not the answer. */
            if (top && (strcmp(name, "stream") == 0 || strcmp(name, "stream_options") == 0 ||
                        strcmp(name, "user") == 0))
                continue;
            keys[k++] = name;
        }
        qsort(keys, k, sizeof(*keys), key_cmp);
        put_len(md, 'o', k);
        for (size_t i = 0; i < k; i++) {
            put_len(md, 's', strlen(keys[i]));
            put(md, keys[i], strlen(keys[i]));
            canon(md, json_object_object_get(o, keys[i]), false);
        }
        if (keys != stack_keys)
            free(keys);
        break;
    }
    }
}

void
gw_worker_cache_key(struct json_object *body, enum gw_endpoint ep,
                    unsigned char out[GW_CACHE_HASH_LEN])
{
    static EVP_MD_CTX *md;
    unsigned int len = GW_CACHE_HASH_LEN;

    if (md == NULL && (md = EVP_MD_CTX_new()) == NULL)
        gw_fatal("EVP_MD_CTX_new failed");
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    put(md, "aigw-cache-1\n", 13);
    const char *name = endpoint_names[ep] != NULL ? endpoint_names[ep] : "?";
    put_len(md, 'e', strlen(name));
    put(md, name, strlen(name));
    canon(md, body, true);
    EVP_DigestFinal_ex(md, out, &len);
}

bool
gw_worker_cache_deterministic(struct json_object *body)
{
    struct json_object *v;

    if (json_object_object_get_ex(body, "seed", &v) && !json_object_is_type(v, json_type_null))
        return true;
    return json_object_object_get_ex(body, "temperature", &v) &&
           (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double)) &&
           json_object_get_double(v) == 0.0;
}

/* ---------------------------------------------------------- the step */

/* The Cache-Control directives of the request that concern the cache. */
static void
cache_control(const struct gw_request *req, bool *no_cache, bool *no_store)
{
    const char *cc = gw_worker_http_header(req, "cache-control");

    *no_cache = *no_store = false;
    for (const char *p = cc; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        size_t n = strcspn(p, ", \t=");
        if (n == 8 && strncasecmp(p, "no-cache", 8) == 0)
            *no_cache = true;
        else if (n == 8 && strncasecmp(p, "no-store", 8) == 0)
            *no_store = true;
        p += n;
        while (*p != '\0' && *p != ',')
            p++;
    }
}

static struct gw_shm_stat *
model_stat(struct gw_worker *w, const struct gw_request *req)
{
    return req->model_stat >= 0 ? gw_shm_stat_at(w->env->shm, (size_t)req->model_stat) : NULL;
}

/* The worker's handle on the cache, opened at its first use. */
static struct gw_cache *
cache_get(struct gw_worker *w)
{
    static int64_t failed_at;
    char dir[4200];

    if (w->proc->cache != NULL)
        return w->proc->cache;
    if (failed_at != 0 && gw_now_ms() - failed_at < 10000)
        return NULL; /* logged; try again later, not on every request */
    snprintf(dir, sizeof(dir), "%s/cache", w->env->cfg->state_dir);
    if (gw_cache_open(dir, false, &w->proc->cache) != 0) {
        failed_at = gw_now_ms();
        w->proc->cache = NULL;
    }
    return w->proc->cache;
}

/* Answer from entry e: as stored, or replayed as a stream. */
static int
hit_answer(struct gw_worker *w, struct gw_request *req, struct gw_call *call,
           const struct gw_cache_entry *e)
{
    int rc;

    req->cache_hit = true;
    req->cache_headers = "x-aigw-cache: hit\r\n";
    call->first_byte_us = gw_now_us() - req->start_us;
    if (req->capture)
        gw_worker_answer_body(req->answer, e->body, e->body_len);
    if (!call->stream)
        return gw_worker_http_respond(&w->conn, req, 200,
                                      e->ctype && e->ctype[0] ? e->ctype : "application/json", NULL,
                                      e->body, e->body_len);
    struct gw_buf ev = {0};
    if (gw_worker_answer_replay(e->body, e->body_len, call->client_usage, &ev) != 0) {
        gw_buf_free(&ev);
        return GW_EINVAL;
    }
    rc = gw_worker_http_stream_begin(&w->conn, req, 200, "text/event-stream",
                                     "Cache-Control: no-cache\r\n");
    if (rc == 0)
        rc = gw_worker_http_stream_write(&w->conn, ev.data, ev.len);
    if (rc == 0)
        rc = gw_worker_http_stream_end(&w->conn);
    gw_buf_free(&ev);
    return rc != 0 ? GW_ECLOSED : 0;
}

bool
gw_worker_cache_lookup(struct gw_worker *w, struct gw_request *req, struct gw_call *call,
                       struct gw_cache_step *cs, int *rc)
{
    const struct gw_gen_model *m = call->model;
    struct gw_cache_entry e;
    struct gw_cache *c;
    bool no_cache, no_store;

    memset(cs, 0, sizeof(*cs));
    if (m->cache_ttl_ms <= 0 || strlen(req->model) > GW_CACHE_MODEL_MAX)
        return false;
    const struct gw_gen *g = w->gen;
    if (gw_gen_names_has(g, g->cache_bypass_keys, g->ncache_bypass_keys, req->key_id) ||
        gw_gen_names_has(g, g->cache_bypass_tenants, g->ncache_bypass_tenants, req->tenant)) {
        req->cache_headers = "x-aigw-cache: bypass\r\n";
        return false;
    }
    /* Only chat streams are put back together and replayed (answer.c). */
    if (call->stream && call->endpoint != GW_EP_CHAT)
        return false;
    if (m->cache_deterministic && !gw_worker_cache_deterministic(gw_worker_call_json(call)))
        return false;
    cache_control(req, &no_cache, &no_store);
    if (no_store) {
        req->cache_headers = "x-aigw-cache: bypass\r\n";
        return false;
    }
    if ((c = cache_get(w)) == NULL)
        return false;
    cs->applies = true;
    cs->store = true;
    gw_worker_cache_key(gw_worker_call_json(call), call->endpoint, cs->hash);
    if (req->answer == NULL)
        req->answer = gw_worker_answer_create(req->arena);
    call->answer = req->answer;
    if (no_cache) {
        req->cache_headers = "x-aigw-cache: bypass\r\n";
        return false;
    }
    struct gw_shm_stat *st = model_stat(w, req);
    if (gw_cache_get(c, req->model, cs->hash, gw_wall_us(), req->arena, &e) == 0) {
        int r = hit_answer(w, req, call, &e);
        if (r != GW_EINVAL) {
            if (st != NULL)
                atomic_fetch_add(&st->cache_hits, 1);
            *rc = r;
            return true;
        }
        /* An entry that cannot be replayed: call the upstream, store anew. */
        req->cache_hit = false;
    }
    if (st != NULL)
        atomic_fetch_add(&st->cache_misses, 1);
    req->cache_headers = "x-aigw-cache: miss\r\n";
    return false;
}

/* Entries removed to make room are counted on their model. */
static void
evicted(void *ctx, const char *model, bool expired)
{
    struct gw_worker *w = ctx;
    char name[GW_SHM_NAME_LEN];

    snprintf(name, sizeof(name), "m:%s", model);
    long i = gw_shm_stat_find(w->env->shm, name, false);
    if (i >= 0)
        atomic_fetch_add(expired ? &gw_shm_stat_at(w->env->shm, (size_t)i)->cache_expired
                                 : &gw_shm_stat_at(w->env->shm, (size_t)i)->cache_evictions,
                         1);
}

void
gw_worker_cache_store(struct gw_worker *w, struct gw_request *req, const struct gw_call *call,
                      const struct gw_cache_step *cs, int rc)
{
    struct gw_cache_entry e = {0};
    bool complete;
    size_t len;

    if (!cs->store || req->cache_hit || rc != 0 || call->status != 200 || w->proc->cache == NULL)
        return;
    const char *text = gw_worker_answer_text(req->answer, call->have_usage, call->prompt_tokens,
                                             call->completion_tokens, &len, &complete);
    if (text == NULL || !complete)
        return;
    e.created_us = gw_wall_us();
    e.expires_us = e.created_us + (int64_t)call->model->cache_ttl_ms * 1000;
    e.prompt_tokens = call->prompt_tokens;
    e.completion_tokens = call->completion_tokens;
    e.ctype = "application/json";
    e.body = text;
    e.body_len = len;
    if (gw_cache_put(w->proc->cache, req->model, cs->hash, &e, w->gen->cache_max_size, evicted,
                     w) == 0) {
        struct gw_shm_stat *st = model_stat(w, req);
        if (st != NULL)
            atomic_fetch_add(&st->cache_stores, 1);
    }
}
