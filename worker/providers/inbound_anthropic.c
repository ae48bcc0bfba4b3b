/*
 * inbound_anthropic.c - Anthropic's Messages API spoken by a client, the
 * reverse of the anthropic adapter: the client's request into the
 * canonical OpenAI chat request, and the OpenAI answer, error and stream
 * back into Anthropic's (see worker/messages.h).
 *
 * Request: the system prompt (a string or text blocks) becomes a system
 * message; a user turn's text and image blocks its content parts and its
 * tool_result blocks "tool" messages (put before the turn's other
 * content, as OpenAI wants them right after the assistant's tool calls);
 * an assistant turn's text its content and its tool_use blocks its
 * tool_calls (input serialized as arguments).  Thinking blocks and
 * server tools have no OpenAI form and are left out.
 *
 * Answer: the first choice's content becomes a text block and its tool
 * calls tool_use blocks (arguments parsed back into input), finish_reason
 * the stop_reason (stop: end_turn, length: max_tokens, tool_calls:
 * tool_use, content_filter: refusal), and the usage input and output
 * tokens (cached prompt tokens apart, as Anthropic counts them).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "worker/messages.h"
#include "worker/providers/providers.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* ------------------------------------------------------------ request */

static int
invalid(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return GW_EINVAL;
}

static bool
is_type(struct json_object *block, const char *type)
{
    const char *t = gw_worker_prov_str(block, "type");

    return t != NULL && strcmp(t, type) == 0;
}

/* The text of a string or of text blocks, joined by sep; NULL if none. */
static char *
blocks_text(struct json_object *content, const char *sep)
{
    struct gw_buf b = {0};

    if (content != NULL && json_object_is_type(content, json_type_string))
        return strdup(json_object_get_string(content));
    for (size_t i = 0; i < gw_worker_json_len(content); i++) {
        struct json_object *blk = gw_worker_json_at(content, i);
        const char *text = gw_worker_prov_str(blk, "text");
        if (is_type(blk, "text") && text != NULL)
            gw_buf_printf(&b, "%s%s", b.len > 0 ? sep : "", text);
    }
    if (b.data == NULL)
        return NULL;
    return b.data; /* NUL-terminated by gw_buf_printf; the caller frees */
}

static struct json_object *
message_new(const char *role)
{
    struct json_object *m = json_object_new_object();

    json_object_object_add(m, "role", json_object_new_string(role));
    return m;
}

/* An image block as an image_url part, or NULL when its source is unknown. */
static struct json_object *
image_part(struct json_object *block)
{
    struct json_object *src = gw_worker_prov_get(block, "source"), *part, *iu;
    const char *stype = gw_worker_prov_str(src, "type"), *url = NULL;
    char *data_url = NULL;

    if (stype != NULL && strcmp(stype, "base64") == 0 && gw_worker_prov_str(src, "data") != NULL) {
        if (asprintf(&data_url, "data:%s;base64,%s",
                     gw_worker_prov_str(src, "media_type") ?: "image/png",
                     gw_worker_prov_str(src, "data")) < 0)
            return NULL;
        url = data_url;
    } else if (stype != NULL && strcmp(stype, "url") == 0) {
        url = gw_worker_prov_str(src, "url");
    }
    if (url == NULL)
        return NULL;
    part = json_object_new_object();
    iu = json_object_new_object();
    json_object_object_add(part, "type", json_object_new_string("image_url"));
    json_object_object_add(iu, "url", json_object_new_string(url));
    json_object_object_add(part, "image_url", iu);
    free(data_url);
    return part;
}

/* A tool_result block as a "tool" message. */
static struct json_object *
tool_message(struct json_object *block)
{
    struct json_object *m = message_new("tool"), *err = gw_worker_prov_get(block, "is_error");
    char *text = blocks_text(gw_worker_prov_get(block, "content"), "\n");
    bool is_error = err != NULL && json_object_get_boolean(err);
    struct gw_buf b = {0};

    json_object_object_add(
        m, "tool_call_id",
        json_object_new_string(gw_worker_prov_str(block, "tool_use_id") ?: "toolu_0"));
    /* OpenAI has no is_error: the model reads it in the result. */
    gw_buf_printf(&b, "%s%s", is_error ? "Error: " : "", text ? text : "");
    json_object_object_add(m, "content", json_object_new_string(b.data ? b.data : ""));
    gw_buf_free(&b);
    free(text);
    return m;
}

