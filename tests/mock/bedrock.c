/*
 * bedrock.c - POST /model/{id}/converse and /converse-stream in Bedrock's
 * Converse format.  With --aws-key the request must carry a valid AWS
 * Signature V4 of that key (checked over the headers it names, the path
 * as sent and the body); else with --require-key a Bedrock API key as a
 * bearer token.  Errors as {"message"} with x-amzn-ErrorType; a stream in
 * AWS's binary event stream: messageStart, contentBlockStart,
 * contentBlockDelta, contentBlockStop, messageStop, metadata.  See
 * provider.c for what it answers.
 */
#include <stdio.h>
#include <string.h>

#include "tests/mock/mock.h"
#include "worker/worker.h"

static int
error_send(struct gw_mock_conn *c, int status, const char *message)
{
    const char *type = status == 400   ? "ValidationException"
                       : status == 403 ? "AccessDeniedException"
                       : status == 404 ? "ResourceNotFoundException"
                       : status == 429 ? "ThrottlingException"
                       : status == 503 ? "ServiceUnavailableException"
                                       : "InternalServerException";
    char extra[96];
    struct json_object *o = json_object_new_object();
    size_t len;

    json_object_object_add(o, "message", json_object_new_string(message));
    snprintf(extra, sizeof(extra), "x-amzn-ErrorType: %s\r\n", type);
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    int rc = gw_mock_respond(c, status, extra, s, len);
    json_object_put(o);
    return rc;
}

/* The value after "name=" in an Authorization header, up to ',' or the end. */
static bool
auth_field(const char *auth, const char *name, char *out, size_t size)
{
    const char *p = strstr(auth, name);

    if (p == NULL)
        return false;
    p += strlen(name);
    size_t n = strcspn(p, ",");
    if (n >= size)
        return false;
    memcpy(out, p, n);
    out[n] = '\0';
    return true;
}

/* Is the request signed with gw_mock_aws_key?  Recomputed from what came. */
static bool
signature_ok(struct gw_mock_conn *c)
{
    const char *auth = gw_mock_header(c, "authorization"), *date = gw_mock_header(c, "x-amz-date");
    char cred[256], signed_headers[256], id[128], want[GW_SIGV4_AUTH_MAX];
    char *f[5] = {0}, *save = NULL, *headers[16];
    size_t nh = 0, plen;
    const char *path = gw_mock_path(c, &plen);
    bool ok = false;

    if (auth == NULL || date == NULL || strncmp(auth, "AWS4-HMAC-SHA256 ", 17) != 0 ||
        !auth_field(auth, "Credential=", cred, sizeof(cred)) ||
        !auth_field(auth, "SignedHeaders=", signed_headers, sizeof(signed_headers)))
        return false;
    f[0] = strtok_r(cred, "/", &save);
    for (int i = 1; i < 5; i++)
        f[i] = strtok_r(NULL, "/", &save);
    snprintf(id, sizeof(id), "%.*s", (int)strcspn(gw_mock_aws_key, ":"), gw_mock_aws_key);
    if (f[4] == NULL || strcmp(f[0], id) != 0 || strchr(gw_mock_aws_key, ':') == NULL)
        return false;
    for (char *s2 = NULL, *h = strtok_r(signed_headers, ";", &s2); h != NULL && nh < 16;
         h = strtok_r(NULL, ";", &s2)) {
        const char *v = gw_mock_header(c, h);
        if (v == NULL)
            goto out;
        headers[nh] = NULL;
        if (asprintf(&headers[nh], "%s:%s", h, v) < 0)
            goto out;
        nh++;
    }
    char *p = strndup(path, plen);
    struct gw_sigv4 k = {.access_key = id,
                         .secret_key = strchr(gw_mock_aws_key, ':') + 1,
                         .region = f[2],
                         .service = f[3],
                         .amz_date = date};
    ok = p != NULL &&
         gw_worker_sigv4_sign(&k, "POST", p, path[plen] == '?' ? path + plen + 1 : NULL,
                              (const char *const *)headers, nh, c->body.data ? c->body.data : "",
                              c->body.len, want, sizeof(want)) == 0 &&
         strcmp(want, auth) == 0;
    free(p);
out:
    for (size_t i = 0; i < nh; i++)
        free(headers[i]);
    return ok;
}

static bool
auth_ok(struct gw_mock_conn *c)
{
    const char *h = gw_mock_header(c, "authorization");

    if (gw_mock_aws_key != NULL)
        return signature_ok(c);
    if (gw_mock_require_key == NULL)
        return true;
    return h != NULL && strncmp(h, "Bearer ", 7) == 0 && strcmp(h + 7, gw_mock_require_key) == 0;
}

