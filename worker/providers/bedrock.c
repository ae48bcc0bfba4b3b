/*
 * bedrock.c - Amazon Bedrock's Converse API: POST {base}/model/{id}/converse,
 * or /converse-stream, signed with AWS Signature Version 4 (sigv4.c); the
 * stream comes in AWS's binary event stream (evstream.c).
 *
 * The credential is "ACCESS_KEY_ID:SECRET_ACCESS_KEY", with
 * ":SESSION_TOKEN" after it for temporary credentials; a credential
 * without a ':' is a Bedrock API key, sent as a bearer token.
 *
 * Request: system and developer messages become system blocks; turns
 * become messages of content blocks (text, images from data: URLs,
 * toolUse for an assistant's tool_calls, toolResult in a user turn for
 * "tool" messages); tools become the toolConfig, the sampling settings the
 * inferenceConfig.  Answer: the output message's text and toolUse blocks,
 * stopReason and usage.  Stream: messageStart, contentBlockStart,
 * contentBlockDelta, contentBlockStop, messageStop and metadata events,
 * or an exception, each an event-stream message with a JSON payload.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "worker/providers/providers.h"

/* ------------------------------------------------------------ request */

static void
block_add(struct json_object *messages, const char *role, struct json_object *block)
{
    gw_worker_prov_turn_add(messages, role, "content", block);
}

static struct json_object *
text_block(const char *text)
{
    struct json_object *b = json_object_new_object();

    json_object_object_add(b, "text", json_object_new_string(text));
    return b;
}

/* Bedrock takes image bytes only, not URLs: a data URL's, else none. */
static struct json_object *
image_block(struct gw_arena *a, const char *url)
{
    const char *media, *data;

    if (!gw_worker_prov_data_url(a, url, &media, &data) || strncmp(media, "image/", 6) != 0)
        return NULL;
    struct json_object *b = json_object_new_object(), *img = json_object_new_object(),
                       *src = json_object_new_object();
    json_object_object_add(img, "format", json_object_new_string(media + 6));
    json_object_object_add(src, "bytes", json_object_new_string(data));
    json_object_object_add(img, "source", src);
    json_object_object_add(b, "image", img);
    return b;
}

static void
content_add(struct gw_arena *a, struct json_object *messages, const char *role,
            struct json_object *content)
{
    gw_worker_prov_content_add(a, messages, role, "content", content, text_block, image_block);
}

static struct json_object *
tool_config(struct json_object *req)
{
    struct json_object *tools = gw_worker_prov_get(req, "tools"), *tc, *out, *list, *choice = NULL;

    if (tools == NULL || !json_object_is_type(tools, json_type_array) ||
        gw_worker_json_len(tools) == 0)
        return NULL;
    list = json_object_new_array();
    for (size_t i = 0; i < gw_worker_json_len(tools); i++) {
        struct json_object *fn = gw_worker_prov_get(gw_worker_json_at(tools, i), "function");
        struct json_object *spec, *wrap, *schema, *params;
        if (gw_worker_prov_str(fn, "name") == NULL)
            continue;
        spec = json_object_new_object();
        json_object_object_add(spec, "name",
                               json_object_new_string(gw_worker_prov_str(fn, "name")));
        if (gw_worker_prov_str(fn, "description") != NULL)
            json_object_object_add(spec, "description",
                                   json_object_new_string(gw_worker_prov_str(fn, "description")));
        params = gw_worker_prov_get(fn, "parameters");
        if (params != NULL) {
            params = gw_worker_prov_copy(params);
        } else {
            params = json_object_new_object();
            json_object_object_add(params, "type", json_object_new_string("object"));
        }
        schema = json_object_new_object();
        json_object_object_add(schema, "json", params);
        json_object_object_add(spec, "inputSchema", schema);
        wrap = json_object_new_object();
        json_object_object_add(wrap, "toolSpec", spec);
        json_object_array_add(list, wrap);
    }
    out = json_object_new_object();
    json_object_object_add(out, "tools", list);
    tc = gw_worker_prov_get(req, "tool_choice");
    if (tc != NULL && json_object_is_type(tc, json_type_string)) {
        const char *s = json_object_get_string(tc);
        choice = json_object_new_object();
        json_object_object_add(choice, strcmp(s, "required") == 0 ? "any" : "auto",
                               json_object_new_object());
        if (strcmp(s, "none") == 0) { /* Bedrock has no "none": let it choose */
            json_object_put(choice);
            choice = NULL;
        }
    } else if (tc != NULL) {
        const char *name = gw_worker_prov_str(gw_worker_prov_get(tc, "function"), "name");
        if (name != NULL) {
            struct json_object *t = json_object_new_object();
            json_object_object_add(t, "name", json_object_new_string(name));
            choice = json_object_new_object();
            json_object_object_add(choice, "tool", t);
        }
    }
    if (choice != NULL)
        json_object_object_add(out, "toolChoice", choice);
    return out;
}