static void
user_turn(struct json_object *out, struct json_object *content)
{
    struct json_object *parts = json_object_new_array(), *m;
    bool only_text = true;

    if (json_object_is_type(content, json_type_string)) {
        m = message_new("user");
        json_object_object_add(m, "content", json_object_get(content));
        json_object_array_add(out, m);
        json_object_put(parts);
        return;
    }
    for (size_t i = 0; i < gw_worker_json_len(content); i++) {
        struct json_object *blk = gw_worker_json_at(content, i), *p;
        if (is_type(blk, "tool_result")) {
            json_object_array_add(out, tool_message(blk));
        } else if (is_type(blk, "text") && gw_worker_prov_str(blk, "text") != NULL) {
            p = json_object_new_object();
            json_object_object_add(p, "type", json_object_new_string("text"));
            json_object_object_add(p, "text",
                                   json_object_new_string(gw_worker_prov_str(blk, "text")));
            json_object_array_add(parts, p);
        } else if (is_type(blk, "image") && (p = image_part(blk)) != NULL) {
            json_object_array_add(parts, p);
            only_text = false;
        }
    }
    if (gw_worker_json_len(parts) == 0) {
        json_object_put(parts);
        return;
    }
    m = message_new("user");
    if (only_text && gw_worker_json_len(parts) == 1) {
        struct json_object *text = gw_worker_prov_get(gw_worker_json_at(parts, 0), "text");
        json_object_object_add(m, "content", json_object_get(text));
        json_object_put(parts);
    } else {
        json_object_object_add(m, "content", parts);
    }
    json_object_array_add(out, m);
}

static void
assistant_turn(struct json_object *out, struct json_object *content)
{
    struct json_object *m = message_new("assistant"), *calls = NULL;
    char *text = blocks_text(content, "");

    for (size_t i = 0; i < gw_worker_json_len(content); i++) {
        struct json_object *blk = gw_worker_json_at(content, i);
        if (!is_type(blk, "tool_use"))
            continue;
        struct json_object *input = gw_worker_prov_get(blk, "input");
        if (calls == NULL)
            calls = json_object_new_array();
        json_object_array_add(
            calls, gw_worker_prov_tool_call(
                       gw_worker_prov_str(blk, "id") ?: "", gw_worker_prov_str(blk, "name") ?: "",
                       input != NULL ? json_object_to_json_string_ext(input, JSON_FLAGS) : "{}"));
    }
    json_object_object_add(m, "content",
                           text != NULL || calls == NULL ? json_object_new_string(text ? text : "")
                                                         : NULL);
    if (calls != NULL)
        json_object_object_add(m, "tool_calls", calls);
    json_object_array_add(out, m);
    free(text);
}

/* Client tools (no type, or "custom") as functions; server tools have none. */
static struct json_object *
tools_convert(struct json_object *tools)
{
    struct json_object *out = json_object_new_array();

    for (size_t i = 0; i < gw_worker_json_len(tools); i++) {
        struct json_object *t = gw_worker_json_at(tools, i), *fn, *f, *schema;
        const char *type = gw_worker_prov_str(t, "type");
        if (gw_worker_prov_str(t, "name") == NULL || (type != NULL && strcmp(type, "custom") != 0))
            continue;
        f = json_object_new_object();
        fn = json_object_new_object();
        json_object_object_add(f, "type", json_object_new_string("function"));
        json_object_object_add(fn, "name", json_object_new_string(gw_worker_prov_str(t, "name")));
        if (gw_worker_prov_str(t, "description") != NULL)
            json_object_object_add(fn, "description",
                                   json_object_new_string(gw_worker_prov_str(t, "description")));
        schema = gw_worker_prov_get(t, "input_schema");
        if (schema != NULL) {
            json_object_object_add(fn, "parameters", gw_worker_prov_copy(schema));
        } else {
            schema = json_object_new_object();
            json_object_object_add(schema, "type", json_object_new_string("object"));
            json_object_object_add(fn, "parameters", schema);
        }
        json_object_object_add(f, "function", fn);
        json_object_array_add(out, f);
    }
    return out;
}

