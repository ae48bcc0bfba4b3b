/*
 * moderation.c - asking an external moderation model about a request.
 *
 * safety.moderation names a model of the configuration whose first
 * target is an OpenAI-compatible /moderations endpoint.  The text of the
 * request (message contents and their text parts, tool-call arguments,
 * input, prompt), as the provider would get it (masked by the rules), is
 * sent there with one blocking call on the worker's second curl handle;
 * when the answer flags a configured category (any, when none is
 * configured) the request is blocked or flagged.  A moderation call that
 * fails lets the request through (on_error: allow, the default) or blocks
 * it (on_error: block).  Every verdict is counted in /metrics under the
 * rule name "moderation" and goes into the capture record.
 */
#include <stdio.h>
#include <string.h>

#include "worker/safety.h"
#include "worker/worker.h"

/* No moderation call waits longer than this, whatever the timeouts say. */
#define MODERATION_TIMEOUT_MAX_MS 30000L
/* Bytes of a moderation answer read at most. */
#define MODERATION_ANSWER_MAX (256 * 1024)

static void
text_add(struct gw_buf *b, struct json_object *v)
{
    if (v == NULL || !json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) == 0)
        return;
    if (b->len > 0)
        gw_buf_append(b, "\n", 1);
    gw_buf_append(b, json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

static struct json_object *
member(struct json_object *o, const char *key)
{
    struct json_object *v;

    return o != NULL && json_object_is_type(o, json_type_object) &&
                   json_object_object_get_ex(o, key, &v)
               ? v
               : NULL;
}

/* A string, or the text parts of a list of content parts / strings. */
static void
texts_add(struct gw_buf *b, struct json_object *v)
{
    if (v == NULL)
        return;
    if (!json_object_is_type(v, json_type_array)) {
        text_add(b, v);
        return;
    }
    for (size_t i = 0; i < gw_worker_json_len(v); i++) {
        struct json_object *part = gw_worker_json_at(v, i);
        if (json_object_is_type(part, json_type_string))
            text_add(b, part);
        else
            text_add(b, member(part, "text"));
    }
}

/* Everything a person or a tool wrote in the request. */
static void
request_text(struct json_object *body, struct gw_buf *b)
{
    struct json_object *messages = member(body, "messages");

    for (size_t i = 0; i < gw_worker_json_len(messages); i++) {
        struct json_object *m = gw_worker_json_at(messages, i), *calls;
        texts_add(b, member(m, "content"));
        if ((calls = member(m, "tool_calls")) != NULL &&
            json_object_is_type(calls, json_type_array))
            for (size_t j = 0; j < gw_worker_json_len(calls); j++)
                text_add(b, member(member(gw_worker_json_at(calls, j), "function"), "arguments"));
    }
    texts_add(b, member(body, "input"));
    texts_add(b, member(body, "prompt"));
}

static size_t
on_answer(char *data, size_t size, size_t n, void *ctx)
{
    struct gw_buf *b = ctx;
    size_t len = size * n;

    if (b->len + len > MODERATION_ANSWER_MAX || gw_buf_append(b, data, len) != 0)
        return 0;
    return len;
}

/* The categories of results[0] that are flagged and configured, as a JSON
 * array in the arena; NULL when none is (or the answer is not one). */
static const char *
flagged_categories(const struct gw_gen *g, struct gw_arena *a, const char *answer, size_t len,
                   bool *understood)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = tok ? json_tokener_parse_ex(tok, answer, (int)len) : NULL;
    struct json_object *results = member(o, "results"), *r, *cats;
    struct gw_buf b = {0};
    const char *out = NULL;

    *understood = false;
    if (results == NULL || !json_object_is_type(results, json_type_array) ||
        gw_worker_json_len(results) == 0)
        goto done;
    *understood = true;
    r = gw_worker_json_at(results, 0);
    if (!json_object_get_boolean(member(r, "flagged")) ||
        (cats = member(r, "categories")) == NULL || !json_object_is_type(cats, json_type_object))
        goto done;
    json_object_object_foreach(cats, name, v)
    {
        if (!json_object_get_boolean(v))
            continue;
        if (g->nmoderation_categories > 0 &&
            !gw_gen_list_has(g, g->moderation_categories, g->nmoderation_categories, name))
            continue;
        gw_buf_append(&b, b.len == 0 ? "[" : ",", 1);
        gw_worker_json_str(&b, name, strlen(name));
    }
    if (b.len > 0) {
        gw_buf_append(&b, "]", 1);
        out = gw_arena_strndup(a, b.data, b.len);
    }
done:
    gw_buf_free(&b);
    json_object_put(o);
    if (tok != NULL)
        json_tokener_free(tok);
    return out;
}

