/*
 * gemini.c - Google's Gemini API: POST {base}/models/{model}:generateContent,
 * or :streamGenerateContent?alt=sse for a stream, key in x-goog-api-key.
 *
 * Request: system and developer messages become systemInstruction; user
 * and assistant ("model") turns become contents of parts (text, inline
 * images from data: URLs, file URIs from others), an assistant's
 * tool_calls become functionCall parts and "tool" messages functionResponse
 * parts (named after the call they answer); tools become
 * functionDeclarations, tool_choice the functionCallingConfig, and the
 * sampling settings the generationConfig.
 *
 * Answer: the first candidate's text parts become the content, its
 * functionCall parts tool_calls, finishReason the finish_reason and
 * usageMetadata the usage.  Each event of a stream is a whole
 * GenerateContentResponse; its parts become chunks, and the stream ends
 * when the transfer does.
 */
#include <stdio.h>
#include <string.h>

#include "worker/providers/providers.h"

/* ------------------------------------------------------------ request */

/* Gemini's schema is OpenAPI's subset: drop what it refuses, at any depth. */
static void
schema_clean(struct json_object *o)
{
    if (json_object_is_type(o, json_type_array)) {
        for (size_t i = 0; i < gw_worker_json_len(o); i++)
            schema_clean(gw_worker_json_at(o, i));
        return;
    }
    if (!json_object_is_type(o, json_type_object))
        return;
    json_object_object_del(o, "$schema");
    json_object_object_del(o, "additionalProperties");
    json_object_object_foreach(o, k, v)
    {
        (void)k;
        schema_clean(v);
    }
}

static struct json_object *
text_part(const char *text)
{
    struct json_object *p = json_object_new_object();

    json_object_object_add(p, "text", json_object_new_string(text));
    return p;
}

/* Append part to the last content when it has role, else to a new one. */
static void
part_add(struct json_object *contents, const char *role, struct json_object *part)
{
    gw_worker_prov_turn_add(contents, role, "parts", part);
}

/* An image as a part: inline bytes for a data URL, else the file's URI. */
static struct json_object *
image_part(struct gw_arena *a, const char *url)
{
    struct json_object *p = json_object_new_object(), *d = json_object_new_object();
    const char *media, *data;

    if (gw_worker_prov_data_url(a, url, &media, &data)) {
        json_object_object_add(d, "mimeType", json_object_new_string(media));
        json_object_object_add(d, "data", json_object_new_string(data));
        json_object_object_add(p, "inlineData", d);
    } else {
        json_object_object_add(d, "fileUri", json_object_new_string(url));
        json_object_object_add(p, "fileData", d);
    }
    return p;
}

static void
content_add(struct gw_arena *a, struct json_object *contents, const char *role,
            struct json_object *content)
{
    gw_worker_prov_content_add(a, contents, role, "parts", content, text_part, image_part);
}

/* The name of the function whose call id the tool message answers. */
static const char *
call_name(struct json_object *msgs, const char *id)
{
    for (size_t i = 0; id != NULL && i < gw_worker_json_len(msgs); i++) {
        struct json_object *calls = gw_worker_prov_get(gw_worker_json_at(msgs, i), "tool_calls");
        for (size_t j = 0; j < gw_worker_json_len(calls); j++) {
            struct json_object *tc = gw_worker_json_at(calls, j);
            const char *tid = gw_worker_prov_str(tc, "id");
            if (tid != NULL && strcmp(tid, id) == 0)
                return gw_worker_prov_str(gw_worker_prov_get(tc, "function"), "name");
        }
    }
    return NULL;
}

static struct json_object *
tools_convert(struct json_object *tools)
{
    struct json_object *decls = json_object_new_array(), *wrap, *out;

    for (size_t i = 0; i < gw_worker_json_len(tools); i++) {
        struct json_object *fn = gw_worker_prov_get(gw_worker_json_at(tools, i), "function");
        struct json_object *d, *params;
        if (gw_worker_prov_str(fn, "name") == NULL)
            continue;
        d = json_object_new_object();
        json_object_object_add(d, "name", json_object_new_string(gw_worker_prov_str(fn, "name")));
        if (gw_worker_prov_str(fn, "description") != NULL)
            json_object_object_add(d, "description",
                                   json_object_new_string(gw_worker_prov_str(fn, "description")));
        if ((params = gw_worker_prov_get(fn, "parameters")) != NULL) {
            params = gw_worker_prov_copy(params);
            schema_clean(params);
            json_object_object_add(d, "parameters", params);
        }
        json_object_array_add(decls, d);
    }
    wrap = json_object_new_object();
    json_object_object_add(wrap, "functionDeclarations", decls);
    out = json_object_new_array();
    json_object_array_add(out, wrap);
    return out;
}