/* tool_choice into out's tool_choice and parallel_tool_calls. */
static void
tool_choice_convert(struct json_object *tc, struct json_object *out)
{
    const char *type = gw_worker_prov_str(tc, "type");
    struct json_object *dp = gw_worker_prov_get(tc, "disable_parallel_tool_use");

    if (type == NULL)
        return;
    if (strcmp(type, "any") == 0) {
        json_object_object_add(out, "tool_choice", json_object_new_string("required"));
    } else if (strcmp(type, "none") == 0) {
        json_object_object_add(out, "tool_choice", json_object_new_string("none"));
    } else if (strcmp(type, "tool") == 0 && gw_worker_prov_str(tc, "name") != NULL) {
        struct json_object *o = json_object_new_object(), *fn = json_object_new_object();
        json_object_object_add(o, "type", json_object_new_string("function"));
        json_object_object_add(fn, "name", json_object_new_string(gw_worker_prov_str(tc, "name")));
        json_object_object_add(o, "function", fn);
        json_object_object_add(out, "tool_choice", o);
    } else {
        json_object_object_add(out, "tool_choice", json_object_new_string("auto"));
    }
    if (dp != NULL && json_object_get_boolean(dp) && strcmp(type, "none") != 0)
        json_object_object_add(out, "parallel_tool_calls", json_object_new_boolean(0));
}

static int
copy_number(struct json_object *in, struct json_object *out, const char *key, char *err,
            size_t errlen)
{
    struct json_object *v = gw_worker_prov_get(in, key);

    if (v == NULL || json_object_is_type(v, json_type_null))
        return 0;
    if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
        return invalid(err, errlen, "%s: Input should be a valid number", key);
    json_object_object_add(out, key, gw_worker_prov_copy(v));
    return 0;
}