/* Count a verdict in /metrics, as the rules are: "s:input:ACTION:moderation". */
static void
count(struct gw_worker *w, const char *action)
{
    char name[GW_SHM_NAME_LEN];
    long i;

    snprintf(name, sizeof(name), "s:input:%s:moderation", action);
    if ((i = gw_shm_stat_find(w->env->shm, name, true)) >= 0)
        atomic_fetch_add(&gw_shm_stat_at(w->env->shm, (size_t)i)->requests, 1);
}

int
gw_worker_moderation(struct gw_worker *w, struct gw_request *req, struct gw_call *call,
                     bool *answered)
{
    const struct gw_gen *g = w->gen;
    const struct gw_gen_model *mm = gw_gen_model_at(g, g->moderation_model - 1);
    struct gw_buf text = {0}, answer = {0};
    struct curl_slist *h = NULL;
    CURL *curl = w->curl_passthru;
    long status = 0;
    bool understood = false;
    int rc = 0;

    *answered = false;
    request_text(gw_worker_call_json(call), &text);
    if (text.len == 0 || mm->ntargets == 0 || curl == NULL)
        goto out;
    const struct gw_gen_target *t = gw_gen_target(g, mm->first_target);
    const struct gw_gen_provider *p = gw_gen_provider(g, t->provider);
    struct json_object *body = json_object_new_object();
    json_object_object_add(body, "model", json_object_new_string(gw_gen_str(g, t->model)));
    json_object_object_add(body, "input", json_object_new_string_len(text.data, (int)text.len));
    const char *payload =
        gw_arena_strdup(req->arena, json_object_to_json_string_ext(body, JSON_C_TO_STRING_PLAIN));
    json_object_put(body);

    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    h = curl_slist_append(h, gw_arena_printf(req->arena, "x-request-id: %s", req->id));
    if (gw_gen_str(g, p->api_key) != NULL)
        h = curl_slist_append(
            h, gw_arena_printf(req->arena, "Authorization: Bearer %s", gw_gen_str(g, p->api_key)));
    long timeout = mm->timeouts.total_ms > 0 && mm->timeouts.total_ms < MODERATION_TIMEOUT_MAX_MS
                       ? mm->timeouts.total_ms
                       : MODERATION_TIMEOUT_MAX_MS;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL,
                     gw_arena_printf(req->arena, "%s/moderations", gw_gen_str(g, p->base_url)));
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, mm->timeouts.connect_ms);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_answer);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &answer);
    /* On the connection's multi handle: the worker's other connections
     * run while the moderation model thinks. */
    struct gw_timeouts to = {.first_byte_ms = timeout, .idle_ms = timeout};
    int64_t started_ms = gw_now_ms();
    bool got_bytes = false, timed_out;
    struct gw_transfer_clock clock = {
        .last_io_ms = &started_ms, .got_bytes = &got_bytes, .to = &to};
    CURLcode cc = gw_worker_transfer_run(&w->xfer, curl, &clock, &timed_out);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);

    const char *cats = NULL;
    if (cc == CURLE_OK && status == 200)
        cats = flagged_categories(g, req->arena, answer.data ? answer.data : "", answer.len,
                                  &understood);
    if (!understood) {
        gw_log(GW_LOG_WARN, "req=%s moderation model %s: %s; the request %s", req->id,
               gw_gen_str(g, mm->name),
               cc != CURLE_OK ? curl_easy_strerror(cc)
                              : gw_arena_printf(req->arena, "HTTP %ld or no results", status),
               g->moderation_fail_closed ? "is blocked (on_error: block)" : "goes on");
        count(w, "error");
        if (!g->moderation_fail_closed)
            goto out;
        *answered = true;
        rc =
            gw_worker_http_error(&w->conn, req, 503, "server_error", "moderation_unavailable", NULL,
                                 "The request could not be checked by the moderation model "
                                 "(request %s).",
                                 req->id);
        goto out;
    }
    if (cats == NULL)
        goto out;
    bool block = g->moderation_action == GW_SAFETY_BLOCK;
    req->moderation_action = block ? "block" : "flag";
    req->moderation_categories = cats;
    count(w, req->moderation_action);
    gw_log(GW_LOG_INFO, "req=%s moderation model %s flagged the input: %s (%s)", req->id,
           gw_gen_str(g, mm->name), cats, req->moderation_action);
    if (block) {
        *answered = true;
        rc = gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "content_blocked",
                                  NULL,
                                  "The request was blocked by the moderation model (categories: "
                                  "%s).",
                                  cats);
    }
out:
    curl_slist_free_all(h);
    gw_buf_free(&text);
    gw_buf_free(&answer);
    return rc;
}