static struct json_object *
tool_config(struct json_object *tc)
{
    struct json_object *cfg, *fcc;
    const char *mode = "AUTO", *name = NULL;

    if (tc == NULL)
        return NULL;
    if (json_object_is_type(tc, json_type_string)) {
        const char *s = json_object_get_string(tc);
        mode = strcmp(s, "required") == 0 ? "ANY" : strcmp(s, "none") == 0 ? "NONE" : "AUTO";
    } else if ((name = gw_worker_prov_str(gw_worker_prov_get(tc, "function"), "name")) != NULL) {
        mode = "ANY";
    }
    fcc = json_object_new_object();
    json_object_object_add(fcc, "mode", json_object_new_string(mode));
    if (name != NULL) {
        struct json_object *names = json_object_new_array();
        json_object_array_add(names, json_object_new_string(name));
        json_object_object_add(fcc, "allowedFunctionNames", names);
    }
    cfg = json_object_new_object();
    json_object_object_add(cfg, "functionCallingConfig", fcc);
    return cfg;
}

static struct json_object *
generation_config(struct json_object *req)
{
    struct json_object *g = json_object_new_object(), *v;
    int64_t max = gw_worker_prov_max_tokens(req);
    const char *rf = gw_worker_prov_str(gw_worker_prov_get(req, "response_format"), "type");

    if ((v = gw_worker_prov_get(req, "temperature")) != NULL &&
        !json_object_is_type(v, json_type_null))
        json_object_object_add(g, "temperature", gw_worker_prov_copy(v));
    if ((v = gw_worker_prov_get(req, "top_p")) != NULL && !json_object_is_type(v, json_type_null))
        json_object_object_add(g, "topP", gw_worker_prov_copy(v));
    if (max > 0)
        json_object_object_add(g, "maxOutputTokens", json_object_new_int64(max));
    if ((v = gw_worker_prov_get(req, "stop")) != NULL) {
        struct json_object *seqs = json_object_new_array();
        if (json_object_is_type(v, json_type_string))
            json_object_array_add(seqs, json_object_new_string(json_object_get_string(v)));
        else if (json_object_is_type(v, json_type_array))
            for (size_t i = 0; i < gw_worker_json_len(v); i++)
                json_object_array_add(seqs, gw_worker_prov_copy(gw_worker_json_at(v, i)));
        json_object_object_add(g, "stopSequences", seqs);
    }
    if ((v = gw_worker_prov_get(req, "seed")) != NULL && json_object_is_type(v, json_type_int))
        json_object_object_add(g, "seed", gw_worker_prov_copy(v));
    if (rf != NULL && (strcmp(rf, "json_object") == 0 || strcmp(rf, "json_schema") == 0))
        json_object_object_add(g, "responseMimeType", json_object_new_string("application/json"));
    if (json_object_object_length(g) == 0) {
        json_object_put(g);
        return NULL;
    }
    return g;
}