int
gw_worker_messages_request(struct json_object *in, struct json_object **out, char *err,
                           size_t errlen)
{
    struct json_object *o = NULL, *msgs, *v, *list;
    const char *model = gw_worker_prov_str(in, "model");
    int rc = GW_EINVAL;

    *out = NULL;
    if (model == NULL || model[0] == '\0')
        return invalid(err, errlen, "model: Field required");
    v = gw_worker_prov_get(in, "max_tokens");
    if (v == NULL || !json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 1)
        return invalid(err, errlen, "max_tokens: Field required (an integer of at least 1)");
    msgs = gw_worker_prov_get(in, "messages");
    if (msgs == NULL || !json_object_is_type(msgs, json_type_array))
        return invalid(err, errlen, "messages: Field required (an array)");

    o = json_object_new_object();
    list = json_object_new_array();
    json_object_object_add(o, "model", json_object_new_string(model));
    json_object_object_add(o, "messages", list);
    json_object_object_add(o, "max_completion_tokens",
                           json_object_new_int64(json_object_get_int64(v)));

    v = gw_worker_prov_get(in, "system");
    if (v != NULL && !json_object_is_type(v, json_type_null)) {
        char *text = blocks_text(v, "\n\n");
        if (!json_object_is_type(v, json_type_string) && !json_object_is_type(v, json_type_array)) {
            rc = invalid(err, errlen, "system: Input should be a valid string or list of blocks");
            goto fail;
        }
        if (text != NULL && text[0] != '\0') {
            struct json_object *m = message_new("system");
            json_object_object_add(m, "content", json_object_new_string(text));
            json_object_array_add(list, m);
        }
        free(text);
    }
    for (size_t i = 0; i < gw_worker_json_len(msgs); i++) {
        struct json_object *m = gw_worker_json_at(msgs, i);
        const char *role = gw_worker_prov_str(m, "role");
        struct json_object *content = gw_worker_prov_get(m, "content");
        if (role == NULL || (strcmp(role, "user") != 0 && strcmp(role, "assistant") != 0)) {
            rc =
                invalid(err, errlen, "messages.%zu.role: Input should be 'user' or 'assistant'", i);
            goto fail;
        }
        if (content == NULL || (!json_object_is_type(content, json_type_string) &&
                                !json_object_is_type(content, json_type_array))) {
            rc = invalid(err, errlen,
                         "messages.%zu.content: Input should be a valid string or list of blocks",
                         i);
            goto fail;
        }
        if (strcmp(role, "user") == 0)
            user_turn(list, content);
        else
            assistant_turn(list, content);
    }

    v = gw_worker_prov_get(in, "stop_sequences");
    if (gw_worker_json_len(v) > 0)
        json_object_object_add(o, "stop", gw_worker_prov_copy(v));
    if ((rc = copy_number(in, o, "temperature", err, errlen)) != 0 ||
        (rc = copy_number(in, o, "top_p", err, errlen)) != 0)
        goto fail;
    rc = GW_EINVAL;
    v = gw_worker_prov_get(in, "tools");
    if (v != NULL && json_object_is_type(v, json_type_array)) {
        struct json_object *tools = tools_convert(v);
        if (gw_worker_json_len(tools) > 0) {
            json_object_object_add(o, "tools", tools);
            tool_choice_convert(gw_worker_prov_get(in, "tool_choice"), o);
        } else {
            json_object_put(tools);
        }
    }
    if (gw_worker_prov_str(gw_worker_prov_get(in, "metadata"), "user_id") != NULL)
        json_object_object_add(o, "user",
                               json_object_new_string(gw_worker_prov_str(
                                   gw_worker_prov_get(in, "metadata"), "user_id")));
    v = gw_worker_prov_get(in, "stream");
    if (v != NULL && !json_object_is_type(v, json_type_boolean) &&
        !json_object_is_type(v, json_type_null)) {
        rc = invalid(err, errlen, "stream: Input should be a valid boolean");
        goto fail;
    }
    if (v != NULL && json_object_get_boolean(v)) {
        struct json_object *so = json_object_new_object();
        json_object_object_add(o, "stream", json_object_new_boolean(1));
        /* The usage goes into message_delta: always ask for it. */
        json_object_object_add(so, "include_usage", json_object_new_boolean(1));
        json_object_object_add(o, "stream_options", so);
    }
    *out = o;
    return 0;
fail:
    json_object_put(o);
    return rc;
}

/* ------------------------------------------------------------- answer */

static const char *
stop_reason(const char *finish)
{
    if (finish == NULL)
        return "end_turn";
    if (strcmp(finish, "length") == 0)
        return "max_tokens";
    if (strcmp(finish, "tool_calls") == 0 || strcmp(finish, "function_call") == 0)
        return "tool_use";
    if (strcmp(finish, "content_filter") == 0)
        return "refusal";
    return "end_turn";
}

/* "msg_" and the upstream's id (an Anthropic one as it is). */
static const char *
message_id(struct gw_arena *a, const char *id)
{
    if (id == NULL || id[0] == '\0')
        id = "gateway";
    if (strncmp(id, "msg_", 4) == 0)
        return gw_arena_strdup(a, id);
    if (strncmp(id, "chatcmpl-", 9) == 0)
        id += 9;
    return gw_arena_printf(a, "msg_%s", id);
}

/* A tool call's arguments as the tool_use input object ({} if unreadable). */
static struct json_object *
tool_input(const char *args)
{
    struct json_object *in = args != NULL ? gw_worker_prov_parse(args, strlen(args)) : NULL;

    return in != NULL ? in : json_object_new_object();
}

static struct json_object *
usage_object(int64_t prompt, int64_t completion, int64_t cached)
{
    struct json_object *u = json_object_new_object();

    json_object_object_add(u, "input_tokens", json_object_new_int64(prompt - cached));
    json_object_object_add(u, "output_tokens", json_object_new_int64(completion));
    if (cached > 0)
        json_object_object_add(u, "cache_read_input_tokens", json_object_new_int64(cached));
    return u;
}

