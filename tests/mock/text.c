/*
 * text.c - OpenAI's other text endpoints: POST /v1/completions (legacy
 * text completions), /v1/moderations and /v1/responses.
 *
 * Completions answer N tokens "tok0 " ... like chat.c (N from
 * x-mock-chunks), streamed as text_completion chunks, a usage chunk when
 * stream_options.include_usage asks, then [DONE].  Moderations flag an
 * input holding "hurt" (violence) or "hate" (hate), with scores of 0.9 for
 * what is flagged and 0.01 for the rest.  Responses answer one message of
 * N tokens with usage {input_tokens, output_tokens}, streamed as the
 * Responses API's named events (response.created ... response.completed).
 * Prompt tokens are the words of the prompt, input or instructions; the
 * x-mock-status and x-mock-delay-ms headers apply.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tests/mock/mock.h"

/* Words of a string, of an array of strings, or of message items. */
static size_t
words(struct json_object *v)
{
    struct json_object *content;
    size_t n = 0;

    if (v == NULL)
        return 0;
    if (json_object_is_type(v, json_type_string))
        return gw_mock_words(json_object_get_string(v), (size_t)json_object_get_string_len(v));
    if (!json_object_is_type(v, json_type_array))
        return 0;
    for (size_t i = 0; i < json_object_array_length(v); i++) {
        struct json_object *item = json_object_array_get_idx(v, i);
        if (json_object_is_type(item, json_type_string))
            n += words(item);
        else if (json_object_object_get_ex(item, "content", &content))
            n += gw_mock_content_words(content);
        else if (json_object_object_get_ex(item, "text", &content))
            n += words(content);
    }
    return n;
}

static int
begin(struct gw_mock_conn *c, struct gw_mock_fault *f, struct json_object **req)
{
    int rc;

    if ((rc = gw_mock_fault_parse(c, f)) != 0 || (rc = gw_mock_fault_apply(c, f)) != 0)
        return rc;
    return gw_mock_body_json(c, req);
}