static int
gemini_request(struct gw_call *call)
{
    struct gw_arena *a = call->req->arena;
    struct json_object *req = gw_worker_call_json(call), *out, *contents, *v;
    struct json_object *msgs = gw_worker_prov_get(req, "messages");
    struct gw_buf system = {0};
    int rc;

    if (call->endpoint != GW_EP_CHAT)
        return GW_ENOENT; /* no embeddings */
    out = json_object_new_object();
    contents = json_object_new_array();
    for (size_t i = 0; i < gw_worker_json_len(msgs); i++) {
        struct json_object *m = gw_worker_json_at(msgs, i);
        const char *role = gw_worker_prov_str(m, "role");
        struct json_object *content = gw_worker_prov_get(m, "content");
        if (role == NULL)
            continue;
        if (strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) {
            const char *text = gw_worker_prov_content_text(a, content);
            if (text != NULL && text[0] != '\0')
                gw_buf_printf(&system, "%s%s", system.len > 0 ? "\n\n" : "", text);
        } else if (strcmp(role, "user") == 0) {
            content_add(a, contents, "user", content);
        } else if (strcmp(role, "assistant") == 0) {
            struct json_object *calls = gw_worker_prov_get(m, "tool_calls");
            content_add(a, contents, "model", content);
            for (size_t j = 0; j < gw_worker_json_len(calls); j++) {
                struct json_object *fn =
                    gw_worker_prov_get(gw_worker_json_at(calls, j), "function");
                const char *args = gw_worker_prov_str(fn, "arguments");
                struct json_object *p = json_object_new_object(), *fc = json_object_new_object();
                struct json_object *parsed = args ? gw_worker_prov_parse(args, strlen(args)) : NULL;
                json_object_object_add(
                    fc, "name", json_object_new_string(gw_worker_prov_str(fn, "name") ?: ""));
                json_object_object_add(fc, "args", parsed ?: json_object_new_object());
                json_object_object_add(p, "functionCall", fc);
                part_add(contents, "model", p);
            }
        } else if (strcmp(role, "tool") == 0) {
            const char *text = gw_worker_prov_content_text(a, content) ?: "";
            const char *name = call_name(msgs, gw_worker_prov_str(m, "tool_call_id"));
            struct json_object *p = json_object_new_object(), *fr = json_object_new_object();
            struct json_object *resp = gw_worker_prov_parse(text, strlen(text));
            if (resp == NULL) {
                resp = json_object_new_object();
                json_object_object_add(resp, "content", json_object_new_string(text));
            }
            json_object_object_add(fr, "name", json_object_new_string(name ?: "function"));
            json_object_object_add(fr, "response", resp);
            json_object_object_add(p, "functionResponse", fr);
            part_add(contents, "user", p);
        }
    }
    json_object_object_add(out, "contents", contents);
    if (system.len > 0) {
        struct json_object *si = json_object_new_object(), *parts = json_object_new_array();
        json_object_array_add(parts, text_part(system.data));
        json_object_object_add(si, "parts", parts);
        json_object_object_add(out, "systemInstruction", si);
    }
    gw_buf_free(&system);
    if ((v = gw_worker_prov_get(req, "tools")) != NULL && json_object_is_type(v, json_type_array) &&
        gw_worker_json_len(v) > 0) {
        json_object_object_add(out, "tools", tools_convert(v));
        if ((v = tool_config(gw_worker_prov_get(req, "tool_choice"))) != NULL)
            json_object_object_add(out, "toolConfig", v);
    }
    if ((v = generation_config(req)) != NULL)
        json_object_object_add(out, "generationConfig", v);

    call->url = gw_arena_printf(a, "%s/models/%s:%s", call->base_url,
                                gw_worker_prov_path_escape(a, call->target_model),
                                call->stream ? "streamGenerateContent?alt=sse" : "generateContent");
    if ((rc = gw_worker_prov_body_set(call, out)) != 0)
        return rc;
    if (call->api_key != NULL)
        return gw_worker_prov_header_add(call, "x-goog-api-key: %s", call->api_key);
    return 0;
}

/* ------------------------------------------------------------- answer */

static const char *
finish_reason(const char *r, bool tools)
{
    if (r == NULL)
        return tools ? "tool_calls" : "stop";
    if (strcmp(r, "MAX_TOKENS") == 0)
        return "length";
    if (strcmp(r, "SAFETY") == 0 || strcmp(r, "RECITATION") == 0 || strcmp(r, "BLOCKLIST") == 0 ||
        strcmp(r, "PROHIBITED_CONTENT") == 0 || strcmp(r, "SPII") == 0 ||
        strcmp(r, "IMAGE_SAFETY") == 0)
        return "content_filter";
    return tools ? "tool_calls" : "stop";
}

static void
usage_read(struct json_object *u, int64_t *prompt, int64_t *completion, int64_t *cached)
{
    struct json_object *v;

    if (u == NULL)
        return;
    if ((v = gw_worker_prov_get(u, "promptTokenCount")) != NULL)
        *prompt = json_object_get_int64(v);
    /* Thinking is output the provider bills. */
    *completion = 0;
    if ((v = gw_worker_prov_get(u, "candidatesTokenCount")) != NULL)
        *completion = json_object_get_int64(v);
    if ((v = gw_worker_prov_get(u, "thoughtsTokenCount")) != NULL)
        *completion += json_object_get_int64(v);
    if ((v = gw_worker_prov_get(u, "cachedContentTokenCount")) != NULL)
        *cached = json_object_get_int64(v);
}

