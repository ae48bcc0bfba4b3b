/*
 * endpoint.c - the connectivity test behind "aigwctl endpoint test" and
 * "aigwctl provider test": a minimal real call through each target of a
 * model (a chat completion with max_tokens 1, or the smallest request of
 * the model's type), in the target's provider's own format, reporting the
 * status, the latency and the error, if any.
 *
 * The calls run side by side on a libcurl multi handle, so the test takes
 * as long as its slowest target, at most ENDPOINT_TIMEOUT_MAX_MS.  It
 * blocks: control.c runs it in a child of the master.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "master/master.h"
#include "worker/worker.h"

/* No test call waits longer than this, whatever the model's timeouts. */
#define ENDPOINT_TIMEOUT_MAX_MS 10000L
/* Bytes of an answer kept to find its error message in. */
#define ENDPOINT_BODY_MAX (64 * 1024)
/* Characters of a non-JSON error answer shown. */
#define ENDPOINT_ERROR_SHOWN 200

struct probe {
    const struct gw_provider *provider;
    const struct gw_target *target;
    CURL *easy;
    struct curl_slist *headers;
    struct gw_arena *arena; /* the request the adapter built, and its pieces */
    struct gw_buf gen;      /* the strings the adapter reads through call.gen */
    struct gw_gen_provider gp;
    struct gw_gen_target gt;
    struct json_object *json;
    struct gw_buf answer;
    char errbuf[CURL_ERROR_SIZE];
    char why[256]; /* why the call was not made, or "" */
    CURLcode result;
    bool done;
};

static size_t
on_answer(char *data, size_t size, size_t nmemb, void *arg)
{
    struct probe *p = arg;
    size_t len = size * nmemb, keep = len;

    if (p->answer.len + keep > ENDPOINT_BODY_MAX)
        keep = ENDPOINT_BODY_MAX - p->answer.len;
    if (keep > 0 && gw_buf_append(&p->answer, data, keep) != 0)
        return 0;
    return len;
}

/* The timeout that applies: the provider's, else the model's, capped. */
static long
timeout_pick(long provider_ms, long model_ms)
{
    long ms = provider_ms > 0 ? provider_ms : model_ms;

    return ms > 0 && ms < ENDPOINT_TIMEOUT_MAX_MS ? ms : ENDPOINT_TIMEOUT_MAX_MS;
}

/*
 * The smallest request of the model's capability, in OpenAI's form: the
 * provider's adapter makes it the provider's own.  Capabilities without
 * an endpoint of their own here are tested with a chat completion.
 */
static enum gw_endpoint
probe_endpoint(const struct gw_model *model, const char **body_fmt)
{
    switch (model->type) {
    case GW_MODEL_COMPLETIONS:
        *body_fmt = "{\"model\":%s,\"prompt\":\"ping\",\"max_tokens\":1}";
        return GW_EP_COMPLETIONS;
    case GW_MODEL_EMBEDDINGS:
        *body_fmt = "{\"model\":%s,\"input\":\"ping\"}";
        return GW_EP_EMBEDDINGS;
    case GW_MODEL_MODERATIONS:
        *body_fmt = "{\"model\":%s,\"input\":\"ping\"}";
        return GW_EP_MODERATIONS;
    case GW_MODEL_RESPONSES:
        /* OpenAI takes no fewer than 16 output tokens here. */
        *body_fmt = "{\"model\":%s,\"input\":\"ping\",\"max_output_tokens\":16}";
        return GW_EP_RESPONSES;
    default:
        *body_fmt = "{\"model\":%s,\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}],\"max_"
                    "tokens\":1}";
        return GW_EP_CHAT;
    }
}

/* s into the probe's string table; its offset (0: none). */
static uint32_t
gen_str(struct gw_buf *b, const char *s)
{
    uint32_t off = (uint32_t)b->len;

    if (s == NULL || gw_buf_append(b, s, strlen(s) + 1) != 0)
        return 0;
    return off;
}

/*
 * Build the provider's request with its worker adapter (worker/providers/,
 * linked into aigwd whole), as a worker would for this target: URL, body,
 * credential header or SigV4 signature.  The adapter reads the provider's
 * and target's keys through a routing generation; the probe lays out the
 * few strings it needs (api_version, region, deployment) in a table of its
 * own for that.
 */