static const char *
model_of(struct json_object *req, const char *dflt)
{
    struct json_object *v;

    if (json_object_object_get_ex(req, "model", &v) && json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return dflt;
}

static bool
is_true(struct json_object *req, const char *key)
{
    struct json_object *v;

    return json_object_object_get_ex(req, key, &v) && json_object_is_type(v, json_type_boolean) &&
           json_object_get_boolean(v);
}

static struct json_object *
str(const char *s)
{
    return json_object_new_string(s);
}

/* --------------------------------------------------------- completions */

static struct json_object *
completion_chunk(unsigned long long id, long long created, const char *model, const char *text,
                 const char *finish)
{
    struct json_object *o = json_object_new_object(), *ch = json_object_new_array(),
                       *c = json_object_new_object();
    char cid[64];

    snprintf(cid, sizeof(cid), "cmpl-mock-%llu", id);
    json_object_object_add(o, "id", str(cid));
    json_object_object_add(o, "object", str("text_completion"));
    json_object_object_add(o, "created", json_object_new_int64(created));
    json_object_object_add(o, "model", str(model));
    json_object_object_add(c, "text", str(text));
    json_object_object_add(c, "index", json_object_new_int(0));
    json_object_object_add(c, "logprobs", NULL);
    json_object_object_add(c, "finish_reason", finish ? str(finish) : NULL);
    json_object_array_add(ch, c);
    json_object_object_add(o, "choices", ch);
    return o;
}

static struct json_object *
chat_usage(size_t prompt, size_t completion)
{
    struct json_object *u = json_object_new_object();

    json_object_object_add(u, "prompt_tokens", json_object_new_int64((int64_t)prompt));
    json_object_object_add(u, "completion_tokens", json_object_new_int64((int64_t)completion));
    json_object_object_add(u, "total_tokens",
                           json_object_new_int64((int64_t)(prompt + completion)));
    return u;
}

int
gw_mock_completions_handle(struct gw_mock_conn *c)
{
    struct gw_mock_fault f;
    struct json_object *req = NULL, *prompt, *opts, *o;
    struct gw_buf text = {0}, tok = {0};
    size_t nsent = 0;
    int rc;

    if ((rc = begin(c, &f, &req)) != 0)
        return rc > 0 ? 0 : rc;
    if (!json_object_object_get_ex(req, "prompt", &prompt)) {
        rc = gw_mock_respond_error(c, 400, "invalid_request_error", "missing_prompt",
                                   "'prompt' is a required property.");
        goto done;
    }
    const char *model = model_of(req, "mock-instruct");
    size_t in = words(prompt), out = (size_t)f.chunks;
    unsigned long long id = gw_mock_next_id();
    long long created = (long long)time(NULL);
    if (in == 0)
        in = 1;
    if (!is_true(req, "stream")) {
        for (size_t i = 0; i < out; i++)
            gw_buf_printf(&text, "tok%zu ", i);
        o = completion_chunk(id, created, model, text.data ? text.data : "", "stop");
        json_object_object_add(o, "usage", chat_usage(in, out));
        rc = gw_mock_send_json(c, 200, o);
        goto done;
    }
    gw_mock_stream_begin(c);
    for (size_t i = 0; i < out; i++) {
        tok.len = 0;
        gw_buf_printf(&tok, "tok%zu ", i);
        if ((rc = gw_mock_send_event(c, &f, &nsent, NULL,
                                     completion_chunk(id, created, model, tok.data, NULL),
                                     false)) != 0)
            goto done;
    }
    if ((rc = gw_mock_send_event(c, &f, &nsent, NULL,
                                 completion_chunk(id, created, model, "", "stop"), false)) != 0)
        goto done;
    if (json_object_object_get_ex(req, "stream_options", &opts) && is_true(opts, "include_usage")) {
        o = completion_chunk(id, created, model, "", NULL);
        json_object_object_add(o, "choices", json_object_new_array());
        json_object_object_add(o, "usage", chat_usage(in, out));
        if ((rc = gw_mock_send_event(c, &f, &nsent, NULL, o, false)) != 0)
            goto done;
    }
    c->ev.len = 0;
    GW_MOCK_APPEND(&c->ev, "data: [DONE]\n\n");
    if ((rc = gw_mock_stream_event(c, c->ev.data, c->ev.len, true)) == 0)
        rc = gw_mock_stream_close(c);
done:
    gw_buf_free(&text);
    gw_buf_free(&tok);
    json_object_put(req);
    return rc;
}

/* --------------------------------------------------------- moderations */

static const char *const categories[] = {
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
};

static struct json_object *
moderation_result(const char *text)
{
    struct json_object *r = json_object_new_object(), *cats = json_object_new_object(),
                       *scores = json_object_new_object();
    bool flagged = false;

    for (size_t i = 0; i < sizeof(categories) / sizeof(categories[0]); i++) {
        bool hit = (strcmp(categories[i], "violence") == 0 && strcasestr(text, "hurt") != NULL) ||
                   (strcmp(categories[i], "hate") == 0 && strcasestr(text, "hate") != NULL);
        flagged |= hit;
        json_object_object_add(cats, categories[i], json_object_new_boolean(hit));
        json_object_object_add(scores, categories[i], json_object_new_double(hit ? 0.9 : 0.01));
    }
    json_object_object_add(r, "flagged", json_object_new_boolean(flagged));
    json_object_object_add(r, "categories", cats);
    json_object_object_add(r, "category_scores", scores);
    return r;
}

int
gw_mock_moderations_handle(struct gw_mock_conn *c)
{
    struct gw_mock_fault f;
    struct json_object *req = NULL, *input, *o, *results;
    char id[64];
    int rc;

    if ((rc = begin(c, &f, &req)) != 0)
        return rc > 0 ? 0 : rc;
    if (!json_object_object_get_ex(req, "input", &input)) {
        rc = gw_mock_respond_error(c, 400, "invalid_request_error", "missing_input",
                                   "'input' is a required property.");
        goto done;
    }
    o = json_object_new_object();
    results = json_object_new_array();
    snprintf(id, sizeof(id), "modr-mock-%llu", gw_mock_next_id());
    json_object_object_add(o, "id", str(id));
    json_object_object_add(o, "model", str(model_of(req, "omni-moderation-latest")));
    if (json_object_is_type(input, json_type_string)) {
        json_object_array_add(results, moderation_result(json_object_get_string(input)));
    } else if (json_object_is_type(input, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(input); i++) {
            struct json_object *item = json_object_array_get_idx(input, i), *t;
            if (!json_object_is_type(item, json_type_string) &&
                json_object_object_get_ex(item, "text", &t))
                item = t;
            json_object_array_add(results,
                                  moderation_result(json_object_is_type(item, json_type_string)
                                                        ? json_object_get_string(item)
                                                        : ""));
        }
    }
    json_object_object_add(o, "results", results);
    rc = gw_mock_send_json(c, 200, o);
done:
    json_object_put(req);
    return rc;
}

/* ----------------------------------------------------------- responses */

struct resp {
    char id[64];
    char item_id[64];
    const char *model;
    long long created;
    size_t in, out;
    struct gw_buf text;
};

static struct json_object *
output_part(const char *text)
{
    struct json_object *p = json_object_new_object();

    json_object_object_add(p, "type", str("output_text"));
    json_object_object_add(p, "text", str(text));
    json_object_object_add(p, "annotations", json_object_new_array());
    return p;
}

static struct json_object *
output_item(const struct resp *r, bool done)
{
    struct json_object *m = json_object_new_object(), *content = json_object_new_array();

    json_object_object_add(m, "id", str(r->item_id));
    json_object_object_add(m, "type", str("message"));
    json_object_object_add(m, "status", str(done ? "completed" : "in_progress"));
    json_object_object_add(m, "role", str("assistant"));
    if (done)
        json_object_array_add(content, output_part(r->text.data ? r->text.data : ""));
    json_object_object_add(m, "content", content);
    return m;
}

static struct json_object *
response_object(const struct resp *r, bool done)
{
    struct json_object *o = json_object_new_object(), *output = json_object_new_array();

    json_object_object_add(o, "id", str(r->id));
    json_object_object_add(o, "object", str("response"));
    json_object_object_add(o, "created_at", json_object_new_int64(r->created));
    json_object_object_add(o, "status", str(done ? "completed" : "in_progress"));
    json_object_object_add(o, "model", str(r->model));
    if (done)
        json_object_array_add(output, output_item(r, true));
    json_object_object_add(o, "output", output);
    if (done) {
        struct json_object *u = json_object_new_object();
        json_object_object_add(u, "input_tokens", json_object_new_int64((int64_t)r->in));
        json_object_object_add(u, "output_tokens", json_object_new_int64((int64_t)r->out));
        json_object_object_add(u, "total_tokens", json_object_new_int64((int64_t)(r->in + r->out)));
        json_object_object_add(o, "usage", u);
    } else {
        json_object_object_add(o, "usage", NULL);
    }
    return o;
}

/* One named event {"type": name, "sequence_number": n, ...}. */
static struct json_object *
ev(const char *name, size_t seq)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "type", str(name));
    json_object_object_add(o, "sequence_number", json_object_new_int64((int64_t)seq));
    return o;
}