/* A call id for a functionCall that has none of its own. */
static const char *
call_id(struct gw_arena *a, struct json_object *fc, int i)
{
    const char *id = gw_worker_prov_str(fc, "id");

    return id != NULL ? id : gw_arena_printf(a, "call_%d", i);
}

static int
gemini_response(struct gw_call *call, const char *body, size_t len, const char **out,
                size_t *out_len)
{
    struct gw_arena *a = call->req->arena;
    struct json_object *o = gw_worker_prov_parse(body, len);
    struct json_object *cands = gw_worker_prov_get(o, "candidates"), *cand = NULL, *parts;
    struct gw_worker_prov_answer ans = {0};
    struct gw_buf text = {0};
    int rc;

    if (o == NULL)
        return GW_EPROTO;
    if (gw_worker_json_len(cands) > 0)
        cand = gw_worker_json_at(cands, 0);
    ans.id = gw_arena_printf(a, "chatcmpl-%s", gw_worker_prov_str(o, "responseId") ?: "gemini");
    ans.model = gw_worker_prov_str(o, "modelVersion") ?: call->target_model;
    parts = gw_worker_prov_get(gw_worker_prov_get(cand, "content"), "parts");
    if (parts != NULL && !json_object_is_type(parts, json_type_array)) {
        json_object_put(o);
        return GW_EPROTO; /* no GenerateContentResponse */
    }
    for (size_t i = 0; i < gw_worker_json_len(parts); i++) {
        struct json_object *p = gw_worker_json_at(parts, i), *fc;
        const char *t = gw_worker_prov_str(p, "text");
        struct json_object *thought = gw_worker_prov_get(p, "thought");
        if (t != NULL && !(thought != NULL && json_object_get_boolean(thought))) {
            gw_buf_printf(&text, "%s", t);
        } else if ((fc = gw_worker_prov_get(p, "functionCall")) != NULL) {
            struct json_object *args = gw_worker_prov_get(fc, "args");
            if (ans.tool_calls == NULL)
                ans.tool_calls = json_object_new_array();
            json_object_array_add(
                ans.tool_calls,
                gw_worker_prov_tool_call(
                    call_id(a, fc, (int)gw_worker_json_len(ans.tool_calls)),
                    gw_worker_prov_str(fc, "name") ?: "",
                    args != NULL ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN)
                                 : "{}"));
        }
    }
    ans.content = text.data != NULL        ? gw_arena_strndup(a, text.data, text.len)
                  : ans.tool_calls != NULL ? NULL
                                           : "";
    ans.finish_reason =
        cand == NULL && gw_worker_prov_get(o, "promptFeedback") != NULL
            ? "content_filter"
            : finish_reason(gw_worker_prov_str(cand, "finishReason"), ans.tool_calls != NULL);
    usage_read(gw_worker_prov_get(o, "usageMetadata"), &ans.prompt_tokens, &ans.completion_tokens,
               &ans.cached_tokens);
    rc = gw_worker_prov_answer(call, &ans, out, out_len);
    gw_buf_free(&text);
    json_object_put(o);
    return rc;
}

/* Google's status names as OpenAI's error types. */
static const char *
error_type(const char *status, int http)
{
    if (status == NULL)
        return gw_worker_prov_error_type(http);
    if (strcmp(status, "UNAUTHENTICATED") == 0)
        return "authentication_error";
    if (strcmp(status, "PERMISSION_DENIED") == 0)
        return "permission_error";
    if (strcmp(status, "RESOURCE_EXHAUSTED") == 0)
        return "rate_limit_error";
    if (strcmp(status, "INVALID_ARGUMENT") == 0 || strcmp(status, "NOT_FOUND") == 0 ||
        strcmp(status, "FAILED_PRECONDITION") == 0)
        return "invalid_request_error";
    return gw_worker_prov_error_type(http);
}