static void
usage_read(struct json_object *u, int64_t *prompt, int64_t *completion, int64_t *cached)
{
    struct json_object *v;

    if ((v = gw_worker_prov_get(u, "prompt_tokens")) != NULL)
        *prompt = json_object_get_int64(v);
    if ((v = gw_worker_prov_get(u, "completion_tokens")) != NULL)
        *completion = json_object_get_int64(v);
    if ((v = gw_worker_prov_get(gw_worker_prov_get(u, "prompt_tokens_details"), "cached_tokens")) !=
        NULL)
        *cached = json_object_get_int64(v);
}

static int
serialize(struct gw_arena *a, struct json_object *o, const char **out, size_t *out_len)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_FLAGS, &len);
    int rc = GW_ENOMEM;

    if (s != NULL) {
        *out = gw_arena_strndup(a, s, len);
        *out_len = len;
        rc = 0;
    }
    json_object_put(o);
    return rc;
}

int
gw_worker_messages_answer(struct gw_arena *a, const char *body, size_t len, const char *model,
                          const char **out, size_t *out_len)
{
    struct json_object *o = gw_worker_prov_parse(body, len), *choices, *choice, *msg, *calls, *m,
                       *content;
    const char *text, *refusal;
    int64_t prompt = 0, completion = 0, cached = 0;

    choices = gw_worker_prov_get(o, "choices");
    if (choices == NULL || !json_object_is_type(choices, json_type_array)) {
        json_object_put(o);
        return GW_EPROTO;
    }
    choice = gw_worker_json_at(choices, 0);
    msg = gw_worker_prov_get(choice, "message");
    m = json_object_new_object();
    content = json_object_new_array();
    json_object_object_add(m, "id",
                           json_object_new_string(message_id(a, gw_worker_prov_str(o, "id"))));
    json_object_object_add(m, "type", json_object_new_string("message"));
    json_object_object_add(m, "role", json_object_new_string("assistant"));
    json_object_object_add(m, "model",
                           json_object_new_string(gw_worker_prov_str(o, "model") ?: model ?: ""));
    text = gw_worker_prov_str(msg, "content");
    refusal = gw_worker_prov_str(msg, "refusal");
    if (text == NULL || text[0] == '\0')
        text = refusal;
    if (text != NULL && text[0] != '\0') {
        struct json_object *b = json_object_new_object();
        json_object_object_add(b, "type", json_object_new_string("text"));
        json_object_object_add(b, "text", json_object_new_string(text));
        json_object_array_add(content, b);
    }
    calls = gw_worker_prov_get(msg, "tool_calls");
    for (size_t i = 0; i < gw_worker_json_len(calls); i++) {
        struct json_object *tc = gw_worker_json_at(calls, i);
        struct json_object *fn = gw_worker_prov_get(tc, "function"), *b = json_object_new_object();
        json_object_object_add(b, "type", json_object_new_string("tool_use"));
        json_object_object_add(b, "id", json_object_new_string(gw_worker_prov_str(tc, "id") ?: ""));
        json_object_object_add(b, "name",
                               json_object_new_string(gw_worker_prov_str(fn, "name") ?: ""));
        json_object_object_add(b, "input", tool_input(gw_worker_prov_str(fn, "arguments")));
        json_object_array_add(content, b);
    }
    json_object_object_add(m, "content", content);
    json_object_object_add(
        m, "stop_reason",
        json_object_new_string(refusal != NULL && gw_worker_prov_str(msg, "content") == NULL
                                   ? "refusal"
                                   : stop_reason(gw_worker_prov_str(choice, "finish_reason"))));
    json_object_object_add(m, "stop_sequence", NULL);
    usage_read(gw_worker_prov_get(o, "usage"), &prompt, &completion, &cached);
    json_object_object_add(m, "usage", usage_object(prompt, completion, cached));
    json_object_put(o);
    return serialize(a, m, out, out_len);
}

/* ------------------------------------------------------------- errors */

/* Anthropic's error type for a status, and the status it answers with. */
static const char *
error_type(int status, int *out_status)
{
    *out_status = status;
    switch (status) {
    case 400:
    case 405:
    case 422: return "invalid_request_error";
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413:
    case 431: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: *out_status = 529; return "overloaded_error";
    case 529: return "overloaded_error";
    case 408:
    case 504: return "timeout_error";
    default: return status >= 400 && status < 500 ? "invalid_request_error" : "api_error";
    }
}

