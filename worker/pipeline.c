/*
 * pipeline.c - what a worker does with one parsed request:
 *
 *   route -> authenticate -> parse body -> find model -> authorize ->
 *   rate limits -> input safety -> cache lookup -> choose target ->
 *   provider adapter + upstream call -> settle the token estimate ->
 *   cache store -> account (and capture)
 *
 * Each step is a function that either passes the request on or answers it
 * with an error in OpenAI's shape.  Limits, safety, caching and routing
 * strategies join this chain in their own steps as they are built.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "worker/messages.h"
#include "worker/safety.h"

/* A full usage ring: how long a worker waits for room while the master
 * releases none, before it writes the record through to LMDB itself; and,
 * once the master has stalled that long, how long each record waits until
 * the master moves again. */
#define USAGE_RING_STALL_MS 2000
#define USAGE_RING_STALLED_WAIT_MS 50

struct route {
    const char *path;
    bool prefix; /* path is a prefix ("/v1/models/" + id) */
    llhttp_method_t method;
    bool auth;
    int (*handle)(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                  const struct route *rt);
    enum gw_endpoint endpoint;
    enum gw_passthru_kind passthru; /* for handle_passthru */
};

/* A route's method when its handler checks the method itself. */
#define ROUTE_ANY_METHOD ((llhttp_method_t)0xff)

static int handle_health(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                         const struct route *rt);
static int handle_models(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                         const struct route *rt);
static int handle_model(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                        const struct route *rt);
static int handle_proxy(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                        const struct route *rt);

static int handle_passthru(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                           const struct route *rt);
static int handle_upload(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                         const struct route *rt);
static int handle_video_get(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                            const struct route *rt);
static int handle_messages(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                           const struct route *rt);
static int handle_count_tokens(struct gw_worker *w, struct gw_request *req,
                               const struct gw_key *key, const struct route *rt);

static int handle_metrics(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                          const struct route *rt);

/* The metrics listener answers these and nothing else. */
static const struct route metrics_routes[] = {
    {"/metrics", false, HTTP_GET, false, handle_metrics, 0, 0},
    {"/healthz", false, HTTP_GET, false, handle_health, 0, 0},
};

static int
handle_admin(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
             const struct route *rt)
{
    (void)rt;
    return gw_worker_admin_serve(w, req, key);
}

/* An admin.listen socket answers these and nothing else (worker/admin.c);
 * /admin/v1 on a client listener is an unknown URL. */
static const struct route admin_routes[] = {
    {"/healthz", false, HTTP_GET, false, handle_health, 0, 0},
    {"/admin/v1/", true, ROUTE_ANY_METHOD, true, handle_admin, 0, 0},
};

static const struct route routes[] = {
    {"/healthz", false, HTTP_GET, false, handle_health, 0, 0},
    {"/v1/models", false, HTTP_GET, true, handle_models, 0, 0},
    {"/v1/models/", true, HTTP_GET, true, handle_model, 0, 0},
    {"/v1/chat/completions", false, HTTP_POST, true, handle_proxy, GW_EP_CHAT, 0},
    {"/v1/embeddings", false, HTTP_POST, true, handle_proxy, GW_EP_EMBEDDINGS, 0},
    /* Media (worker/media.c). */
    {"/v1/images/generations", false, HTTP_POST, true, handle_proxy, GW_EP_IMAGES, 0},
    {"/v1/audio/speech", false, HTTP_POST, true, handle_proxy, GW_EP_SPEECH, 0},
    {"/v1/audio/transcriptions", false, HTTP_POST, true, handle_upload, GW_EP_TRANSCRIPTIONS, 0},
    {"/v1/audio/translations", false, HTTP_POST, true, handle_upload, GW_EP_TRANSLATIONS, 0},
    {"/v1/videos", false, HTTP_POST, true, handle_upload, GW_EP_VIDEOS, 0},
    {"/v1/videos/", true, HTTP_GET, true, handle_video_get, GW_EP_VIDEO_GET, 0},
    /* text APIs */
    {"/v1/completions", false, HTTP_POST, true, handle_proxy, GW_EP_COMPLETIONS, 0},
    {"/v1/moderations", false, HTTP_POST, true, handle_proxy, GW_EP_MODERATIONS, 0},
    {"/v1/responses", false, HTTP_POST, true, handle_proxy, GW_EP_RESPONSES, 0},
    {"/v1/messages", false, HTTP_POST, true, handle_messages, GW_EP_CHAT, 0},
    {"/v1/messages/count_tokens", false, HTTP_POST, true, handle_count_tokens, GW_EP_CHAT, 0},
    {"/v1/mcp/", true, ROUTE_ANY_METHOD, true, handle_passthru, 0, GW_PASSTHRU_MCP},
    {"/v1/agent/", true, ROUTE_ANY_METHOD, true, handle_passthru, 0, GW_PASSTHRU_AGENT},
    {"/v1/sandboxes/", true, ROUTE_ANY_METHOD, true, handle_passthru, 0, GW_PASSTHRU_SANDBOX},
};

#define NROUTES (sizeof(routes) / sizeof(routes[0]))

static bool
route_path_matches(const struct route *rt, const char *path)
{
    if (rt->prefix)
        return strncmp(path, rt->path, strlen(rt->path)) == 0 && path[strlen(rt->path)] != '\0';
    return strcmp(path, rt->path) == 0;
}

static struct gw_shm_stat *
stat_get(struct gw_worker *w, int32_t i)
{
    return i >= 0 ? gw_shm_stat_at(w->env->shm, (size_t)i) : NULL;
}

/* The methods a path answers, for the Allow header of a 405. */
static const char *
allowed_methods(const char *path)
{
    for (size_t i = 0; i < NROUTES; i++)
        if (route_path_matches(&routes[i], path))
            return routes[i].method == HTTP_GET ? "GET, HEAD"
                                                : gw_worker_http_method_name(routes[i].method);
    return NULL;
}

/* ---------------------------------------------------------------- auth */