static void
turn_read(struct json_object *req, struct gw_mock_turn *t)
{
    struct json_object *msgs, *v, *tc, *tools, *spec;

    if (json_object_object_get_ex(req, "system", &v))
        t->prompt += gw_mock_content_words(v);
    if (json_object_object_get_ex(req, "messages", &msgs) &&
        json_object_is_type(msgs, json_type_array)) {
        size_t n = json_object_array_length(msgs);
        for (size_t i = 0; i < n; i++) {
            struct json_object *content;
            if (!json_object_object_get_ex(json_object_array_get_idx(msgs, i), "content", &content))
                continue;
            t->prompt += gw_mock_content_words(content);
            for (size_t j = 0; i == n - 1 && json_object_is_type(content, json_type_array) &&
                               j < json_object_array_length(content);
                 j++) {
                struct json_object *tr, *parts, *text;
                if (json_object_object_get_ex(json_object_array_get_idx(content, j), "toolResult",
                                              &tr) &&
                    json_object_object_get_ex(tr, "content", &parts) &&
                    json_object_array_length(parts) > 0 &&
                    json_object_object_get_ex(json_object_array_get_idx(parts, 0), "text", &text))
                    t->result = json_object_get_string(text);
            }
        }
    }
    if (t->result == NULL && json_object_object_get_ex(req, "toolConfig", &tc) &&
        json_object_object_get_ex(tc, "tools", &tools) &&
        json_object_is_type(tools, json_type_array) && json_object_array_length(tools) > 0 &&
        json_object_object_get_ex(json_object_array_get_idx(tools, 0), "toolSpec", &spec) &&
        json_object_object_get_ex(spec, "name", &v))
        t->tool = json_object_get_string(v);
}

static struct json_object *
usage(size_t in, size_t out)
{
    struct json_object *u = json_object_new_object();

    json_object_object_add(u, "inputTokens", json_object_new_int64((int64_t)in));
    json_object_object_add(u, "outputTokens", json_object_new_int64((int64_t)out));
    json_object_object_add(u, "totalTokens", json_object_new_int64((int64_t)(in + out)));
    return u;
}

static int
answer_full(struct gw_mock_conn *c, const struct gw_mock_turn *t, unsigned long long id)
{
    struct json_object *o = json_object_new_object(), *out = json_object_new_object(),
                       *msg = json_object_new_object(), *content = json_object_new_array(),
                       *b = json_object_new_object();
    struct gw_buf text = {0};

    if (t->tool != NULL) {
        struct json_object *tu = json_object_new_object();
        char tid[64];
        snprintf(tid, sizeof(tid), "tooluse_mock_%llu", id);
        json_object_object_add(tu, "toolUseId", json_object_new_string(tid));
        json_object_object_add(tu, "name", json_object_new_string(t->tool));
        json_object_object_add(tu, "input", json_tokener_parse(GW_MOCK_TOOL_ARGS));
        json_object_object_add(b, "toolUse", tu);
    } else {
        gw_mock_turn_text(t, &text);
        json_object_object_add(b, "text", json_object_new_string(text.data ? text.data : ""));
    }
    json_object_array_add(content, b);
    if (t->f.bad_shape) {
        json_object_put(content);
        content = json_object_new_string(text.data ? text.data : "");
    }
    json_object_object_add(msg, "role", json_object_new_string("assistant"));
    json_object_object_add(msg, "content", content);
    json_object_object_add(out, "message", msg);
    json_object_object_add(o, "output", out);
    json_object_object_add(o, "stopReason",
                           json_object_new_string(t->tool ? "tool_use" : "end_turn"));
    json_object_object_add(o, "usage", usage(t->prompt, t->completion));
    gw_buf_free(&text);
    if (t->f.drop_after >= 0) {
        const char *s = json_object_to_json_string(o);
        int rc = gw_mock_respond_cut(c, s, strlen(s), t->f.drop_after);
        json_object_put(o);
        return rc;
    }
    return gw_mock_send_json(c, 200, o);
}

/* One event-stream message of event type (o is put), as its own HTTP chunk. */
static int
event_send(struct gw_mock_conn *c, const struct gw_mock_turn *t, size_t *nsent, const char *type,
           struct json_object *o, bool last)
{
    const char *names[] = {":event-type", ":content-type", ":message-type"};
    const char *values[] = {type, "application/json", "event"};
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);

    c->ev.len = 0;
    int rc = gw_worker_evstream_encode(&c->ev, names, values, 3, s, len);
    json_object_put(o);
    if (rc != 0)
        return rc;
    if ((*nsent)++ > 0)
        gw_mock_sleep_ms(t->f.chunk_delay_ms);
    return gw_mock_stream_event(c, c->ev.data, c->ev.len, last);
}