static struct json_object *
error_object(const char *type, const char *message)
{
    struct json_object *o = json_object_new_object(), *e = json_object_new_object();

    json_object_object_add(o, "type", json_object_new_string("error"));
    json_object_object_add(e, "type", json_object_new_string(type));
    json_object_object_add(e, "message", json_object_new_string(message));
    json_object_object_add(o, "error", e);
    return o;
}

/* The message of an OpenAI error body, or of anything else that says one. */
static const char *
error_message(struct gw_arena *a, struct json_object *o, const char *body, size_t len)
{
    struct json_object *e = gw_worker_prov_get(o, "error");
    const char *msg = gw_worker_prov_str(e, "message");

    if (msg == NULL && e != NULL && json_object_is_type(e, json_type_string))
        msg = json_object_get_string(e);
    if (msg == NULL)
        msg = gw_worker_prov_str(o, "message");
    if (msg == NULL && len > 0 && o == NULL)
        msg = gw_arena_strndup(a, body, len > 300 ? 300 : len);
    return msg != NULL ? msg : "The request failed.";
}

int
gw_worker_messages_error(struct gw_arena *a, int status, const char *body, size_t len,
                         int *out_status, const char **out, size_t *out_len)
{
    struct json_object *o = gw_worker_prov_parse(body, len);
    const char *type = error_type(status, out_status);
    const char *code = gw_worker_prov_str(gw_worker_prov_get(o, "error"), "code");
    int rc;

    /* A refusal by content safety is the request's fault, whatever said it. */
    if (code != NULL && strcmp(code, "content_blocked") == 0)
        type = "invalid_request_error";
    rc = serialize(a, error_object(type, error_message(a, o, body, len)), out, out_len);
    json_object_put(o);
    return rc;
}

/* ------------------------------------------------------------- stream */

void
gw_worker_messages_stream_init(struct gw_messages_stream *s, struct gw_arena *a, struct gw_buf *in,
                               const char *model)
{
    memset(s, 0, sizeof(*s));
    s->a = a;
    s->in = in;
    in->len = 0;
    s->model = model;
    s->open = -1;
    s->open_tool = -1;
}

static int
event(struct gw_buf *out, const char *name, struct json_object *o)
{
    int rc = gw_buf_printf(out, "event: %s\ndata: %s\n\n", name,
                           json_object_to_json_string_ext(o, JSON_FLAGS));

    json_object_put(o);
    return rc;
}

static struct json_object *
typed(const char *type)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "type", json_object_new_string(type));
    return o;
}

static int
message_start(struct gw_messages_stream *s, struct gw_buf *out)
{
    if (s->started)
        return 0;
    s->started = true;
    struct json_object *o = typed("message_start"), *m = typed("message");
    if (s->id == NULL)
        s->id = message_id(s->a, NULL);
    json_object_object_add(m, "id", json_object_new_string(s->id));
    json_object_object_add(m, "role", json_object_new_string("assistant"));
    json_object_object_add(m, "model", json_object_new_string(s->model ? s->model : ""));
    json_object_object_add(m, "content", json_object_new_array());
    json_object_object_add(m, "stop_reason", NULL);
    json_object_object_add(m, "stop_sequence", NULL);
    /* The OpenAI stream tells its usage at the end: message_delta has it. */
    json_object_object_add(m, "usage", usage_object(0, 0, 0));
    json_object_object_add(o, "message", m);
    return event(out, "message_start", o);
}

static int
block_stop(struct gw_messages_stream *s, struct gw_buf *out)
{
    struct json_object *o;

    if (s->open < 0)
        return 0;
    o = typed("content_block_stop");
    json_object_object_add(o, "index", json_object_new_int(s->open));
    s->open = -1;
    s->open_tool = -1;
    return event(out, "content_block_stop", o);
}