static int
probe_build(const struct gw_model *model, struct probe *p, struct gw_call *call)
{
    const struct gw_provider *pr = p->provider;
    const struct gw_provider_adapter *ad = gw_worker_provider_adapter(pr->type);
    struct gw_request *req;
    const char *fmt;
    int rc;

    if (ad == NULL || (p->arena = gw_arena_create(4096)) == NULL)
        return GW_ENOMEM;
    req = gw_arena_zalloc(p->arena, sizeof(*req));
    req->arena = p->arena;
    snprintf(req->id, sizeof(req->id), "endpoint-test");
    call->endpoint = probe_endpoint(model, &fmt);
    struct json_object *name = json_object_new_string(p->target->model);
    req->body = gw_arena_printf(p->arena, fmt, json_object_to_json_string(name));
    json_object_put(name);
    req->body_len = strlen(req->body);
    if ((p->json = json_tokener_parse(req->body)) == NULL)
        return GW_ENOMEM;

    gw_buf_append(&p->gen, "", 1); /* offset 0 is "none" */
    p->gp = (struct gw_gen_provider){
        .type = (uint32_t)pr->type,
        .quirks = pr->quirks,
        .max_tokens = pr->max_tokens,
        .api_version = gen_str(&p->gen, pr->api_version),
        .region = gen_str(&p->gen, pr->region),
    };
    p->gt = (struct gw_gen_target){
        .deployment = gen_str(&p->gen, p->target->deployment),
        .api_version = gen_str(&p->gen, p->target->api_version),
    };
    if (p->gen.data == NULL)
        return GW_ENOMEM;
    call->req = req;
    call->type = pr->type;
    call->provider_name = pr->name;
    call->base_url = pr->base_url;
    call->api_key = pr->api_key;
    call->target_model = p->target->model;
    call->json = p->json;
    call->provider = &p->gp;
    call->target = &p->gt;
    call->gen = (const struct gw_gen *)(const void *)p->gen.data;
    call->created = (int64_t)time(NULL);
    rc = ad->request(call);
    if (rc == GW_ENOENT)
        snprintf(p->why, sizeof(p->why), "the provider type %s does not serve %s", ad->type,
                 call->endpoint == GW_EP_CHAT ? "chat completions" : "this model's capability");
    return rc;
}