/*
 * Keys as the worker last read them from LMDB, by their hash.  Any change
 * to any key (create, disable, enable, delete) bumps keys_generation in
 * shm, which empties every worker's cache at its next lookup, so a
 * disabled key is refused at once, as with no cache.  Only keys that
 * exist are cached: a stream of wrong keys cannot fill it.
 */
#define KEY_CACHE_SLOTS 256

struct key_cache_entry {
    uint64_t generation;
    unsigned char hash[GW_KEY_HASH_LEN];
    struct gw_arena *arena; /* holds key */
    struct gw_key *key;     /* NULL: empty */
};

static struct key_cache_entry key_cache[KEY_CACHE_SLOTS];

static char **
strv_copy(struct gw_arena *a, char *const *v, size_t n)
{
    char **out = gw_arena_alloc(a, (n ? n : 1) * sizeof(*out));

    for (size_t i = 0; i < n; i++)
        out[i] = v[i] != NULL ? gw_arena_strdup(a, v[i]) : NULL;
    return out;
}

#define STR_COPY(a, s) ((s) != NULL ? gw_arena_strdup((a), (s)) : NULL)

/* The request's own copy of a cached key: the cache slot may be refilled
 * by another connection of this worker while the request runs. */
static struct gw_key *
key_copy(struct gw_arena *a, const struct gw_key *k)
{
    struct gw_key *c = gw_arena_alloc(a, sizeof(*c));

    *c = *k;
    c->id = STR_COPY(a, k->id);
    c->name = STR_COPY(a, k->name);
    c->prefix = STR_COPY(a, k->prefix);
    c->route = STR_COPY(a, k->route);
    c->owner = STR_COPY(a, k->owner);
    c->tenant = STR_COPY(a, k->tenant);
    c->models = strv_copy(a, k->models, k->nmodels);
    c->owner_models = strv_copy(a, k->owner_models, k->nowner_models);
    return c;
}

static int
key_cache_lookup(struct gw_worker *w, struct gw_arena *a, const unsigned char hash[GW_KEY_HASH_LEN],
                 struct gw_key **out)
{
    uint64_t gen = atomic_load(&w->env->shm->hdr->keys_generation);
    struct key_cache_entry *e = &key_cache[(hash[0] | hash[1] << 8) % KEY_CACHE_SLOTS];

    if (e->key != NULL && e->generation == gen && memcmp(e->hash, hash, GW_KEY_HASH_LEN) == 0) {
        *out = key_copy(a, e->key);
        return 0;
    }
    if (e->arena == NULL)
        e->arena = gw_arena_create(1024);
    gw_arena_reset(e->arena);
    e->key = NULL;
    int rc = gw_store_key_lookup(w->store, hash, e->arena, out);
    if (rc == 0) {
        memcpy(e->hash, hash, GW_KEY_HASH_LEN);
        e->generation = gen;
        e->key = *out;
        *out = key_copy(a, e->key);
    }
    return rc;
}

/* The keyed hash of the API key presented, remembered for the next
 * request on the connection. */
static void
key_hash(struct gw_worker *w, const char *secret, unsigned char hash[GW_KEY_HASH_LEN])
{
    size_t len = strlen(secret);

    if (len > 0 && len == w->auth_memo.len && memcmp(secret, w->auth_memo.key, len) == 0) {
        memcpy(hash, w->auth_memo.hash, GW_KEY_HASH_LEN);
        return;
    }
    gw_key_hash(w->env->secret, secret, len, hash);
    if (len > sizeof(w->auth_memo.key))
        return;
    memcpy(w->auth_memo.key, secret, len);
    memcpy(w->auth_memo.hash, hash, GW_KEY_HASH_LEN);
    w->auth_memo.len = len;
}

/*
 * The master cannot store usage records (a full disk, say) and the ring
 * that keeps them meanwhile is three quarters full: a request served now
 * might find no room for its record, so it is refused, and the last
 * quarter stays for the requests in flight.  The refusal makes no usage
 * record of its own (it would take that room); /metrics counts it.
 */
static bool
usage_store_down(struct gw_worker *w, struct gw_request *req)
{
    const struct gw_shm_header *h = w->env->shm->hdr;
    int err = atomic_load_explicit(&h->store_error, memory_order_relaxed);

    if (err == 0 ||
        atomic_load(&h->ring_tail) - atomic_load(&h->ring_head) < h->nring - h->nring / 4)
        return false;
    req->extra_headers = "Retry-After: 5\r\n";
    gw_worker_http_error(&w->conn, req, 503, "server_error", "usage_store_unavailable", NULL,
                         "The gateway cannot record usage now (%s); it serves again once "
                         "its state store takes records.",
                         gw_strerror(err));
    return true;
}

/*
 * Find the key presented as "Authorization: Bearer KEY" (or, where
 * x_api_key, as Anthropic's SDKs send it: "x-api-key: KEY").  Answers 401
 * and returns NULL when it is missing, unknown or disabled, and 503 when
 * the request's usage could not be recorded (usage_store_down).
 */