/* Open block b (taken) as the next index, closing the one open. */
static int
block_start(struct gw_messages_stream *s, struct gw_buf *out, struct json_object *b, bool text)
{
    struct json_object *o = typed("content_block_start");
    int rc = block_stop(s, out);

    s->open = s->next++;
    s->open_text = text;
    json_object_object_add(o, "index", json_object_new_int(s->open));
    json_object_object_add(o, "content_block", b);
    if (rc == 0)
        rc = event(out, "content_block_start", o);
    else
        json_object_put(o);
    if (rc == 0 && !s->pinged) {
        s->pinged = true;
        rc = event(out, "ping", typed("ping"));
    }
    return rc;
}

static int
block_delta(struct gw_messages_stream *s, struct gw_buf *out, const char *dtype, const char *key,
            const char *value)
{
    struct json_object *o = typed("content_block_delta"), *d = typed(dtype);

    s->deltas++;
    json_object_object_add(o, "index", json_object_new_int(s->open));
    json_object_object_add(d, key, json_object_new_string(value));
    json_object_object_add(o, "delta", d);
    return event(out, "content_block_delta", o);
}

static int
text_delta(struct gw_messages_stream *s, struct gw_buf *out, const char *text)
{
    int rc = 0;

    if (s->open < 0 || !s->open_text) {
        struct json_object *b = typed("text");
        json_object_object_add(b, "text", json_object_new_string(""));
        rc = block_start(s, out, b, true);
    }
    return rc != 0 ? rc : block_delta(s, out, "text_delta", "text", text);
}

static int
tool_delta(struct gw_messages_stream *s, struct gw_buf *out, struct json_object *tc)
{
    struct json_object *v = gw_worker_prov_get(tc, "index"),
                       *fn = gw_worker_prov_get(tc, "function");
    int index = v != NULL ? json_object_get_int(v) : 0, rc = 0;
    const char *id = gw_worker_prov_str(tc, "id"), *args = gw_worker_prov_str(fn, "arguments");

    /* A new call (an id, or another index) is a new tool_use block. */
    if (id != NULL || s->open < 0 || s->open_text || s->open_tool != index) {
        struct json_object *b = typed("tool_use");
        json_object_object_add(b, "id", json_object_new_string(id ?: ""));
        json_object_object_add(b, "name",
                               json_object_new_string(gw_worker_prov_str(fn, "name") ?: ""));
        json_object_object_add(b, "input", json_object_new_object());
        rc = block_start(s, out, b, false);
        s->open_tool = index;
    }
    if (rc == 0 && args != NULL && args[0] != '\0')
        rc = block_delta(s, out, "input_json_delta", "partial_json", args);
    return rc;
}

/* The end: the open block, message_delta with the stop reason and usage,
 * message_stop. */
static int
message_end(struct gw_messages_stream *s, struct gw_buf *out)
{
    struct json_object *o, *d;
    int rc;

    if (s->ended)
        return 0;
    if ((rc = message_start(s, out)) != 0 || (rc = block_stop(s, out)) != 0)
        return rc;
    s->ended = true;
    o = typed("message_delta");
    d = json_object_new_object();
    json_object_object_add(d, "stop_reason",
                           json_object_new_string(s->stop_reason ? s->stop_reason : "end_turn"));
    json_object_object_add(d, "stop_sequence", NULL);
    json_object_object_add(o, "delta", d);
    json_object_object_add(o, "usage",
                           usage_object(s->input_tokens,
                                        s->have_usage ? s->output_tokens : s->deltas,
                                        s->cached_tokens));
    if ((rc = event(out, "message_delta", o)) != 0)
        return rc;
    return event(out, "message_stop", typed("message_stop"));
}