static struct json_object *
inference_config(struct gw_call *call, struct json_object *req)
{
    struct json_object *g = json_object_new_object(), *v;
    int64_t max = gw_worker_prov_max_tokens(req);

    if (max <= 0 && call->provider != NULL)
        max = call->provider->max_tokens;
    if (max > 0)
        json_object_object_add(g, "maxTokens", json_object_new_int64(max));
    if ((v = gw_worker_prov_get(req, "temperature")) != NULL &&
        !json_object_is_type(v, json_type_null))
        json_object_object_add(g, "temperature", gw_worker_prov_copy(v));
    if ((v = gw_worker_prov_get(req, "top_p")) != NULL && !json_object_is_type(v, json_type_null))
        json_object_object_add(g, "topP", gw_worker_prov_copy(v));
    if ((v = gw_worker_prov_get(req, "stop")) != NULL) {
        struct json_object *seqs = json_object_new_array();
        if (json_object_is_type(v, json_type_string))
            json_object_array_add(seqs, json_object_new_string(json_object_get_string(v)));
        else if (json_object_is_type(v, json_type_array))
            for (size_t i = 0; i < gw_worker_json_len(v); i++)
                json_object_array_add(seqs, gw_worker_prov_copy(gw_worker_json_at(v, i)));
        json_object_object_add(g, "stopSequences", seqs);
    }
    if (json_object_object_length(g) == 0) {
        json_object_put(g);
        return NULL;
    }
    return g;
}

static struct json_object *
converse_body(struct gw_call *call)
{
    struct gw_arena *a = call->req->arena;
    struct json_object *req = gw_worker_call_json(call), *out = json_object_new_object();
    struct json_object *messages = json_object_new_array(), *system = json_object_new_array(), *v;
    struct json_object *msgs = gw_worker_prov_get(req, "messages");

    for (size_t i = 0; i < gw_worker_json_len(msgs); i++) {
        struct json_object *m = gw_worker_json_at(msgs, i);
        const char *role = gw_worker_prov_str(m, "role");
        struct json_object *content = gw_worker_prov_get(m, "content");
        if (role == NULL)
            continue;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            const char *text = gw_worker_prov_content_text(a, content);
            if (text != NULL && text[0] != '\0')
                json_object_array_add(system, text_block(text));
        } else if (strcmp(role, "user") == 0) {
            content_add(a, messages, "user", content);
        } else if (strcmp(role, "assistant") == 0) {
            struct json_object *calls = gw_worker_prov_get(m, "tool_calls");
            content_add(a, messages, "assistant", content);
            for (size_t j = 0; j < gw_worker_json_len(calls); j++) {
                struct json_object *tc = gw_worker_json_at(calls, j);
                struct json_object *fn = gw_worker_prov_get(tc, "function");
                const char *args = gw_worker_prov_str(fn, "arguments");
                struct json_object *input = args ? gw_worker_prov_parse(args, strlen(args)) : NULL;
                struct json_object *b = json_object_new_object(), *tu = json_object_new_object();
                json_object_object_add(
                    tu, "toolUseId",
                    json_object_new_string(gw_worker_prov_str(tc, "id") ?: "call_0"));
                json_object_object_add(
                    tu, "name", json_object_new_string(gw_worker_prov_str(fn, "name") ?: ""));
                json_object_object_add(tu, "input", input ?: json_object_new_object());
                json_object_object_add(b, "toolUse", tu);
                block_add(messages, "assistant", b);
            }
        } else if (strcmp(role, "tool") == 0) {
            const char *text = gw_worker_prov_content_text(a, content) ?: "";
            struct json_object *b = json_object_new_object(), *tr = json_object_new_object(),
                               *parts = json_object_new_array();
            json_object_object_add(
                tr, "toolUseId",
                json_object_new_string(gw_worker_prov_str(m, "tool_call_id") ?: "call_0"));
            json_object_array_add(parts, text_block(text));
            json_object_object_add(tr, "content", parts);
            json_object_object_add(b, "toolResult", tr);
            block_add(messages, "user", b);
        }
    }
    json_object_object_add(out, "messages", messages);
    if (gw_worker_json_len(system) > 0)
        json_object_object_add(out, "system", system);
    else
        json_object_put(system);
    if ((v = inference_config(call, req)) != NULL)
        json_object_object_add(out, "inferenceConfig", v);
    if ((v = tool_config(req)) != NULL)
        json_object_object_add(out, "toolConfig", v);
    return out;
}