static struct json_object *
indexed(int i)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "contentBlockIndex", json_object_new_int(i));
    return o;
}

static int
answer_stream(struct gw_mock_conn *c, const struct gw_mock_turn *t, unsigned long long id)
{
    size_t nsent = 0, n = t->tool != NULL ? 2 : gw_mock_turn_ntokens(t);
    struct json_object *o, *d;
    struct gw_buf tok = {0};
    int rc;

    gw_mock_stream_begin_as(c, "application/vnd.amazon.eventstream");
    o = json_object_new_object();
    json_object_object_add(o, "role", json_object_new_string("assistant"));
    if ((rc = event_send(c, t, &nsent, "messageStart", o, false)) != 0)
        return rc;
    if (t->tool != NULL) {
        struct json_object *start = json_object_new_object(), *tu = json_object_new_object();
        char tid[64];
        snprintf(tid, sizeof(tid), "tooluse_mock_%llu", id);
        json_object_object_add(tu, "toolUseId", json_object_new_string(tid));
        json_object_object_add(tu, "name", json_object_new_string(t->tool));
        json_object_object_add(start, "toolUse", tu);
        o = indexed(0);
        json_object_object_add(o, "start", start);
        if ((rc = event_send(c, t, &nsent, "contentBlockStart", o, false)) != 0)
            return rc;
    }
    for (size_t i = 0; i < n; i++) {
        if ((long)i == t->f.drop_after) {
            gw_buf_free(&tok);
            return gw_mock_stream_drop(c);
        }
        d = json_object_new_object();
        tok.len = 0;
        if (t->tool != NULL) {
            struct json_object *tu = json_object_new_object();
            size_t half = sizeof(GW_MOCK_TOOL_ARGS) / 2;
            json_object_object_add(
                tu, "input",
                json_object_new_string_len(GW_MOCK_TOOL_ARGS + (i ? half : 0),
                                           (int)(i ? sizeof(GW_MOCK_TOOL_ARGS) - 1 - half : half)));
            json_object_object_add(d, "toolUse", tu);
        } else {
            gw_mock_turn_token(t, i, &tok);
            json_object_object_add(d, "text", json_object_new_string(tok.data));
        }
        o = indexed(0);
        json_object_object_add(o, "delta", d);
        if ((rc = event_send(c, t, &nsent, "contentBlockDelta", o, false)) != 0)
            goto out;
    }
    if (t->f.drop_after == (long)n) {
        gw_buf_free(&tok);
        return gw_mock_stream_drop(c);
    }
    o = json_object_new_object();
    json_object_object_add(o, "stopReason",
                           json_object_new_string(t->tool ? "tool_use" : "end_turn"));
    if ((rc = event_send(c, t, &nsent, "contentBlockStop", indexed(0), false)) != 0 ||
        (rc = event_send(c, t, &nsent, "messageStop", o, false)) != 0)
        goto out;
    o = json_object_new_object();
    json_object_object_add(o, "usage", usage(t->prompt, t->completion));
    d = json_object_new_object();
    json_object_object_add(d, "latencyMs", json_object_new_int(1));
    json_object_object_add(o, "metrics", d);
    if ((rc = event_send(c, t, &nsent, "metadata", o, true)) != 0)
        goto out;
    rc = gw_mock_stream_close(c);
out:
    gw_buf_free(&tok);
    return rc;
}

int
gw_mock_bedrock_handle(struct gw_mock_conn *c, const char *path, size_t plen)
{
    struct gw_mock_turn t = {0};
    struct json_object *req = NULL, *v;
    char model[256];
    bool stream = plen > 16 && memcmp(path + plen - 16, "/converse-stream", 16) == 0;
    size_t mlen = plen - 7 - (stream ? 16 : 9);
    int rc;

    snprintf(model, sizeof(model), "%.*s", (int)mlen, path + 7);
    t.model = model;
    if (!auth_ok(c))
        return error_send(c, 403,
                          "The request signature we calculated does not match the signature you "
                          "provided.");
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
    if (!json_object_object_get_ex(req, "messages", &v) ||
        !json_object_is_type(v, json_type_array)) {
        rc = error_send(c, 400, "Malformed input request: messages is required.");
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
