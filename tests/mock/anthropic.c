/*
 * anthropic.c - POST /v1/messages in Anthropic's format: the key in
 * x-api-key, anthropic-version required, max_tokens required; errors as
 * {"type": "error", "error": {"type", "message"}} (529 overloaded_error);
 * a stream as message_start, content_block_start, ping,
 * content_block_delta (text_delta, input_json_delta), content_block_stop,
 * message_delta, message_stop.  See provider.c for what it answers.
 */
#include <stdio.h>
#include <string.h>

#include "tests/mock/mock.h"

static int
error_send(struct gw_mock_conn *c, int status, const char *message)
{
    const char *type = status == 400   ? "invalid_request_error"
                       : status == 401 ? "authentication_error"
                       : status == 403 ? "permission_error"
                       : status == 404 ? "not_found_error"
                       : status == 413 ? "request_too_large"
                       : status == 429 ? "rate_limit_error"
                       : status == 529 ? "overloaded_error"
                                       : "api_error";
    struct json_object *o = json_object_new_object(), *e = json_object_new_object();

    json_object_object_add(o, "type", json_object_new_string("error"));
    json_object_object_add(e, "type", json_object_new_string(type));
    json_object_object_add(e, "message", json_object_new_string(message));
    json_object_object_add(o, "error", e);
    return gw_mock_send_json(c, status, o);
}

/* Read what to answer from the request body. */
static void
turn_read(struct json_object *req, struct gw_mock_turn *t)
{
    struct json_object *msgs, *v, *tools;
    struct json_object *last = NULL;

    if (json_object_object_get_ex(req, "system", &v))
        t->prompt += gw_mock_content_words(v);
    if (json_object_object_get_ex(req, "messages", &msgs) &&
        json_object_is_type(msgs, json_type_array)) {
        size_t n = json_object_array_length(msgs);
        for (size_t i = 0; i < n; i++) {
            struct json_object *content;
            if (json_object_object_get_ex(json_object_array_get_idx(msgs, i), "content", &content))
                t->prompt += gw_mock_content_words(content);
        }
        if (n > 0)
            json_object_object_get_ex(json_object_array_get_idx(msgs, n - 1), "content", &last);
    }
    for (size_t i = 0; last != NULL && json_object_is_type(last, json_type_array) &&
                       i < json_object_array_length(last);
         i++) {
        struct json_object *b = json_object_array_get_idx(last, i), *type, *content;
        if (json_object_object_get_ex(b, "type", &type) &&
            strcmp(json_object_get_string(type), "tool_result") == 0 &&
            json_object_object_get_ex(b, "content", &content))
            t->result = json_object_get_string(content);
    }
    if (t->result == NULL && json_object_object_get_ex(req, "tools", &tools) &&
        json_object_is_type(tools, json_type_array) && json_object_array_length(tools) > 0 &&
        json_object_object_get_ex(json_object_array_get_idx(tools, 0), "name", &v))
        t->tool = json_object_get_string(v);
    if (t->prompt == 0)
        t->prompt = 1;
}

static struct json_object *
usage(size_t in, size_t out)
{
    struct json_object *u = json_object_new_object();

    json_object_object_add(u, "input_tokens", json_object_new_int64((int64_t)in));
    json_object_object_add(u, "output_tokens", json_object_new_int64((int64_t)out));
    return u;
}

static struct json_object *
tool_input(void)
{
    return json_tokener_parse(GW_MOCK_TOOL_ARGS);
}