/* The host (and port) of url, as the Host header carries it. */
static const char *
url_host(struct gw_arena *a, const char *url, const char **path)
{
    const char *h = strstr(url, "://");

    h = h != NULL ? h + 3 : url;
    size_t n = strcspn(h, "/?");
    *path = h + n;
    return gw_arena_strndup(a, h, n);
}

/* Sign the request with the credential "KEY_ID:SECRET[:TOKEN]". */
static int
sign(struct gw_call *call)
{
    struct gw_arena *a = call->req->arena;
    const char *path, *host = url_host(a, call->url, &path), *region = NULL;
    char *cred = gw_arena_strdup(a, call->api_key), *secret, *token, amz_date[17],
         auth[GW_SIGV4_AUTH_MAX];
    time_t now = call->created > 0 ? (time_t)call->created : time(NULL);
    struct tm tm;
    int rc;

    secret = strchr(cred, ':');
    *secret++ = '\0';
    token = strchr(secret, ':');
    if (token != NULL)
        *token++ = '\0';
    gmtime_r(&now, &tm);
    strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);
    if (call->provider != NULL && call->gen != NULL)
        region = gw_gen_str(call->gen, call->provider->region);
    const char *headers[3] = {
        gw_arena_printf(a, "host:%s", host),
        gw_arena_printf(a, "x-amz-date:%s", amz_date),
        token != NULL ? gw_arena_printf(a, "x-amz-security-token:%s", token) : NULL,
    };
    struct gw_sigv4 k = {.access_key = cred,
                         .secret_key = secret,
                         .region = region ?: "us-east-1",
                         .service = "bedrock",
                         .amz_date = amz_date};
    size_t plen = strcspn(path, "?");
    rc =
        gw_worker_sigv4_sign(&k, "POST", plen > 0 ? gw_arena_strndup(a, path, plen) : "/",
                             path[plen] == '?' ? path + plen + 1 : NULL, headers,
                             token != NULL ? 3 : 2, call->body, call->body_len, auth, sizeof(auth));
    explicit_bzero(secret, strlen(secret));
    if (rc == 0)
        rc = gw_worker_prov_header_add(call, "x-amz-date: %s", amz_date);
    if (rc == 0 && token != NULL)
        rc = gw_worker_prov_header_add(call, "x-amz-security-token: %s", token);
    if (rc == 0)
        rc = gw_worker_prov_header_add(call, "Authorization: %s", auth);
    explicit_bzero(auth, sizeof(auth));
    if (token != NULL)
        explicit_bzero(token, strlen(token));
    return rc;
}

static int
bedrock_request(struct gw_call *call)
{
    struct gw_arena *a = call->req->arena;
    int rc;

    if (call->endpoint != GW_EP_CHAT)
        return GW_ENOENT; /* no embeddings */
    call->url = gw_arena_printf(a, "%s/model/%s/%s", call->base_url,
                                gw_worker_prov_path_escape(a, call->target_model),
                                call->stream ? "converse-stream" : "converse");
    if ((rc = gw_worker_prov_body_set(call, converse_body(call))) != 0)
        return rc;
    if (call->stream &&
        (rc = gw_worker_prov_header_add(call, "Accept: application/vnd.amazon.eventstream")) != 0)
        return rc;
    if (call->api_key == NULL)
        return 0;
    if (strchr(call->api_key, ':') == NULL)
        return gw_worker_prov_header_add(call, "Authorization: Bearer %s", call->api_key);
    return sign(call);
}

/* ------------------------------------------------------------- answer */