static int
gemini_error(struct gw_call *call, int *status, const char *body, size_t len, const char **out,
             size_t *out_len)
{
    struct json_object *o = gw_worker_prov_parse(body, len);
    struct json_object *e = gw_worker_prov_get(o, "error");
    const char *gstatus = gw_worker_prov_str(e, "status");
    char code[64];
    int rc;

    /* The code is Google's status in OpenAI's lower case. */
    snprintf(code, sizeof(code), "%s", gstatus ?: "upstream_error");
    for (char *c = code; *c; c++)
        *c = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
    rc = gw_worker_prov_error(call, error_type(gstatus, *status), code,
                              gw_worker_prov_str(e, "message") ?: "The upstream provider failed.",
                              out, out_len);
    json_object_put(o);
    return rc;
}

/* ------------------------------------------------------------- stream */

static int
gemini_event(struct gw_xstream *xs, const char *event, const char *data, size_t len)
{
    struct gw_arena *a = xs->call->req->arena;
    struct json_object *o = gw_worker_prov_parse(data, len), *cands, *cand = NULL, *parts, *e;
    const char *fr;
    int rc = 0;

    (void)event;
    if (o == NULL)
        return 0;
    if ((e = gw_worker_prov_get(o, "error")) != NULL) {
        rc = gw_worker_prov_chunk_error(xs, error_type(gw_worker_prov_str(e, "status"), 502),
                                        "upstream_error",
                                        gw_worker_prov_str(e, "message") ?: "The stream failed.");
        json_object_put(o);
        return rc;
    }
    if (!xs->started) {
        xs->id = gw_arena_printf(a, "chatcmpl-%s", gw_worker_prov_str(o, "responseId") ?: "gemini");
        if (gw_worker_prov_str(o, "modelVersion") != NULL)
            xs->model = gw_arena_strdup(a, gw_worker_prov_str(o, "modelVersion"));
        rc = gw_worker_prov_chunk_role(xs);
    }
    cands = gw_worker_prov_get(o, "candidates");
    if (gw_worker_json_len(cands) > 0)
        cand = gw_worker_json_at(cands, 0);
    parts = gw_worker_prov_get(gw_worker_prov_get(cand, "content"), "parts");
    for (size_t i = 0; rc == 0 && i < gw_worker_json_len(parts); i++) {
        struct json_object *p = gw_worker_json_at(parts, i), *fc;
        const char *t = gw_worker_prov_str(p, "text");
        struct json_object *thought = gw_worker_prov_get(p, "thought");
        if (t != NULL && !(thought != NULL && json_object_get_boolean(thought))) {
            rc = gw_worker_prov_chunk_text(xs, t, strlen(t));
        } else if ((fc = gw_worker_prov_get(p, "functionCall")) != NULL) {
            struct json_object *args = gw_worker_prov_get(fc, "args");
            const char *s =
                args != NULL ? json_object_to_json_string_ext(args, JSON_C_TO_STRING_PLAIN) : "{}";
            int k = xs->ntools++;
            rc = gw_worker_prov_chunk_tool(xs, k, call_id(a, fc, k),
                                           gw_worker_prov_str(fc, "name") ?: "", s, strlen(s));
        }
    }
    if ((fr = gw_worker_prov_str(cand, "finishReason")) != NULL)
        xs->finish_reason = finish_reason(fr, xs->saw_tool);
    usage_read(gw_worker_prov_get(o, "usageMetadata"), &xs->prompt_tokens, &xs->completion_tokens,
               &xs->cached_tokens);
    json_object_put(o);
    return rc;
}

static int
gemini_stream_feed(struct gw_xstream *xs, const char *data, size_t len)
{
    return gw_worker_prov_sse_feed(xs, data, len, gemini_event);
}

/* Gemini has no last event: the stream is whole when a finishReason came. */
static int
gemini_stream_finish(struct gw_xstream *xs)
{
    int rc = 0;

    if (!xs->ended && xs->finish_reason == NULL)
        return gw_worker_prov_flush(xs) ?: GW_EPROTO;
    if (!xs->ended)
        rc = gw_worker_prov_chunk_end(xs);
    return rc ?: gw_worker_prov_flush(xs);
}

const struct gw_provider_adapter gw_worker_provider_gemini = {
    .type = "gemini",
    .request = gemini_request,
    .response = gemini_response,
    .error = gemini_error,
    .stream_feed = gemini_stream_feed,
    .stream_finish = gemini_stream_finish,
};
