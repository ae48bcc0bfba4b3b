/*
 * gemini.c - POST /v1beta/models/{model}:generateContent and
 * :streamGenerateContent?alt=sse in Gemini's format: the key in
 * x-goog-api-key; errors as {"error": {"code", "message", "status"}}; a
 * stream as one GenerateContentResponse per event, the last with the
 * finishReason.  See provider.c for what it answers.
 */
#include <stdio.h>
#include <string.h>

#include "tests/mock/mock.h"

static int
error_send(struct gw_mock_conn *c, int status, const char *message)
{
    const char *gstatus = status == 400   ? "INVALID_ARGUMENT"
                          : status == 401 ? "UNAUTHENTICATED"
                          : status == 403 ? "PERMISSION_DENIED"
                          : status == 404 ? "NOT_FOUND"
                          : status == 429 ? "RESOURCE_EXHAUSTED"
                          : status == 503 ? "UNAVAILABLE"
                                          : "INTERNAL";
    struct json_object *o = json_object_new_object(), *e = json_object_new_object();

    json_object_object_add(e, "code", json_object_new_int(status));
    json_object_object_add(e, "message", json_object_new_string(message));
    json_object_object_add(e, "status", json_object_new_string(gstatus));
    json_object_object_add(o, "error", e);
    return gw_mock_send_json(c, status, o);
}

static void
turn_read(struct json_object *req, struct gw_mock_turn *t)
{
    struct json_object *contents, *v, *parts, *tools, *decls;

    if (json_object_object_get_ex(req, "systemInstruction", &v) &&
        json_object_object_get_ex(v, "parts", &parts))
        t->prompt += gw_mock_content_words(parts);
    if (json_object_object_get_ex(req, "contents", &contents) &&
        json_object_is_type(contents, json_type_array)) {
        size_t n = json_object_array_length(contents);
        for (size_t i = 0; i < n; i++) {
            if (!json_object_object_get_ex(json_object_array_get_idx(contents, i), "parts", &parts))
                continue;
            t->prompt += gw_mock_content_words(parts);
            for (size_t j = 0; i == n - 1 && json_object_is_type(parts, json_type_array) &&
                               j < json_object_array_length(parts);
                 j++) {
                struct json_object *fr, *resp;
                if (json_object_object_get_ex(json_object_array_get_idx(parts, j),
                                              "functionResponse", &fr) &&
                    json_object_object_get_ex(fr, "response", &resp))
                    t->result = json_object_to_json_string_ext(resp, JSON_C_TO_STRING_PLAIN);
            }
        }
    }
    if (t->result == NULL && json_object_object_get_ex(req, "tools", &tools) &&
        json_object_is_type(tools, json_type_array) && json_object_array_length(tools) > 0 &&
        json_object_object_get_ex(json_object_array_get_idx(tools, 0), "functionDeclarations",
                                  &decls) &&
        json_object_is_type(decls, json_type_array) && json_object_array_length(decls) > 0 &&
        json_object_object_get_ex(json_object_array_get_idx(decls, 0), "name", &v))
        t->tool = json_object_get_string(v);
}

/* One GenerateContentResponse: parts (taken), finishReason or NULL, usage so far. */
static struct json_object *
response(const struct gw_mock_turn *t, struct json_object *parts, const char *finish, size_t out,
         unsigned long long id)
{
    struct json_object *o = json_object_new_object(), *cands = json_object_new_array(),
                       *cand = json_object_new_object(), *content = json_object_new_object(),
                       *u = json_object_new_object();
    char rid[64];

    json_object_object_add(content, "parts", parts);
    json_object_object_add(content, "role", json_object_new_string("model"));
    json_object_object_add(cand, "content", content);
    if (finish != NULL)
        json_object_object_add(cand, "finishReason", json_object_new_string(finish));
    json_object_object_add(cand, "index", json_object_new_int(0));
    json_object_array_add(cands, cand);
    json_object_object_add(o, "candidates", cands);
    json_object_object_add(u, "promptTokenCount", json_object_new_int64((int64_t)t->prompt));
    json_object_object_add(u, "candidatesTokenCount", json_object_new_int64((int64_t)out));
    json_object_object_add(u, "totalTokenCount", json_object_new_int64((int64_t)(t->prompt + out)));
    json_object_object_add(o, "usageMetadata", u);
    json_object_object_add(o, "modelVersion", json_object_new_string(t->model));
    snprintf(rid, sizeof(rid), "mock-%llu", id);
    json_object_object_add(o, "responseId", json_object_new_string(rid));
    return o;
}

static struct json_object *
text_parts(const char *text)
{
    struct json_object *parts = json_object_new_array(), *p = json_object_new_object();

    json_object_object_add(p, "text", json_object_new_string(text));
    json_object_array_add(parts, p);
    return parts;
}

