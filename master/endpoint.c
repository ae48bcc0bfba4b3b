/*
 * endpoint.c - the connectivity test behind "aigwctl endpoint test": a
 * minimal real chat completion (max_tokens 1) through each target of a
 * model, reporting the status, the latency and the error, if any.
 *
 * The calls run side by side on a libcurl multi handle, so the test takes
 * as long as its slowest target, at most ENDPOINT_TIMEOUT_MAX_MS.  It
 * blocks: control.c runs it in a child of the master.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <json-c/json.h>

#include "master/master.h"

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
    char *body;
    struct gw_buf answer;
    char errbuf[CURL_ERROR_SIZE];
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

static int
probe_start(CURLM *multi, const struct gw_model *model, struct probe *p)
{
    struct json_object *req = json_object_new_object(), *msgs = json_object_new_array(),
                       *msg = json_object_new_object();
    char *url = NULL, *auth = NULL;
    int rc = GW_ENOMEM;

    json_object_object_add(msg, "role", json_object_new_string("user"));
    json_object_object_add(msg, "content", json_object_new_string("ping"));
    json_object_array_add(msgs, msg);
    json_object_object_add(req, "model", json_object_new_string(p->target->model));
    json_object_object_add(req, "messages", msgs);
    json_object_object_add(req, "max_tokens", json_object_new_int(1));
    p->body = strdup(json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN));
    if (p->body == NULL || asprintf(&url, "%s/chat/completions", p->provider->base_url) < 0 ||
        (p->easy = curl_easy_init()) == NULL)
        goto out;
    p->headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (p->headers != NULL && p->provider->api_key != NULL) {
        if (asprintf(&auth, "Authorization: Bearer %s", p->provider->api_key) < 0)
            goto out;
        struct curl_slist *more = curl_slist_append(p->headers, auth);
        if (more == NULL)
            goto out;
        p->headers = more;
    }
    if (p->headers == NULL)
        goto out;
    curl_easy_setopt(p->easy, CURLOPT_URL, url);
    curl_easy_setopt(p->easy, CURLOPT_POST, 1L);
    curl_easy_setopt(p->easy, CURLOPT_POSTFIELDS, p->body);
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
    if (auth != NULL) {
        explicit_bzero(auth, strlen(auth));
        free(auth);
    }
    free(url);
    json_object_put(req);
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
        snprintf(error, sizeof(error), "the test call could not be started");
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
        curl_slist_free_all(p->headers);
        free(p->body);
        gw_buf_free(&p->answer);
    }
    free(probes);
    if (multi != NULL)
        curl_multi_cleanup(multi);
    return results;
}