static int
chunk(struct gw_messages_stream *s, struct json_object *o, struct gw_buf *out)
{
    struct json_object *e = gw_worker_prov_get(o, "error"), *choices, *u;
    int rc;

    if (e != NULL) {
        /* Said inside a stream already begun: an error event ends it. */
        const char *type = gw_worker_prov_str(e, "type");
        const char *code = gw_worker_prov_str(e, "code");
        s->ended = true;
        return event(out, "error",
                     error_object((type != NULL && strcmp(type, "invalid_request_error") == 0) ||
                                          (code != NULL && strcmp(code, "content_blocked") == 0)
                                      ? "invalid_request_error"
                                  : code != NULL && strcmp(code, "upstream_timeout") == 0
                                      ? "timeout_error"
                                      : "api_error",
                                  gw_worker_prov_str(e, "message") ?: "The stream failed."));
    }
    if (!s->started) {
        if (gw_worker_prov_str(o, "id") != NULL)
            s->id = message_id(s->a, gw_worker_prov_str(o, "id"));
        if (gw_worker_prov_str(o, "model") != NULL)
            s->model = gw_arena_strdup(s->a, gw_worker_prov_str(o, "model"));
    }
    if ((rc = message_start(s, out)) != 0)
        return rc;
    if ((u = gw_worker_prov_get(o, "usage")) != NULL && json_object_is_type(u, json_type_object)) {
        s->have_usage = true;
        usage_read(u, &s->input_tokens, &s->output_tokens, &s->cached_tokens);
    }
    choices = gw_worker_prov_get(o, "choices");
    for (size_t i = 0; i < gw_worker_json_len(choices); i++) {
        struct json_object *c = gw_worker_json_at(choices, i);
        struct json_object *delta = gw_worker_prov_get(c, "delta"), *v;
        const char *text = gw_worker_prov_str(delta, "content"),
                   *finish = gw_worker_prov_str(c, "finish_reason");
        if ((v = gw_worker_prov_get(c, "index")) != NULL && json_object_get_int(v) != 0)
            continue; /* Anthropic has one answer: the first choice */
        if (text != NULL && text[0] != '\0' && (rc = text_delta(s, out, text)) != 0)
            return rc;
        v = gw_worker_prov_get(delta, "tool_calls");
        for (size_t k = 0; k < gw_worker_json_len(v); k++)
            if ((rc = tool_delta(s, out, gw_worker_json_at(v, k))) != 0)
                return rc;
        if (finish != NULL) {
            s->stop_reason = stop_reason(finish);
            if ((rc = block_stop(s, out)) != 0)
                return rc;
        }
    }
    return 0;
}

/* One OpenAI event: its data lines joined. */
static int
event_in(struct gw_messages_stream *s, const char *p, size_t len, struct gw_buf *out)
{
    struct gw_buf data = {0};
    int rc = 0;

    for (const char *line = p, *end = p + len; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        size_t n = nl != NULL ? (size_t)(nl - line) : (size_t)(end - line);
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (n >= 5 && memcmp(line, "data:", 5) == 0) {
            const char *d = line + 5;
            size_t dn = n - 5;
            if (dn > 0 && *d == ' ')
                d++, dn--;
            if (data.len > 0)
                gw_buf_append(&data, "\n", 1);
            gw_buf_append(&data, d, dn);
        }
        line = nl != NULL ? nl + 1 : end;
    }
    if (s->ended || data.len == 0) {
        gw_buf_free(&data);
        return 0;
    }
    if (data.len == 6 && memcmp(data.data, "[DONE]", 6) == 0) {
        rc = message_end(s, out);
    } else {
        struct json_object *o = gw_worker_prov_parse(data.data, data.len);
        if (o != NULL)
            rc = chunk(s, o, out);
        json_object_put(o);
    }
    gw_buf_free(&data);
    return rc;
}

int
gw_worker_messages_stream_feed(struct gw_messages_stream *s, const char *data, size_t len,
                               struct gw_buf *out)
{
    size_t off = 0, n;
    int rc;

    if ((rc = gw_buf_append(s->in, data, len)) != 0)
        return rc;
    while ((n = gw_worker_sse_event_end(s->in->data + off, s->in->len - off)) > 0) {
        if ((rc = event_in(s, s->in->data + off, n, out)) != 0)
            return rc;
        off += n;
    }
    gw_buf_consume(s->in, off);
    return 0;
}

int
gw_worker_messages_stream_finish(struct gw_messages_stream *s, struct gw_buf *out)
{
    int rc = 0;

    if (s->in->len > 0)
        rc = event_in(s, s->in->data, s->in->len, out);
    s->in->len = 0;
    /* A stream that ended without [DONE] but with its finish reason is
     * whole; anything else was cut short and said so in an error event. */
    if (rc == 0 && s->started && !s->ended && s->stop_reason != NULL)
        rc = message_end(s, out);
    return rc;
}