static int
answer_full(struct gw_mock_conn *c, const struct gw_mock_turn *t, unsigned long long id)
{
    struct json_object *o = json_object_new_object(), *content = json_object_new_array(), *b;
    struct gw_buf text = {0};

    json_object_object_add(o, "id", json_object_new_string(""));
    json_object_object_add(o, "type", json_object_new_string("message"));
    json_object_object_add(o, "role", json_object_new_string("assistant"));
    json_object_object_add(o, "model", json_object_new_string(t->model));
    b = json_object_new_object();
    if (t->tool != NULL) {
        char tid[64];
        snprintf(tid, sizeof(tid), "toolu_mock_%llu", id);
        json_object_object_add(b, "type", json_object_new_string("tool_use"));
        json_object_object_add(b, "id", json_object_new_string(tid));
        json_object_object_add(b, "name", json_object_new_string(t->tool));
        json_object_object_add(b, "input", tool_input());
    } else {
        gw_mock_turn_text(t, &text);
        json_object_object_add(b, "type", json_object_new_string("text"));
        json_object_object_add(b, "text", json_object_new_string(text.data ? text.data : ""));
    }
    json_object_array_add(content, b);
    if (t->f.bad_shape) {
        json_object_put(content);
        content = json_object_new_string(text.data ? text.data : "");
    }
    json_object_object_add(o, "content", content);
    json_object_object_add(o, "stop_reason",
                           json_object_new_string(t->tool ? "tool_use" : "end_turn"));
    json_object_object_add(o, "stop_sequence", NULL);
    json_object_object_add(o, "usage", usage(t->prompt, t->completion));
    char mid[64];
    snprintf(mid, sizeof(mid), "msg_mock_%llu", id);
    json_object_object_add(o, "id", json_object_new_string(mid));
    gw_buf_free(&text);
    if (t->f.drop_after >= 0) {
        const char *s = json_object_to_json_string(o);
        int rc = gw_mock_respond_cut(c, s, strlen(s), t->f.drop_after);
        json_object_put(o);
        return rc;
    }
    return gw_mock_send_json(c, 200, o);
}

static struct json_object *
typed(const char *type)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "type", json_object_new_string(type));
    return o;
}

static int
answer_stream(struct gw_mock_conn *c, const struct gw_mock_turn *t, unsigned long long id)
{
    const struct gw_mock_fault *f = &t->f;
    struct json_object *o, *m, *b, *d;
    struct gw_buf tok = {0};
    size_t nsent = 0;
    char sid[64];
    int rc;

    gw_mock_stream_begin(c);
    o = typed("message_start");
    m = typed("message");
    snprintf(sid, sizeof(sid), "msg_mock_%llu", id);
    json_object_object_add(m, "id", json_object_new_string(sid));
    json_object_object_add(m, "role", json_object_new_string("assistant"));
    json_object_object_add(m, "model", json_object_new_string(t->model));
    json_object_object_add(m, "content", json_object_new_array());
    json_object_object_add(m, "stop_reason", NULL);
    json_object_object_add(m, "usage", usage(t->prompt, 1));
    json_object_object_add(o, "message", m);
    if ((rc = gw_mock_send_event(c, f, &nsent, "message_start", o, false)) != 0)
        return rc;

    o = typed("content_block_start");
    json_object_object_add(o, "index", json_object_new_int(0));
    if (t->tool != NULL) {
        snprintf(sid, sizeof(sid), "toolu_mock_%llu", id);
        b = typed("tool_use");
        json_object_object_add(b, "id", json_object_new_string(sid));
        json_object_object_add(b, "name", json_object_new_string(t->tool));
        json_object_object_add(b, "input", json_object_new_object());
    } else {
        b = typed("text");
        json_object_object_add(b, "text", json_object_new_string(""));
    }
    json_object_object_add(o, "content_block", b);
    if ((rc = gw_mock_send_event(c, f, &nsent, "content_block_start", o, false)) != 0 ||
        (rc = gw_mock_send_event(c, f, &nsent, "ping", typed("ping"), false)) != 0)
        return rc;

    /* The tool's arguments in two pieces, the text token by token. */
    size_t n = t->tool != NULL ? 2 : gw_mock_turn_ntokens(t);
    for (size_t i = 0; i < n; i++) {
        if ((long)i == f->drop_after)
            goto drop;
        o = typed("content_block_delta");
        json_object_object_add(o, "index", json_object_new_int(0));
        tok.len = 0;
        if (t->tool != NULL) {
            size_t half = sizeof(GW_MOCK_TOOL_ARGS) / 2;
            d = typed("input_json_delta");
            json_object_object_add(
                d, "partial_json",
                json_object_new_string_len(GW_MOCK_TOOL_ARGS + (i ? half : 0),
                                           (int)(i ? sizeof(GW_MOCK_TOOL_ARGS) - 1 - half : half)));
        } else {
            gw_mock_turn_token(t, i, &tok);
            d = typed("text_delta");
            json_object_object_add(d, "text", json_object_new_string(tok.data));
        }
        json_object_object_add(o, "delta", d);
        if ((rc = gw_mock_send_event(c, f, &nsent, "content_block_delta", o, false)) != 0)
            goto out;
    }
    if (f->drop_after == (long)n)
        goto drop;
    o = typed("content_block_stop");
    json_object_object_add(o, "index", json_object_new_int(0));
    if ((rc = gw_mock_send_event(c, f, &nsent, "content_block_stop", o, false)) != 0)
        goto out;
    o = typed("message_delta");
    d = json_object_new_object();
    json_object_object_add(d, "stop_reason",
                           json_object_new_string(t->tool ? "tool_use" : "end_turn"));
    json_object_object_add(d, "stop_sequence", NULL);
    json_object_object_add(o, "delta", d);
    m = json_object_new_object();
    json_object_object_add(m, "output_tokens", json_object_new_int64((int64_t)t->completion));
    json_object_object_add(o, "usage", m);
    if ((rc = gw_mock_send_event(c, f, &nsent, "message_delta", o, false)) != 0 ||
        (rc = gw_mock_send_event(c, f, &nsent, "message_stop", typed("message_stop"), true)) != 0)
        goto out;
    rc = gw_mock_stream_close(c);
out:
    gw_buf_free(&tok);
    return rc;
drop:
    gw_buf_free(&tok);
    return gw_mock_stream_drop(c);
}