static const struct gw_key *
authenticate(struct gw_worker *w, struct gw_request *req, bool x_api_key)
{
    const char *auth = gw_worker_http_header(req, "authorization");
    const char *xkey = x_api_key ? gw_worker_http_header(req, "x-api-key") : NULL;
    unsigned char hash[GW_KEY_HASH_LEN];
    struct gw_key *key = NULL;
    const char *secret;

    if (auth != NULL && strncasecmp(auth, "Bearer ", 7) == 0) {
        secret = auth + 7;
    } else if (xkey != NULL && xkey[0] != '\0') {
        secret = xkey;
    } else {
        gw_worker_http_error(&w->conn, req, 401, "invalid_request_error", "missing_api_key", NULL,
                             "You didn't provide an API key. Send it in the Authorization "
                             "header as \"Authorization: Bearer YOUR_KEY\"%s.",
                             x_api_key ? " or as \"x-api-key: YOUR_KEY\"" : "");
        return NULL;
    }
    while (*secret == ' ')
        secret++;
    key_hash(w, secret, hash);
    int rc = key_cache_lookup(w, req->arena, hash, &key);
    if (rc == GW_ENOENT) {
        gw_worker_http_error(&w->conn, req, 401, "invalid_request_error", "invalid_api_key", NULL,
                             "Incorrect API key provided.");
        return NULL;
    }
    if (rc != 0) {
        gw_worker_http_error(&w->conn, req, 500, "server_error", "internal_error", NULL,
                             "The gateway could not check the API key (request %s).", req->id);
        return NULL;
    }
    if (key->disabled) {
        gw_worker_http_error(&w->conn, req, 401, "invalid_request_error", "api_key_disabled", NULL,
                             "This API key (%s) is disabled.", key->id);
        return NULL;
    }
    if (key->expires > 0 && time(NULL) >= key->expires) {
        time_t t = (time_t)key->expires;
        struct tm tm;
        char when[32];
        gmtime_r(&t, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        gw_worker_http_error(&w->conn, req, 401, "invalid_request_error", "api_key_expired", NULL,
                             "This API key (%s) expired at %s.", key->id, when);
        return NULL;
    }
    if (!w->on_admin && usage_store_down(w, req))
        return NULL;
    req->key_id = key->id;
    req->tenant = key->tenant != NULL && key->tenant[0] != '\0' ? key->tenant : NULL;
    req->user = key->owner != NULL && key->owner[0] != '\0' ? key->owner : NULL;
    return key;
}

/* ------------------------------------------------------------ handlers */

static int
handle_health(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
              const struct route *rt)
{
    static const char ok[] = "{\"status\":\"ok\"}";

    (void)key, (void)rt;
    return gw_worker_http_respond(&w->conn, req, 200, "application/json", NULL, ok, sizeof(ok) - 1);
}

static int
handle_metrics(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
               const struct route *rt)
{
    (void)key, (void)rt;
    if (gw_worker_metrics_render(w->env->shm, &w->scratch) != 0)
        return gw_worker_http_error(&w->conn, req, 500, "server_error", "internal_error", NULL,
                                    "Out of memory.");
    return gw_worker_http_respond(&w->conn, req, 200, "text/plain; version=0.0.4; charset=utf-8",
                                  NULL, w->scratch.data, w->scratch.len);
}

static int
respond_json(struct gw_worker *w, struct gw_request *req, struct json_object *o)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    int rc = gw_worker_http_respond(&w->conn, req, 200, "application/json", NULL, s, len);

    json_object_put(o);
    return rc;
}

static int
handle_models(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
              const struct route *rt)
{
    const struct gw_gen *g = w->gen;
    struct json_object *list = json_object_new_object(), *data = json_object_new_array();

    (void)rt;
    for (uint32_t i = 0; i < g->nmodels; i++) {
        const struct gw_gen_model *m = gw_gen_model_at(g, i);
        if (gw_key_allows(key, gw_gen_str(g, m->name)))
            json_object_array_add(data, gw_shm_catalogue_model(w->env->shm, g, m));
    }
    json_object_object_add(list, "object", json_object_new_string("list"));
    json_object_object_add(list, "data", data);
    return respond_json(w, req, list);
}

static int
model_not_found(struct gw_worker *w, struct gw_request *req, const char *name)
{
    return gw_worker_http_error(
        &w->conn, req, 404, "invalid_request_error", "model_not_found", "model",
        "The model `%s` does not exist or you do not have access to it.", name);
}

static int
hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Decode %XX in place (a malformed escape is left as it is). */
static void
percent_decode(char *s)
{
    char *out = s;

    for (; *s; s++) {
        int hi, lo;
        if (*s == '%' && (hi = hex_value(s[1])) >= 0 && (lo = hex_value(s[2])) >= 0 &&
            (hi | lo) != 0) {
            *out++ = (char)(hi * 16 + lo);
            s += 2;
        } else {
            *out++ = *s;
        }
    }
    *out = '\0';
}

static int
handle_model(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
             const struct route *rt)
{
    /* Model names may hold '/', which SDKs send percent-encoded. */
    char *name = gw_arena_strdup(req->arena, req->path + strlen(rt->path));
    percent_decode(name);
    const struct gw_gen_model *m = gw_gen_model_find(w->gen, name);

    /* A model the key may not use is as invisible as one that is absent. */
    if (m == NULL || !gw_key_allows(key, name))
        return model_not_found(w, req, name);
    return respond_json(w, req, gw_shm_catalogue_model(w->env->shm, w->gen, m));
}

/* Parse the body as a JSON object; answers 400 and returns NULL if not.
 * The tokener is the worker's, reset for each body: making one allocates
 * its parse stack. */
static struct json_object *
body_parse(struct gw_worker *w, struct gw_request *req)
{
    static struct json_tokener *tok;
    struct json_object *o = NULL;

    if (tok == NULL)
        tok = json_tokener_new_ex(64);
    else
        json_tokener_reset(tok);
    if (tok == NULL) {
        gw_worker_http_error(&w->conn, req, 500, "server_error", "internal_error", NULL,
                             "Out of memory.");
        return NULL;
    }
    if (req->body_len > 0)
        o = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
    enum json_tokener_error e = json_tokener_get_error(tok);
    /* Anything after the object but whitespace is malformed too. */
    size_t end = json_tokener_get_parse_end(tok);
    while (o != NULL && end < req->body_len && strchr(" \t\r\n", req->body[end]) != NULL &&
           req->body[end] != '\0')
        end++;
    if (o == NULL || e != json_tokener_success || end != req->body_len) {
        gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "invalid_json", NULL,
                             "We could not parse the JSON body of your request (%s). The body "
                             "must be a JSON object.",
                             req->body_len == 0           ? "the body is empty"
                             : e == json_tokener_continue ? "the body ends inside the JSON value"
                             : e != json_tokener_success  ? json_tokener_error_desc(e)
                                                          : "unexpected data after the object");
        json_object_put(o);
        o = NULL;
    } else if (!json_object_is_type(o, json_type_object)) {
        gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "invalid_json", NULL,
                             "The request body must be a JSON object.");
        json_object_put(o);
        o = NULL;
    }
    return o;
}