static const char *
finish_reason(const char *r)
{
    if (r == NULL)
        return "stop";
    if (strcmp(r, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(r, "max_tokens") == 0 || strcmp(r, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(r, "guardrail_intervened") == 0 || strcmp(r, "content_filtered") == 0)
        return "content_filter";
    return "stop";
}

static void
usage_read(struct json_object *u, int64_t *prompt, int64_t *completion, int64_t *cached)
{
    struct json_object *v;

    if (u == NULL)
        return;
    if ((v = gw_worker_prov_get(u, "inputTokens")) != NULL)
        *prompt = json_object_get_int64(v);
    if ((v = gw_worker_prov_get(u, "outputTokens")) != NULL)
        *completion = json_object_get_int64(v);
    if ((v = gw_worker_prov_get(u, "cacheReadInputTokens")) != NULL) {
        *cached = json_object_get_int64(v);
        *prompt += *cached;
    }
    if ((v = gw_worker_prov_get(u, "cacheWriteInputTokens")) != NULL)
        *prompt += json_object_get_int64(v);
}

static int
bedrock_response(struct gw_call *call, const char *body, size_t len, const char **out,
                 size_t *out_len)
{
    struct gw_arena *a = call->req->arena;
    struct json_object *o = gw_worker_prov_parse(body, len), *content;
    struct gw_worker_prov_answer ans = {0};
    struct gw_buf text = {0};
    int rc;

    if (o == NULL)
        return GW_EPROTO;
    ans.id = gw_arena_printf(a, "chatcmpl-%s", call->req->id);
    ans.model = call->target_model;
    content = gw_worker_prov_get(gw_worker_prov_get(gw_worker_prov_get(o, "output"), "message"),
                                 "content");
    if (content != NULL && !json_object_is_type(content, json_type_array)) {
        json_object_put(o);
        return GW_EPROTO; /* no Converse answer */
    }
    for (size_t i = 0; i < gw_worker_json_len(content); i++) {
        struct json_object *b = gw_worker_json_at(content, i), *tu;
        const char *t = gw_worker_prov_str(b, "text");
        if (t != NULL) {
            gw_buf_printf(&text, "%s", t);
        } else if ((tu = gw_worker_prov_get(b, "toolUse")) != NULL) {
            struct json_object *input = gw_worker_prov_get(tu, "input");
            if (ans.tool_calls == NULL)
                ans.tool_calls = json_object_new_array();
            json_object_array_add(
                ans.tool_calls,
                gw_worker_prov_tool_call(
                    gw_worker_prov_str(tu, "toolUseId") ?: "", gw_worker_prov_str(tu, "name") ?: "",
                    input != NULL ? json_object_to_json_string_ext(input, JSON_C_TO_STRING_PLAIN)
                                  : "{}"));
        }
    }
    ans.content = text.data != NULL        ? gw_arena_strndup(a, text.data, text.len)
                  : ans.tool_calls != NULL ? NULL
                                           : "";
    ans.finish_reason = finish_reason(gw_worker_prov_str(o, "stopReason"));
    usage_read(gw_worker_prov_get(o, "usage"), &ans.prompt_tokens, &ans.completion_tokens,
               &ans.cached_tokens);
    rc = gw_worker_prov_answer(call, &ans, out, out_len);
    gw_buf_free(&text);
    json_object_put(o);
    return rc;
}

/* The exception each status stands for, as the error code. */
static const char *
error_code(int status)
{
    switch (status) {
    case 400: return "validation_exception";
    case 403: return "access_denied_exception";
    case 404: return "resource_not_found_exception";
    case 408: return "model_timeout_exception";
    case 424: return "model_error_exception";
    case 429: return "throttling_exception";
    case 503: return "service_unavailable_exception";
    default: return status >= 500 ? "internal_server_exception" : "upstream_error";
    }
}

static int
bedrock_error(struct gw_call *call, int *status, const char *body, size_t len, const char **out,
              size_t *out_len)
{
    struct json_object *o = gw_worker_prov_parse(body, len);
    const char *msg = gw_worker_prov_str(o, "message") ?: gw_worker_prov_str(o, "Message");
    int rc = gw_worker_prov_error(call, gw_worker_prov_error_type(*status), error_code(*status),
                                  msg ?: "The upstream provider failed.", out, out_len);

    json_object_put(o);
    return rc;
}

/* ------------------------------------------------------------- stream */

static bool
is(const char *s, size_t len, const char *lit)
{
    return s != NULL && len == strlen(lit) && memcmp(s, lit, len) == 0;
}

static int
bedrock_event(struct gw_xstream *xs, const struct gw_evstream_msg *m)
{
    struct json_object *o = gw_worker_prov_parse(m->payload, m->payload_len), *v;
    int64_t index =
        (v = gw_worker_prov_get(o, "contentBlockIndex")) != NULL ? json_object_get_int64(v) : -1;
    int rc = 0;

    if (!is(m->message_type, m->message_type_len, "event")) {
        char code[64];
        snprintf(code, sizeof(code), "%.*s", (int)m->exception_type_len,
                 m->exception_type ? m->exception_type : "");
        rc = gw_worker_prov_chunk_error(
            xs, strstr(code, "hrottling") ? "rate_limit_error" : "upstream_error",
            code[0] ? code : "upstream_error",
            gw_worker_prov_str(o, "message") ?: "The stream failed.");
    } else if (is(m->event_type, m->event_type_len, "messageStart")) {
        rc = gw_worker_prov_chunk_role(xs);
    } else if (is(m->event_type, m->event_type_len, "contentBlockStart")) {
        struct json_object *tu = gw_worker_prov_get(gw_worker_prov_get(o, "start"), "toolUse");
        if (tu != NULL && index >= 0 && index < GW_XSTREAM_BLOCKS) {
            int k = xs->ntools++;
            xs->block_tool[index] = (int16_t)k;
            rc = gw_worker_prov_chunk_tool(xs, k, gw_worker_prov_str(tu, "toolUseId") ?: "",
                                           gw_worker_prov_str(tu, "name") ?: "", "", 0);
        }
    } else if (is(m->event_type, m->event_type_len, "contentBlockDelta")) {
        struct json_object *d = gw_worker_prov_get(o, "delta");
        const char *s;
        if ((s = gw_worker_prov_str(d, "text")) != NULL)
            rc = gw_worker_prov_chunk_text(xs, s, strlen(s));
        else if ((s = gw_worker_prov_str(gw_worker_prov_get(d, "toolUse"), "input")) != NULL &&
                 index >= 0 && index < GW_XSTREAM_BLOCKS && xs->block_tool[index] >= 0)
            rc = gw_worker_prov_chunk_tool(xs, xs->block_tool[index], NULL, NULL, s, strlen(s));
    } else if (is(m->event_type, m->event_type_len, "messageStop")) {
        xs->finish_reason = finish_reason(gw_worker_prov_str(o, "stopReason"));
        rc = gw_worker_prov_chunk_finish(xs);
    } else if (is(m->event_type, m->event_type_len, "metadata")) {
        usage_read(gw_worker_prov_get(o, "usage"), &xs->prompt_tokens, &xs->completion_tokens,
                   &xs->cached_tokens);
        rc = gw_worker_prov_chunk_end(xs);
    }
    json_object_put(o);
    return rc;
}

static int
bedrock_stream_feed(struct gw_xstream *xs, const char *data, size_t len)
{
    size_t off = 0;
    int rc;

    if ((rc = gw_buf_append(&xs->in, data, len)) != 0)
        return rc;
    while (rc == 0 && !xs->ended) {
        struct gw_evstream_msg m;
        long n = gw_worker_evstream_decode(xs->in.data + off, xs->in.len - off, &m);
        if (n == 0)
            break;
        if (n < 0) {
            rc = gw_worker_prov_chunk_error(xs, "upstream_error", "upstream_bad_response",
                                            "The upstream event stream is malformed.");
            break;
        }
        rc = bedrock_event(xs, &m);
        off += (size_t)n;
    }
    if (xs->ended)
        off = xs->in.len; /* the rest is not for the client */
    gw_buf_consume(&xs->in, off);
    return rc ?: gw_worker_prov_flush(xs);
}

/* The usage comes after messageStop; without it the answer is still whole. */
static int
bedrock_stream_finish(struct gw_xstream *xs)
{
    int rc = 0;

    if (!xs->ended && !xs->finished)
        return gw_worker_prov_flush(xs) ?: GW_EPROTO;
    if (!xs->ended)
        rc = gw_worker_prov_chunk_end(xs);
    return rc ?: gw_worker_prov_flush(xs);
}

const struct gw_provider_adapter gw_worker_provider_bedrock = {
    .type = "bedrock",
    .request = bedrock_request,
    .response = bedrock_response,
    .error = bedrock_error,
    .stream_feed = bedrock_stream_feed,
    .stream_finish = bedrock_stream_finish,
};
