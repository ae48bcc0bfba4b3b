/*
 * messages.c - POST /v1/messages, Anthropic's Messages API, in front of
 * the canonical pipeline.
 *
 * The request is turned into an OpenAI chat request (req->body replaced)
 * and goes through the chat pipeline as any other: limits, quotas,
 * safety, cache, routing to any provider type, accounting.  Everything
 * that pipeline answers, in OpenAI's shapes, passes through an HTTP
 * filter set before authentication: a 2xx answer becomes an Anthropic
 * message, an error Anthropic's error with Anthropic's status, a stream
 * Anthropic's events.  The response cache and capture see the OpenAI
 * answer, so one cache entry serves both APIs.
 */
#include <stdio.h>
#include <string.h>

#include "worker/messages.h"

struct filter {
    struct gw_http_filter f;
    struct gw_messages_stream st;
};

static int
filter_respond(struct gw_http_conn *c, struct gw_request *req, int status, const char *ctype,
               const char *extra, const char *body, size_t len)
{
    const char *out = NULL;
    size_t out_len = 0;
    int st = status;

    (void)ctype;
    if (status >= 200 && status < 300) {
        if (gw_worker_messages_answer(req->arena, body, len, req->model, &out, &out_len) != 0) {
            static const char bad[] =
                "{\"error\":{\"message\":\"The upstream's answer could not "
                "be read as a chat completion.\",\"type\":\"upstream_error\"}}";
            status = 502;
            body = bad;
            len = sizeof(bad) - 1;
        }
    }
    if (out == NULL &&
        gw_worker_messages_error(req->arena, status, body, len, &st, &out, &out_len) != 0)
        return GW_ENOMEM;
    return gw_worker_http_respond(c, req, st, "application/json", extra, out, out_len);
}

static int
filter_stream_begin(struct gw_http_conn *c, struct gw_request *req, int status, const char *ctype,
                    const char *extra)
{
    struct filter *fl = c->filter->ctx;

    gw_worker_messages_stream_init(&fl->st, req->arena, &c->filter_in, req->model);
    return gw_worker_http_stream_begin(c, req, status, ctype, extra);
}

static int
filter_flush(struct gw_http_conn *c)
{
    int rc = 0;

    if (c->filter_out.len > 0)
        rc = gw_worker_http_stream_write(c, c->filter_out.data, c->filter_out.len);
    c->filter_out.len = 0;
    return rc;
}

static int
filter_stream_write(struct gw_http_conn *c, const char *data, size_t len)
{
    struct filter *fl = c->filter->ctx;
    int rc;

    c->filter_out.len = 0;
    if ((rc = gw_worker_messages_stream_feed(&fl->st, data, len, &c->filter_out)) != 0)
        return rc;
    return filter_flush(c);
}

static int
filter_stream_end(struct gw_http_conn *c)
{
    struct filter *fl = c->filter->ctx;
    int rc;

    c->filter_out.len = 0;
    rc = gw_worker_messages_stream_finish(&fl->st, &c->filter_out);
    if (rc == 0)
        rc = filter_flush(c);
    if (rc == 0)
        rc = gw_worker_http_stream_end(c);
    return rc;
}

void
gw_worker_messages_filter_set(struct gw_http_conn *c, struct gw_request *req)
{
    struct filter *fl = gw_arena_zalloc(req->arena, sizeof(*fl));

    fl->f.respond = filter_respond;
    fl->f.stream_begin = filter_stream_begin;
    fl->f.stream_write = filter_stream_write;
    fl->f.stream_end = filter_stream_end;
    fl->f.ctx = fl;
    fl->st.in = &c->filter_in;
    c->filter = &fl->f;
}