/* The text APIs' own fields: completions' prompt, responses' input. */
static int
body_check_text(struct gw_worker *w, struct gw_request *req, struct json_object *o,
                enum gw_endpoint ep)
{
    struct json_object *v;
    bool has = false;

    if (ep == GW_EP_COMPLETIONS) {
        has = json_object_object_get_ex(o, "prompt", &v);
        if (!has ||
            (!json_object_is_type(v, json_type_string) && !json_object_is_type(v, json_type_array)))
            return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                        has ? "invalid_type" : "missing_required_parameter",
                                        "prompt",
                                        "You must provide a prompt parameter (a string or an "
                                        "array).")
                       ?: -1;
    }
    if (ep == GW_EP_MODERATIONS && json_object_object_get_ex(o, "input", &v) &&
        !json_object_is_type(v, json_type_string) && !json_object_is_type(v, json_type_array))
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "invalid_type",
                                    "input", "input must be a string or an array.")
                   ?: -1;
    if (ep == GW_EP_RESPONSES && json_object_object_get_ex(o, "input", &v) &&
        !json_object_is_type(v, json_type_string) && !json_object_is_type(v, json_type_array))
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "invalid_type",
                                    "input", "input must be a string or an array of items.")
                   ?: -1;
    return 0;
}

/* Required fields per endpoint, checked before anything goes upstream. */
static int
body_check(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
           struct json_object *o, enum gw_endpoint ep, const char **model)
{
    struct json_object *v;
    int rc;

    /* OpenAI's moderations default their model: aigw's is the first
     * moderations model of the configuration that the key may use. */
    if (ep == GW_EP_MODERATIONS && !json_object_object_get_ex(o, "model", &v)) {
        *model = NULL;
        for (uint32_t i = 0; i < w->gen->nmodels && *model == NULL; i++) {
            const struct gw_gen_model *m = gw_gen_model_at(w->gen, i);
            if (m->type == GW_MODEL_MODERATIONS && gw_key_allows(key, gw_gen_str(w->gen, m->name)))
                *model = gw_gen_str(w->gen, m->name);
        }
        if (*model == NULL)
            return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                        "missing_required_parameter", "model",
                                        "No moderations model is configured for this key: name "
                                        "one with the model parameter.")
                       ?: -1;
    } else if (!json_object_object_get_ex(o, "model", &v) ||
               !json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0) {
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                    "missing_required_parameter", "model",
                                    "You must provide a model parameter (a string).")
                   ?: -1;
    } else {
        *model = json_object_get_string(v);
    }
    if (ep == GW_EP_CHAT &&
        (!json_object_object_get_ex(o, "messages", &v) || !json_object_is_type(v, json_type_array)))
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                    "missing_required_parameter", "messages",
                                    "You must provide a messages parameter (an array).")
                   ?: -1;
    if ((ep == GW_EP_EMBEDDINGS || ep == GW_EP_MODERATIONS) &&
        !json_object_object_get_ex(o, "input", &v))
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                    "missing_required_parameter", "input",
                                    "You must provide an input parameter.")
                   ?: -1;
    if ((rc = body_check_text(w, req, o, ep)) != 0)
        return rc;
    if (json_object_object_get_ex(o, "stream", &v) && !json_object_is_type(v, json_type_boolean) &&
        !json_object_is_type(v, json_type_null))
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "invalid_type",
                                    "stream", "stream must be a boolean.")
                   ?: -1;
    return 0;
}

/* Is the member's value exactly this literal? */
static bool
member_is(const struct gw_body_member *m, const char *literal)
{
    return m->v != NULL && m->len == strlen(literal) && memcmp(m->v, literal, m->len) == 0;
}

/* stream_options.include_usage, read by bytes: scan_is_plain let through
 * only an object whose include_usage, if any, is a literal. */
static bool
include_usage_of(const struct gw_body_scan *bs)
{
    const char *p = bs->stream_options.v, *end = p + bs->stream_options.len;
    const char *k = memmem(p, (size_t)(end - p), "\"include_usage\"", 15);

    if (k == NULL)
        return false;
    k += 15;
    while (k < end && (*k == ' ' || *k == '\t' || *k == '\r' || *k == '\n' || *k == ':'))
        k++;
    return (size_t)(end - k) >= 4 && memcmp(k, "true", 4) == 0;
}

/*
 * Can the request go on with what the scan found, as it would with the
 * tree?  A model or user string with escapes, a stream that is no
 * literal, stream_options of another shape than a flat object: no, those
 * are read from the tree (rare, and the tree reads them as ever).
 */
static bool
scan_is_plain(const struct gw_body_scan *bs)
{
    if (bs->model.v != NULL && bs->model.v[0] == '"' && bs->model.escaped)
        return false;
    if (bs->user.v != NULL && (bs->user.v[0] != '"' || bs->user.escaped))
        return false;
    if (bs->stream.v != NULL && !member_is(&bs->stream, "true") &&
        !member_is(&bs->stream, "false") && !member_is(&bs->stream, "null"))
        return false;
    if (bs->stream_options.v != NULL) {
        const struct gw_body_member *so = &bs->stream_options;
        /* Flat (no nested value), one include_usage at most, and that
         * one a literal true or false. */
        if (so->v[0] != '{' || memchr(so->v + 1, '{', so->len - 1) != NULL ||
            memchr(so->v, '[', so->len) != NULL || memchr(so->v, '\\', so->len) != NULL)
            return false;
        const char *k = memmem(so->v, so->len, "\"include_usage\"", 15);
        if (k != NULL) {
            if (memmem(k + 15, so->len - (size_t)(k + 15 - so->v), "\"include_usage\"", 15))
                return false;
            k += 15;
            const char *end = so->v + so->len;
            while (k < end && (*k == ' ' || *k == '\t' || *k == '\r' || *k == '\n' || *k == ':'))
                k++;
            if (!((size_t)(end - k) >= 4 && memcmp(k, "true", 4) == 0) &&
                !((size_t)(end - k) >= 5 && memcmp(k, "false", 5) == 0))
                return false;
        }
    }
    return true;
}