int
gw_mock_anthropic_handle(struct gw_mock_conn *c, const char *path, size_t plen)
{
    const char *key = gw_mock_header(c, "x-api-key");
    struct gw_mock_turn t = {.model = "claude-mock"};
    struct json_object *req = NULL, *v;
    int rc;

    (void)path, (void)plen;
    if (gw_mock_require_key != NULL && (key == NULL || strcmp(key, gw_mock_require_key) != 0))
        return error_send(c, 401, "invalid x-api-key");
    if (gw_mock_header(c, "anthropic-version") == NULL)
        return error_send(c, 400, "anthropic-version: header is required");
    if ((rc = gw_mock_fault_parse(c, &t.f)) != 0)
        return rc > 0 ? 0 : rc;
    gw_mock_sleep_ms(t.f.delay_ms);
    if (t.f.status != 0) {
        struct gw_buf msg = {0};
        rc = gw_mock_fault_message(&t.f, &msg) != 0
                 ? GW_ENOMEM
                 : error_send(c, (int)t.f.status,
                              t.f.status == 529 && t.f.error_text == 0 ? "Overloaded" : msg.data);
        gw_buf_free(&msg);
        return rc;
    }
    if ((rc = gw_mock_body_json(c, &req)) != 0)
        return rc > 0 ? 0 : rc;
    if (!json_object_object_get_ex(req, "max_tokens", &v) ||
        !json_object_is_type(v, json_type_int)) {
        rc = error_send(c, 400, "max_tokens: Field required");
        goto done;
    }
    if (!json_object_object_get_ex(req, "messages", &v) ||
        !json_object_is_type(v, json_type_array)) {
        rc = error_send(c, 400, "messages: Field required");
        goto done;
    }
    if (json_object_object_get_ex(req, "model", &v))
        t.model = json_object_get_string(v);
    t.stream = json_object_object_get_ex(req, "stream", &v) && json_object_get_boolean(v);
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