static int
probe_start(CURLM *multi, const struct gw_model *model, struct probe *p)
{
    struct gw_call call = {0};
    int rc = probe_build(model, p, &call);

    if (rc == 0)
        rc = gw_worker_call_header(&call, "Content-Type: application/json", false);
    p->headers = call.headers; /* in the probe's arena, wiped with it, built or not */
    if (rc != 0)
        goto out;
    rc = GW_ENOMEM;
    if ((p->easy = curl_easy_init()) == NULL)
        goto out;
    curl_easy_setopt(p->easy, CURLOPT_URL, call.url);
    curl_easy_setopt(p->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(p->easy, CURLOPT_POSTFIELDS, call.body);
    curl_easy_setopt(p->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call.body_len);
    curl_easy_setopt(p->easy, CURLOPT_HTTPHEADER, p->headers);
    curl_easy_setopt(p->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(p->easy, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout_pick(p->provider->timeouts.connect_ms, model->timeouts.connect_ms));
    curl_easy_setopt(p->easy, CURLOPT_TIMEOUT_MS,
                     timeout_pick(p->provider->timeouts.total_ms, model->timeouts.total_ms));
    curl_easy_setopt(p->easy, CURLOPT_ERRORBUFFER, p->errbuf);
    curl_easy_setopt(p->easy, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(p->easy, CURLOPT_WRITEDATA, p);
    curl_easy_setopt(p->easy, CURLOPT_PRIVATE, p);
    curl_easy_setopt(p->easy, CURLOPT_USERAGENT, "aigwd/" GW_VERSION " endpoint-test");
    if (curl_multi_add_handle(multi, p->easy) != CURLM_OK)
        goto out;
    rc = 0;
out:
    return rc;
}

/* The upstream's error message: OpenAI's error.message, a bare "error" or
 * "message" string, else the start of the answer.  Empty when none. */
static void
answer_error(const struct gw_buf *answer, char *out, size_t len)
{
    struct json_object *o = NULL, *e, *msg;
    char text[ENDPOINT_ERROR_SHOWN + 1];

    out[0] = '\0';
    if (answer->len == 0)
        return;
    struct json_tokener *tok = json_tokener_new();
    if (tok != NULL) {
        o = json_tokener_parse_ex(tok, answer->data, (int)answer->len);
        json_tokener_free(tok);
    }
    if (o != NULL && json_object_is_type(o, json_type_object)) {
        if (json_object_object_get_ex(o, "error", &e)) {
            if (json_object_is_type(e, json_type_string))
                snprintf(out, len, "%s", json_object_get_string(e));
            else if (json_object_object_get_ex(e, "message", &msg))
                snprintf(out, len, "%s", json_object_get_string(msg));
        } else if (json_object_object_get_ex(o, "message", &msg)) {
            snprintf(out, len, "%s", json_object_get_string(msg));
        }
    }
    json_object_put(o);
    if (out[0] != '\0')
        return;
    size_t n = answer->len < ENDPOINT_ERROR_SHOWN ? answer->len : ENDPOINT_ERROR_SHOWN;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)answer->data[i];
        text[i] = c < ' ' || c == 0x7f ? ' ' : (char)c;
    }
    text[n] = '\0';
    snprintf(out, len, "%s", text);
}

static struct json_object *
probe_result(const struct probe *p, bool *ok)
{
    struct json_object *o = json_object_new_object();
    long status = 0;
    curl_off_t us = 0;
    char error[512] = "", name[512];

    if (p->easy != NULL) {
        curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(p->easy, CURLINFO_TOTAL_TIME_T, &us);
    }
    if (!p->done)
        snprintf(error, sizeof(error), "%s",
                 p->why[0] ? p->why : "the test call could not be started");
    else if (p->result != CURLE_OK)
        snprintf(error, sizeof(error), "%s",
                 p->errbuf[0] ? p->errbuf : curl_easy_strerror(p->result));
    else if (status < 200 || status > 299) {
        char msg[400];
        answer_error(&p->answer, msg, sizeof(msg));
        snprintf(error, sizeof(error), "%s", msg[0] ? msg : "the upstream answered an error");
    }
    *ok = error[0] == '\0';
    snprintf(name, sizeof(name), "%s/%s", p->provider->name, p->target->model);
    json_object_object_add(o, "target", json_object_new_string(name));
    json_object_object_add(o, "provider", json_object_new_string(p->provider->name));
    json_object_object_add(o, "model", json_object_new_string(p->target->model));
    json_object_object_add(o, "status", json_object_new_int((int)status));
    json_object_object_add(o, "latency_ms", json_object_new_double((double)(us / 100) / 10.0));
    json_object_object_add(o, "ok", json_object_new_boolean(*ok));
    json_object_object_add(o, "error", *ok ? NULL : json_object_new_string(error));
    return o;
}

struct json_object *
gw_master_endpoint_test(const struct gw_config *cfg, const struct gw_model *model, long only_target,
                        bool *all_ok)
{
    struct json_object *results = json_object_new_array();
    struct probe *probes = calloc(model->ntargets ? model->ntargets : 1, sizeof(*probes));
    CURLM *multi = curl_multi_init();
    int running = 0;

    *all_ok = false;
    if (probes == NULL || multi == NULL)
        goto out;
    for (size_t i = 0; i < model->ntargets; i++) {
        struct probe *p = &probes[i];
        p->target = &model->targets[i];
        p->provider = &cfg->providers[p->target->provider];
        if (only_target >= 0 && (size_t)only_target != i)
            continue;
        if (probe_start(multi, model, p) != 0) {
            curl_easy_cleanup(p->easy);
            p->easy = NULL;
        }
    }
    do {
        CURLMsg *msg;
        int left;
        if (curl_multi_perform(multi, &running) != CURLM_OK)
            break;
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            struct probe *p = NULL;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&p);
            p->result = msg->data.result;
            p->done = true;
        }
        if (running > 0 && curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK)
            break;
    } while (running > 0);
    *all_ok = true;
    for (size_t i = 0; i < model->ntargets; i++) {
        bool ok;
        if (only_target >= 0 && (size_t)only_target != i)
            continue;
        json_object_array_add(results, probe_result(&probes[i], &ok));
        *all_ok &= ok;
    }
out:
    for (size_t i = 0; probes != NULL && i < model->ntargets; i++) {
        struct probe *p = &probes[i];
        if (p->easy != NULL) {
            curl_multi_remove_handle(multi, p->easy);
            curl_easy_cleanup(p->easy);
        }
        gw_worker_headers_wipe(p->headers);
        json_object_put(p->json);
        if (p->arena != NULL)
            gw_arena_destroy(p->arena);
        gw_buf_free(&p->gen);
        gw_buf_free(&p->answer);
    }
    free(probes);
    if (multi != NULL)
        curl_multi_cleanup(multi);
    return results;
}