/* body_check on the scan: the same answers, from the bytes. */
static int
body_check_scanned(struct gw_worker *w, struct gw_request *req, const struct gw_body_scan *bs,
                   enum gw_endpoint ep, const char **model)
{
    const struct gw_body_member *m = &bs->model;

    if (m->v == NULL || m->v[0] != '"' || m->len <= 2)
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                    "missing_required_parameter", "model",
                                    "You must provide a model parameter (a string).")
                   ?: -1;
    *model = gw_arena_strndup(req->arena, m->v + 1, m->len - 2);
    if (ep == GW_EP_CHAT && (bs->messages.v == NULL || bs->messages.v[0] != '['))
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                    "missing_required_parameter", "messages",
                                    "You must provide a messages parameter (an array).")
                   ?: -1;
    if (ep == GW_EP_EMBEDDINGS && bs->input.v == NULL)
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                    "missing_required_parameter", "input",
                                    "You must provide an input parameter.")
                   ?: -1;
    /* scan_is_plain: stream, when present, is true, false or null. */
    return 0;
}

/* The effective timeouts of one attempt: the provider's where it sets
 * them, else the model's, and never past the request's deadline. */
static struct gw_timeouts
attempt_timeouts(const struct gw_gen_model *m, const struct gw_gen_provider *p, int64_t deadline)
{
    struct gw_timeouts t = m->timeouts;

    if (p->timeouts.connect_ms > 0)
        t.connect_ms = p->timeouts.connect_ms;
    if (p->timeouts.first_byte_ms > 0)
        t.first_byte_ms = p->timeouts.first_byte_ms;
    if (p->timeouts.idle_ms > 0)
        t.idle_ms = p->timeouts.idle_ms;
    if (p->timeouts.total_ms > 0)
        t.total_ms = p->timeouts.total_ms;
    if (deadline > 0) {
        long left = (long)(deadline - gw_now_ms());
        if (left < 1)
            left = 1;
        if (t.total_ms > left)
            t.total_ms = left;
        if (t.connect_ms > left)
            t.connect_ms = left;
    }
    return t;
}

/* The routing strategy for this request: the key's binding, or the
 * x-aigw-route header where the key may choose, else the model's. */
static enum gw_route_strategy
strategy_for(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
             const struct gw_gen_model *m)
{
    const char *want = NULL;

    (void)w;
    if (key->route != NULL && key->route[0] != '\0')
        want = key->route;
    else if (key->route_header)
        want = gw_worker_http_header(req, "x-aigw-route");
    for (int i = 0; want != NULL && i < GW_ROUTE_NSTRATEGIES; i++)
        if (strcmp(want, gw_route_strategy_names[i]) == 0)
            return (enum gw_route_strategy)i;
    return (enum gw_route_strategy)m->strategy;
}

/* Fill call with the target's provider for one attempt. */
static void
call_target(struct gw_call *call, const struct gw_gen *g, const struct gw_gen_model *m, uint32_t i,
            int64_t deadline)
{
    const struct gw_gen_target *t = gw_gen_target(g, m->first_target + i);
    const struct gw_gen_provider *p = gw_gen_provider(g, t->provider);

    call->model = m;
    call->target = t;
    call->type = (enum gw_provider_type)p->type;
    call->provider_name = gw_gen_str(g, p->name);
    call->base_url = gw_gen_str(g, p->base_url);
    call->api_key = gw_gen_str(g, p->api_key);
    call->target_model = gw_gen_str(g, t->model);
    call->gen = g;
    call->provider = p;
    call->timeouts = attempt_timeouts(m, p, deadline);
    memset(&call->fail, 0, sizeof(call->fail));
}

/*
 * Try the model's targets, then its fallbacks, until one answers.  A
 * failure that reached the client (a stream already begun) is final; one
 * that did not (unreachable, timeout, 5xx, 429) moves on to the next
 * eligible target, up to the model's retries and within its deadline.
 */
static int
attempts_run(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
             struct gw_call *call, const struct gw_gen_model *first)
{
    const struct gw_gen *g = w->gen;
    const struct gw_gen_model *chain[16];
    size_t nchain = 0;
    int64_t deadline = first->deadline_ms > 0 ? gw_now_ms() + first->deadline_ms : 0;
    const char *session = NULL;
    int attempts = 0, rc = GW_EUPSTREAM;
    bool any_target = false;

    /* The model, then its fallbacks (and theirs), each once; a pinned
     * target is the only one. */
    chain[nchain++] = first;
    for (size_t c = 0; c < nchain && nchain < 16 && call->pin_target == 0; c++) {
        const uint32_t *fb = (const uint32_t *)((const char *)g + chain[c]->fallbacks);
        for (uint32_t f = 0; f < chain[c]->nfallbacks && nchain < 16; f++) {
            const struct gw_gen_model *next = gw_gen_model_at(g, fb[f]);
            bool seen = false;
            for (size_t k = 0; k < nchain; k++)
                seen |= chain[k] == next;
            if (!seen)
                chain[nchain++] = next;
        }
    }
    const char *session_header = gw_gen_str(g, first->session_header);
    if (session_header != NULL)
        session = gw_worker_http_header(req, session_header);
    if (session == NULL)
        session = call->user;