static void
at(struct json_object *o, const struct resp *r, bool part)
{
    json_object_object_add(o, "item_id", str(r->item_id));
    json_object_object_add(o, "output_index", json_object_new_int(0));
    if (part)
        json_object_object_add(o, "content_index", json_object_new_int(0));
}

static int
responses_stream(struct gw_mock_conn *c, const struct gw_mock_fault *f, struct resp *r)
{
    struct gw_buf tok = {0};
    size_t nsent = 0, seq = 0;
    struct json_object *o;
    int rc;

#define SEND(name, obj)                                                                            \
    do {                                                                                           \
        if ((rc = gw_mock_send_event(c, f, &nsent, (name), (obj), false)) != 0)                    \
            goto out;                                                                              \
    } while (0)
    gw_mock_stream_begin(c);
    o = ev("response.created", seq++);
    json_object_object_add(o, "response", response_object(r, false));
    SEND("response.created", o);
    o = ev("response.in_progress", seq++);
    json_object_object_add(o, "response", response_object(r, false));
    SEND("response.in_progress", o);
    o = ev("response.output_item.added", seq++);
    json_object_object_add(o, "output_index", json_object_new_int(0));
    json_object_object_add(o, "item", output_item(r, false));
    SEND("response.output_item.added", o);
    o = ev("response.content_part.added", seq++);
    at(o, r, true);
    json_object_object_add(o, "part", output_part(""));
    SEND("response.content_part.added", o);
    for (size_t i = 0; i < r->out; i++) {
        tok.len = 0;
        gw_buf_printf(&tok, "tok%zu ", i);
        o = ev("response.output_text.delta", seq++);
        at(o, r, true);
        json_object_object_add(o, "delta", str(tok.data));
        SEND("response.output_text.delta", o);
    }
    o = ev("response.output_text.done", seq++);
    at(o, r, true);
    json_object_object_add(o, "text", str(r->text.data ? r->text.data : ""));
    SEND("response.output_text.done", o);
    o = ev("response.content_part.done", seq++);
    at(o, r, true);
    json_object_object_add(o, "part", output_part(r->text.data ? r->text.data : ""));
    SEND("response.content_part.done", o);
    o = ev("response.output_item.done", seq++);
    json_object_object_add(o, "output_index", json_object_new_int(0));
    json_object_object_add(o, "item", output_item(r, true));
    SEND("response.output_item.done", o);
    o = ev("response.completed", seq++);
    json_object_object_add(o, "response", response_object(r, true));
    if ((rc = gw_mock_send_event(c, f, &nsent, "response.completed", o, true)) == 0)
        rc = gw_mock_stream_close(c);
#undef SEND
out:
    gw_buf_free(&tok);
    return rc;
}

int
gw_mock_responses_handle(struct gw_mock_conn *c)
{
    struct gw_mock_fault f;
    struct json_object *req = NULL, *v;
    struct resp r = {0};
    int rc;

    if ((rc = begin(c, &f, &req)) != 0)
        return rc > 0 ? 0 : rc;
    unsigned long long id = gw_mock_next_id();
    snprintf(r.id, sizeof(r.id), "resp_mock_%llu", id);
    snprintf(r.item_id, sizeof(r.item_id), "msg_mock_%llu", id);
    r.model = model_of(req, "mock-small");
    r.created = (long long)time(NULL);
    if (json_object_object_get_ex(req, "input", &v))
        r.in += words(v);
    if (json_object_object_get_ex(req, "instructions", &v))
        r.in += words(v);
    if (r.in == 0)
        r.in = 1;
    r.out = (size_t)f.chunks;
    for (size_t i = 0; i < r.out; i++)
        gw_buf_printf(&r.text, "tok%zu ", i);
    if (is_true(req, "stream"))
        rc = responses_stream(c, &f, &r);
    else
        rc = gw_mock_send_json(c, 200, response_object(&r, true));
    gw_buf_free(&r.text);
    json_object_put(req);
    return rc;
}