static struct json_object *
call_parts(const char *tool)
{
    struct json_object *parts = json_object_new_array(), *p = json_object_new_object(),
                       *fc = json_object_new_object();

    json_object_object_add(fc, "name", json_object_new_string(tool));
    json_object_object_add(fc, "args", json_tokener_parse(GW_MOCK_TOOL_ARGS));
    json_object_object_add(p, "functionCall", fc);
    json_object_array_add(parts, p);
    return parts;
}

static int
answer_full(struct gw_mock_conn *c, const struct gw_mock_turn *t, unsigned long long id)
{
    struct gw_buf text = {0};
    struct json_object *o;

    if (t->tool != NULL) {
        o = response(t, call_parts(t->tool), "STOP", t->completion, id);
    } else {
        gw_mock_turn_text(t, &text);
        const char *s = text.data ? text.data : "";
        o = response(t, t->f.bad_shape ? json_object_new_string(s) : text_parts(s), "STOP",
                     t->completion, id);
    }
    gw_buf_free(&text);
    if (t->f.drop_after >= 0) {
        const char *s = json_object_to_json_string(o);
        int rc = gw_mock_respond_cut(c, s, strlen(s), t->f.drop_after);
        json_object_put(o);
        return rc;
    }
    return gw_mock_send_json(c, 200, o);
}

static int
answer_stream(struct gw_mock_conn *c, const struct gw_mock_turn *t, unsigned long long id)
{
    size_t n = t->tool != NULL ? 1 : gw_mock_turn_ntokens(t), nsent = 0;
    struct gw_buf tok = {0};
    int rc = 0;

    gw_mock_stream_begin(c);
    for (size_t i = 0; i < n; i++) {
        struct json_object *o;
        bool last = i + 1 == n;
        if ((long)i == t->f.drop_after) {
            gw_buf_free(&tok);
            return gw_mock_stream_drop(c);
        }
        tok.len = 0;
        if (t->tool != NULL) {
            o = response(t, call_parts(t->tool), "STOP", t->completion, id);
        } else {
            gw_mock_turn_token(t, i, &tok);
            o = response(t, text_parts(tok.data), last ? "STOP" : NULL,
                         last ? t->completion : i + 1, id);
        }
        if ((rc = gw_mock_send_event(c, &t->f, &nsent, NULL, o, last)) != 0)
            break;
    }
    gw_buf_free(&tok);
    return rc != 0 ? rc : gw_mock_stream_close(c);
}

int
gw_mock_gemini_handle(struct gw_mock_conn *c, const char *path, size_t plen)
{
    const char *key = gw_mock_header(c, "x-goog-api-key");
    const char *colon = memchr(path, ':', plen);
    struct gw_mock_turn t = {0};
    struct json_object *req = NULL, *v;
    char model[128];
    int rc;

    snprintf(model, sizeof(model), "%.*s", (int)(colon - path - 15), path + 15);
    t.model = model;
    if (gw_mock_require_key != NULL && (key == NULL || strcmp(key, gw_mock_require_key) != 0))
        return error_send(c, gw_mock_header(c, "authorization") ? 401 : 403,
                          "API key not valid. Please pass a valid API key.");
    bool stream =
        (size_t)(path + plen - colon) == 22 && memcmp(colon, ":streamGenerateContent", 22) == 0;
    if (!stream && ((size_t)(path + plen - colon) != 16 || memcmp(colon, ":generateContent", 16)))
        return error_send(c, 404, "Unknown method.");
    if (stream && (path[plen] != '?' || strstr(path + plen, "alt=sse") == NULL))
        return error_send(c, 400, "The mock streams only with alt=sse.");
    if ((rc = gw_mock_fault_parse(c, &t.f)) != 0)
        return rc > 0 ? 0 : rc;
    gw_mock_sleep_ms(t.f.delay_ms);
    if (t.f.status != 0) {
        struct gw_buf msg = {0};
        rc = gw_mock_fault_message(&t.f, &msg) != 0 ? GW_ENOMEM
                                                    : error_send(c, (int)t.f.status, msg.data);
        gw_buf_free(&msg);
        return rc;
    }
    if ((rc = gw_mock_body_json(c, &req)) != 0)
        return rc > 0 ? 0 : rc;
    if (!json_object_object_get_ex(req, "contents", &v) ||
        !json_object_is_type(v, json_type_array)) {
        rc = error_send(c, 400, "contents is not specified");
        goto done;
    }
    t.stream = stream;
    t.completion = (size_t)t.f.chunks;
    if (t.f.echo)
        t.echo = c->body.data;
    else
        turn_read(req, &t);
    if (t.prompt == 0)
        t.prompt = 1;
    unsigned long long id = gw_mock_next_id();
    rc = t.stream ? answer_stream(c, &t, id) : answer_full(c, &t, id);
done:
    json_object_put(req);
    return rc;
}