    for (size_t c = 0; c < nchain && rc == GW_EUPSTREAM; c++) {
        const struct gw_gen_model *m = chain[c];
        enum gw_route_strategy strategy = strategy_for(w, req, key, m);
        uint64_t tried[4] = {0};

        for (uint32_t a = 0; a <= m->retries && rc == GW_EUPSTREAM; a++) {
            bool probe = false;
            if (deadline > 0 && gw_now_ms() >= deadline)
                break;
            int i = call->pin_target == 0
                        ? gw_worker_route_pick(w, g, m, strategy, session, tried, &probe)
                    : a == 0 ? call->pin_target - 1
                             : -1;
            if (i < 0)
                break;
            gw_worker_route_tried_add(tried, (uint32_t)i);
            any_target = true;
            attempts++;
            call_target(call, g, m, (uint32_t)i, deadline);
            gw_worker_byok_apply(w, call, gw_gen_provider(g, call->target->provider));
            req->target = gw_arena_cat(req->arena, call->provider_name, "/", call->target_model);
            req->target_stat = call->target->stat;
            char n[GW_U64_TEXT_MAX];
            gw_u64_text((uint64_t)attempts, n);
            req->extra_headers = gw_arena_cat(req->arena, "x-aigw-target: ", req->target,
                                              "\r\nx-aigw-attempts: ", n, "\r\n");

            struct gw_shm_stat *ts = stat_get(w, req->target_stat);
            int64_t t0 = gw_now_us();
            /* Noted in the scoreboard, so that the master can give the
             * in-flight count back if this worker dies during the call. */
            if (ts != NULL) {
                gw_worker_calling(w, req->target_stat, 1);
                atomic_fetch_add(&ts->in_flight, 1);
            }
            rc = gw_worker_upstream_call(&w->xfer, w->curl, call, g->max_response_size);
            if (ts != NULL) {
                atomic_fetch_sub(&ts->in_flight, 1);
                gw_worker_calling(w, req->target_stat, -1);
            }
            bool failed = rc == GW_EUPSTREAM || (rc == 0 && call->status >= 500);
            int64_t took_us = gw_now_us() - t0;
            gw_worker_route_result(w, g, m, call->target, !failed, probe, call, took_us);
            if (rc == GW_EUPSTREAM) {
                if (ts != NULL)
                    gw_shm_stat_account(ts, call->fail.status, 0, 0, took_us / 1000, -1);
                gw_log(GW_LOG_INFO, "req=%s attempt %d on %s failed: %s", req->id, attempts,
                       req->target, call->fail.message);
            }
        }
    }
    if (rc != GW_EUPSTREAM)
        return rc;
    if (!any_target) {
        call->fail.status = 503;
        call->fail.code = "no_healthy_target";
        call->fail.body = NULL;
        snprintf(call->fail.message, sizeof(call->fail.message),
                 "No target of the model `%s` is available (all down, open or held back).",
                 gw_gen_str(g, first->name));
        req->extra_headers =
            gw_arena_printf(req->arena, "x-aigw-attempts: %d\r\nRetry-After: 1\r\n", attempts);
    }
    call->status = call->fail.status;
    /* Every failed attempt was counted on its target already. */
    req->target_stat = -1;
    return gw_worker_upstream_fail_answer(call);
}

/* A whole answer, before its last byte goes out (gw_call.on_complete):
 * its tokens counted into the quotas and the answer stored in the cache,
 * so that a client that has the answer finds both done. */
struct answer_done {
    struct gw_worker *w;
    struct gw_request *req;
    const struct gw_cache_step *cs;
    struct gw_quota_hold *qhold;
};

static void
answer_complete(struct gw_call *call, void *ctx)
{
    struct answer_done *d = ctx;

    gw_worker_quota_count(d->qhold, call->prompt_tokens + call->completion_tokens);
    gw_worker_cache_store(d->w, d->req, call, d->cs, 0);
}

int
gw_worker_pipeline_attempts(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                            struct gw_call *call, const struct gw_gen_model *first)
{
    return attempts_run(w, req, key, call, first);
}

static int
handle_proxy(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
             const struct route *rt)
{
    return gw_worker_pipeline_proxy(w, req, key, rt->endpoint);
}