int
gw_worker_messages_begin(struct gw_http_conn *c, struct gw_request *req, bool *answered)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *in = NULL, *out = NULL;
    char err[256];
    int rc = 0;

    *answered = true;
    if (tok == NULL)
        return gw_worker_http_error(c, req, 500, "server_error", "internal_error", NULL,
                                    "Out of memory.");
    if (req->body_len > 0)
        in = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
    size_t end = in != NULL ? json_tokener_get_parse_end(tok) : 0;
    while (end < req->body_len && strchr(" \t\r\n", req->body[end]) != NULL &&
           req->body[end] != '\0')
        end++;
    if (in == NULL || json_tokener_get_error(tok) != json_tokener_success || end != req->body_len ||
        !json_object_is_type(in, json_type_object)) {
        rc = gw_worker_http_error(c, req, 400, "invalid_request_error", "invalid_json", NULL,
                                  "The request body is not a valid JSON object.");
        goto out;
    }
    if (gw_worker_messages_request(in, &out, err, sizeof(err)) != 0) {
        rc = gw_worker_http_error(c, req, 400, "invalid_request_error", "invalid_request", NULL,
                                  "%s", err);
        goto out;
    }
    size_t len;
    const char *s = json_object_to_json_string_length(
        out, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    req->body = gw_arena_strndup(req->arena, s, len);
    req->body_len = len;
    *answered = false;
out:
    json_object_put(out);
    json_object_put(in);
    json_tokener_free(tok);
    return rc;
}

/* The text of a canonical chat request, in bytes: what the estimate of
 * count_tokens counts. */
static size_t
text_bytes(struct json_object *v)
{
    size_t n = 0;

    switch (json_object_get_type(v)) {
    case json_type_string: return (size_t)json_object_get_string_len(v);
    case json_type_array:
        for (size_t i = 0; i < gw_worker_json_len(v); i++)
            n += text_bytes(gw_worker_json_at(v, i));
        return n;
    case json_type_object: {
        json_object_object_foreach(v, k, val)
        {
            /* Names of the structure are not text the model reads. */
            if (strcmp(k, "role") != 0 && strcmp(k, "type") != 0 && strcmp(k, "id") != 0 &&
                strcmp(k, "tool_call_id") != 0)
                n += text_bytes(val);
        }
        return n;
    }
    default: return 0;
    }
}

int
gw_worker_messages_count_tokens(struct gw_http_conn *c, struct gw_request *req,
                                const struct gw_key *key, const struct gw_gen *g)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *in = NULL, *out = NULL, *messages, *tools, *model;
    char err[256];
    int rc;

    if (tok != NULL && req->body_len > 0)
        in = json_tokener_parse_ex(tok, req->body, (int)req->body_len);
    if (tok != NULL)
        json_tokener_free(tok);

    if (in == NULL || !json_object_is_type(in, json_type_object)) {
        rc = gw_worker_http_error(c, req, 400, "invalid_request_error", "invalid_json", NULL,
                                  "The request body is not a valid JSON object.");
        goto out;
    }
    /* count_tokens takes no max_tokens: lend one to the translation. */
    if (!json_object_object_get_ex(in, "max_tokens", NULL))
        json_object_object_add(in, "max_tokens", json_object_new_int(1));
    if (gw_worker_messages_request(in, &out, err, sizeof(err)) != 0) {
        rc = gw_worker_http_error(c, req, 400, "invalid_request_error", "invalid_request", NULL,
                                  "%s", err);
        goto out;
    }
    const char *name =
        json_object_object_get_ex(out, "model", &model) ? json_object_get_string(model) : NULL;
    req->model = name != NULL ? gw_arena_strdup(req->arena, name) : NULL;
    if (name == NULL || gw_gen_model_find(g, name) == NULL) {
        rc = gw_worker_http_error(c, req, 404, "invalid_request_error", "model_not_found", "model",
                                  "The model `%s` does not exist.", name ? name : "");
        goto out;
    }
    if (!gw_key_allows(key, name)) {
        rc = gw_worker_http_error(c, req, 403, "permission_error", "model_not_allowed", "model",
                                  "This API key may not use the model `%s`.", name);
        goto out;
    }
    /* An estimate, as the rate limits make it: four bytes of text a
     * token, and a few for each message's framing. */
    size_t bytes = 0, nmessages = 0;
    if (json_object_object_get_ex(out, "messages", &messages)) {
        bytes += text_bytes(messages);
        nmessages = gw_worker_json_len(messages);
    }
    if (json_object_object_get_ex(out, "tools", &tools))
        bytes += strlen(json_object_to_json_string_ext(tools, JSON_C_TO_STRING_PLAIN));
    const char *answer =
        gw_arena_printf(req->arena, "{\"input_tokens\":%zu}", (bytes + 3) / 4 + 3 * nmessages);
    /* The answer is already Anthropic's: past the request's filter. */
    c->filtering = true;
    rc = gw_worker_http_respond(c, req, 200, "application/json", NULL, answer, strlen(answer));
    c->filtering = false;
out:
    json_object_put(out);
    json_object_put(in);
    return rc;
}