int
gw_worker_pipeline_proxy(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                         enum gw_endpoint ep)
{
    const struct gw_gen *g = w->gen;
    struct gw_call call = {.req = req, .conn = &w->conn, .endpoint = ep};
    const char *name = NULL;
    struct json_object *v, *so;
    struct gw_limit_hold hold;
    struct gw_quota_hold qhold;
    bool refused = false;
    int rc;

    /* A chat or embeddings body checked by bytes, else parsed (another
     * endpoint, an unusual shape, or not valid: json-c then words the
     * error). */
    struct gw_body_scan bs = {0};
    if ((ep == GW_EP_CHAT || ep == GW_EP_EMBEDDINGS) &&
        gw_worker_body_scan(req->body, req->body_len, &bs) == 0 && scan_is_plain(&bs)) {
        call.scan = &bs;
        rc = body_check_scanned(w, req, &bs, ep, &name);
    } else {
        if ((call.json = body_parse(w, req)) == NULL)
            return 0;
        rc = body_check(w, req, key, call.json, ep, &name);
    }
    if (rc != 0) {
        /* Answered: keep the connection unless the answer failed. */
        rc = rc == -1 ? 0 : rc;
        goto out;
    }
    req->model = gw_arena_strdup(req->arena, name);
    call.model = gw_gen_model_find(g, name);
    if (call.model == NULL) {
        rc = model_not_found(w, req, req->model);
        goto out;
    }
    if (!gw_key_allows(key, name)) {
        rc = gw_worker_http_error(&w->conn, req, 403, "permission_error", "model_not_allowed",
                                  "model", "This API key may not use the model `%s`.", req->model);
        goto out;
    }
    req->capability = gw_worker_media_capability(ep);
    if (gw_worker_media_endpoint(ep) && (rc = gw_worker_media_prepare(w, req, &call)) != 0) {
        rc = rc == -1 ? 0 : rc;
        goto out;
    }
    if (call.json == NULL) {
        /* scan_is_plain: stream is a literal; stream_options and user are
         * absent or simple enough to read here. */
        call.stream = ep == GW_EP_CHAT && member_is(&bs.stream, "true");
        call.client_usage =
            ep == GW_EP_CHAT && bs.stream_options.v != NULL && include_usage_of(&bs);
        if (bs.user.v != NULL)
            call.user = gw_arena_strndup(req->arena, bs.user.v + 1, bs.user.len - 2);
    } else {
        if (ep == GW_EP_CHAT || ep == GW_EP_COMPLETIONS || ep == GW_EP_RESPONSES) {
            call.stream =
                json_object_object_get_ex(call.json, "stream", &v) && json_object_get_boolean(v);
            call.client_usage = json_object_object_get_ex(call.json, "stream_options", &so) &&
                                json_object_object_get_ex(so, "include_usage", &v) &&
                                json_object_get_boolean(v);
            /* A Responses stream tells its usage in response.completed,
             * which the client must see: nothing is dropped. */
            if (ep == GW_EP_RESPONSES)
                call.client_usage = true;
        }
        if (json_object_object_get_ex(call.json, "user", &v))
            call.user = json_object_get_string(v);
    }
    req->model_stat = call.model->stat;
    rc = gw_worker_quota_admit(w, req, key, req->model, &qhold, &refused);
    if (refused)
        goto out;
    rc = gw_worker_limit_admit(w, req, key, call.model, &call, &hold, &refused);
    if (refused) {
        gw_worker_quota_release(w, &qhold);
        goto out;
    }
    rc = gw_worker_safety_input(w, req, key, &call, &refused);
    if (refused) {
        gw_worker_limit_settle(w, req, &hold);
        gw_worker_quota_settle(w, req, &qhold);
        goto out;
    }
    struct gw_cache_step cache = {0};
    struct answer_done done = {.w = w, .req = req, .cs = &cache, .qhold = &qhold};
    gw_worker_capture_begin(w, req, key, &call);
    call.on_complete = answer_complete;
    call.on_complete_ctx = &done;
    /* Media answers (audio, images, videos) are not cached. */
    if (gw_worker_media_endpoint(ep) || !gw_worker_cache_lookup(w, req, &call, &cache, &rc))
        rc = attempts_run(w, req, key, &call, call.model);
    /* Moderations answer no usage: their input is counted as the limits
     * estimate it, a token per four bytes of the body. */
    if (ep == GW_EP_MODERATIONS && call.status == 200 && !call.have_usage && !req->cache_hit) {
        call.have_usage = true;
        call.prompt_tokens = (int64_t)(req->body_len + 3) / 4;
    }
    req->upstream_status = call.status;
    req->stream = call.stream;
    req->have_usage = call.have_usage;
    req->prompt_tokens = call.prompt_tokens;
    req->completion_tokens = call.completion_tokens;
    req->first_byte_us = call.first_byte_us;
    /* Prices are per million tokens: a token costs price * 1000 in 1e-9
     * units.  The target that answered last is the one that served. */
    if (call.target != NULL)
        req->cost_nano =
            llround((double)call.prompt_tokens * call.target->price_input * 1000.0 +
                    (double)call.completion_tokens * call.target->price_output * 1000.0);
    gw_worker_limit_settle(w, req, &hold);
    gw_worker_quota_settle(w, req, &qhold);
out:
    json_object_put(call.json);
    return rc;
}

static int
handle_passthru(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                const struct route *rt)
{
    return gw_worker_passthru(w, req, key, rt->passthru, rt->path);
}

static int
handle_upload(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
              const struct route *rt)
{
    return gw_worker_media_upload(w, req, key, rt->endpoint);
}

static int
handle_video_get(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                 const struct route *rt)
{
    (void)rt;
    return gw_worker_media_video_get(w, req, key);
}

/*
 * Anthropic's Messages API (worker/messages.c): the request made a chat
 * request, then the chat pipeline; the answers were made Anthropic's by
 * the filter set before authentication.
 */
static int
handle_count_tokens(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                    const struct route *rt)
{
    (void)rt;
    return gw_worker_messages_count_tokens(&w->conn, req, key, w->gen);
}

static int
handle_messages(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                const struct route *rt)
{
    static const struct route chat = {"/v1/chat/completions", false,      HTTP_POST, true,
                                      handle_proxy,           GW_EP_CHAT, 0};
    bool answered;
    int rc = gw_worker_messages_begin(&w->conn, req, &answered);

    (void)rt;
    return answered ? rc : handle_proxy(w, req, key, &chat);
}

/* ---------------------------------------------------------- accounting */

/* Copy src (NULL: "") into dst of size bytes, cut short if need be, as
 * snprintf "%s" would, without formatting; a cut falls between UTF-8
 * characters (a model name is a client's: half a character would make
 * the usage exports invalid UTF-8). */
static void
text_copy(char *dst, size_t size, const char *src)
{
    size_t n = src != NULL ? gw_utf8_prefix(src, size - 1) : 0;

    if (n > 0)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* The master released nothing for USAGE_RING_STALL_MS (stopped, or
 * unable to write): records wait only USAGE_RING_STALLED_WAIT_MS until it
 * moves again.  One worker process, all its connections. */
static bool ring_stalled;

/*
 * Put one authenticated request's usage into the ring for the master to
 * store.  The ring never drops.  When it is full, the record waits for
 * room while the master makes progress: its answer is out already, so
 * only this connection's next request waits, and the worker's other
 * connections go on.  Writing through at once would be worse for all of
 * them: it takes LMDB's write lock, which the master holds while its
 * commit syncs, and the worker's whole event loop would stand still
 * behind the disk.  Only when the master has released no record for
 * USAGE_RING_STALL_MS does the worker write the record through itself.
 */
static void
usage_record(struct gw_worker *w, const struct gw_request *req, long ms)
{
    struct gw_usage u = {
        .time_us = 0,
        .input_tokens = req->prompt_tokens,
        .output_tokens = req->completion_tokens,
        .status = req->status,
        .duration_ms = (uint32_t)ms,
        .ttfb_ms = (uint32_t)(req->first_byte_us / 1000),
        .stream = req->stream,
        .cost_nano = req->cost_nano,
        .cached = req->cache_hit,
        .byok = req->byok,
        .capability = req->capability,
        /* Units are what a successful answer made. */
        .units = req->status >= 200 && req->status < 300 ? req->units : 0,
    };
    /* When its answer went out (see gw_http_conn.sent_us), else now. */
    u.time_us = w->conn.sent_us != 0 ? w->conn.sent_us : gw_wall_us();
    text_copy(u.request_id, sizeof(u.request_id), req->id);
    text_copy(u.key_id, sizeof(u.key_id), req->key_id);
    text_copy(u.model, sizeof(u.model), req->model);
    text_copy(u.target, sizeof(u.target), req->target);
    text_copy(u.user, sizeof(u.user), req->user);
    text_copy(u.tenant, sizeof(u.tenant), req->tenant);
    if (req->tier != NULL)
        memcpy(u.tier, req->tier, strnlen(req->tier, sizeof(u.tier)));

    struct gw_shm_header *h = w->env->shm->hdr;
    uint64_t head = atomic_load(&h->ring_head);
    int64_t since = -1; /* when the ring was last seen to move: from the first full look */
    /* Looks 1 ms apart, then further, up to 10 ms: a worker of many
     * connections, all waiting, must not spin the CPU the master needs. */
    long nap_us = 1000;
    for (;;) {
        int rc = gw_shm_ring_push(w->env->shm, &u);
        if (gw_shm_ring_bell(w->env->shm)) {
            uint64_t one = 1;
            if (write(w->env->ring_bell, &one, sizeof(one)) < 0)
                gw_log(GW_LOG_WARN, "req=%s write(ring bell): %s", req->id, strerror(errno));
        }
        if (rc == 0) {
            ring_stalled = false;
            return;
        }
        /* Room made since the last look: the master is draining. */
        uint64_t now_head = atomic_load(&h->ring_head);
        int64_t now = gw_now_ms();
        if (now_head != head) {
            head = now_head;
            ring_stalled = false;
            since = now;
        } else if (since < 0) {
            since = now;
        }
        if (now - since >= (ring_stalled ? USAGE_RING_STALLED_WAIT_MS : USAGE_RING_STALL_MS))
            break;
        gw_worker_sleep_us(nap_us);
        nap_us = nap_us * 2 < 10000 ? nap_us * 2 : 10000;
    }
    if (!ring_stalled)
        gw_log(GW_LOG_WARN,
               "req=%s the usage ring is full and the master stored nothing for %d ms: "
               "writing records through",
               req->id, USAGE_RING_STALL_MS);
    ring_stalled = true;
    atomic_fetch_add(&h->ring_written_through, 1);
    /* (On a full disk this fails for every record: see gw_log_limited.) */
    static struct gw_log_limit failing;
    if (gw_store_usage_add(w->store, &u, 1, 0, 0) != 0)
        gw_log_limited(&failing, GW_LOG_ERROR,
                       "req=%s usage record could not be stored: ring full and LMDB write failed",
                       req->id);
}

/*
 * Account the request: shm counters (for /metrics and routing), the usage
 * ring (for LMDB), and the access log.
 */
static void
account(struct gw_worker *w, struct gw_request *req)
{
    long ms = (long)((gw_now_us() - req->start_us) / 1000);
    int64_t ttft = req->first_byte_us > 0 ? req->first_byte_us / 1000 : -1;
    struct gw_shm_stat *st;

    if ((st = stat_get(w, req->model_stat)) != NULL)
        gw_shm_stat_account(st, req->status, req->prompt_tokens, req->completion_tokens, ms, ttft);
    if ((st = stat_get(w, req->target_stat)) != NULL)
        gw_shm_stat_account(st, req->status, req->prompt_tokens, req->completion_tokens, ms, ttft);
    /* An admin API request is no use of a model: not usage. */
    if (req->key_id != NULL && !w->on_admin) {
        char name[GW_SHM_NAME_LEN] = "k:";
        size_t n = strnlen(req->key_id, sizeof(name) - 3);
        memcpy(name + 2, req->key_id, n);
        name[2 + n] = '\0';
        if ((st = stat_get(w, (int32_t)gw_shm_stat_find(w->env->shm, name, true))) != NULL)
            gw_shm_stat_account(st, req->status, req->prompt_tokens, req->completion_tokens, ms,
                                ttft);
        usage_record(w, req, ms);
    }
    gw_worker_capture_write(w, req, ms);
    gw_worker_access_write(w, req, ms);
}

/* ------------------------------------------------------------- driver */

int
gw_worker_pipeline_run(struct gw_worker *w, struct gw_request *req)
{
    const struct route *table = w->on_metrics ? metrics_routes : routes, *rt = NULL;
    size_t n = w->on_metrics ? sizeof(metrics_routes) / sizeof(metrics_routes[0]) : NROUTES;
    bool path_known = false;
    int rc;

    if (w->on_admin) {
        table = admin_routes;
        n = sizeof(admin_routes) / sizeof(admin_routes[0]);
    }
    for (size_t i = 0; i < n; i++) {
        if (!route_path_matches(&table[i], req->path))
            continue;
        path_known = true;
        if (table[i].method == ROUTE_ANY_METHOD || table[i].method == req->method ||
            (table[i].method == HTTP_GET && req->method == HTTP_HEAD)) {
            rt = &table[i];
            break;
        }
    }
    if (rt == NULL) {
        if (path_known) {
            req->allow = allowed_methods(req->path);
            rc = gw_worker_http_error(&w->conn, req, 405, "invalid_request_error",
                                      "method_not_allowed", NULL, "Method %s is not allowed on %s.",
                                      gw_worker_http_method_name(req->method), req->path);
        } else {
            rc = gw_worker_http_error(&w->conn, req, 404, "invalid_request_error", "unknown_url",
                                      NULL, "Unknown request URL: %s %s.",
                                      gw_worker_http_method_name(req->method), req->path);
        }
    } else {
        const struct gw_key *key = NULL;
        bool anthropic = rt->handle == handle_messages || rt->handle == handle_count_tokens;
        if (anthropic)
            gw_worker_messages_filter_set(&w->conn, req);
        if (rt->auth && (key = authenticate(w, req, anthropic)) == NULL)
            rc = 0;
        else
            rc = rt->handle(w, req, key, rt);
    }
    w->conn.filter = NULL;
    account(w, req);
    return rc;
}
