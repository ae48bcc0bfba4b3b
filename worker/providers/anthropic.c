/*
 * anthropic.c - Anthropic's Messages API (POST {base}/messages).
 *
 * Request: system and developer messages become the system prompt; user
 * and assistant content becomes content blocks (text, images from
 * image_url), an assistant's tool_calls become tool_use blocks, and
 * "tool" messages become tool_result blocks of a user turn (consecutive
 * turns of one role are merged, as the API wants them to alternate);
 * tools, tool_choice, stop, temperature and top_p are carried over, and
 * max_tokens, which Anthropic requires, defaults to the provider's
 * max_tokens (4096).
 *
 * Answer: text blocks become the message content, tool_use blocks its
 * tool_calls, stop_reason the finish_reason and input/output tokens the
 * usage.  A stream's message_start ... message_stop events become
 * chat.completion.chunk events as they come.
 */
#include <string.h>

#include "worker/providers/providers.h"

#define ANTHROPIC_MAX_TOKENS 4096

/* ------------------------------------------------------------ request */

/* Append block to the last message when it has role, else to a new one. */
static void
block_add(struct json_object *messages, const char *role, struct json_object *block)
{
    gw_worker_prov_turn_add(messages, role, "content", block);
}

static struct json_object *
text_block(const char *text)
{
    struct json_object *b = json_object_new_object();

    json_object_object_add(b, "type", json_object_new_string("text"));
    json_object_object_add(b, "text", json_object_new_string(text));
    return b;
}

static struct json_object *
image_block(struct gw_arena *a, const char *url)
{
    struct json_object *b = json_object_new_object(), *src = json_object_new_object();
    const char *media, *data;

    json_object_object_add(b, "type", json_object_new_string("image"));
    if (gw_worker_prov_data_url(a, url, &media, &data)) {
        json_object_object_add(src, "type", json_object_new_string("base64"));
        json_object_object_add(src, "media_type", json_object_new_string(media));
        json_object_object_add(src, "data", json_object_new_string(data));
    } else {
        json_object_object_add(src, "type", json_object_new_string("url"));
        json_object_object_add(src, "url", json_object_new_string(url));
    }
    json_object_object_add(b, "source", src);
    return b;
}

/* The blocks of an OpenAI content (a string or parts) into role's turn. */
static void
content_add(struct gw_arena *a, struct json_object *messages, const char *role,
            struct json_object *content)
{
    gw_worker_prov_content_add(a, messages, role, "content", content, text_block, image_block);
}

/* An assistant's tool calls as tool_use blocks. */
static void
tool_calls_add(struct json_object *messages, struct json_object *calls)
{
    for (size_t i = 0; i < gw_worker_json_len(calls); i++) {
        struct json_object *tc = gw_worker_json_at(calls, i);
        struct json_object *fn = gw_worker_prov_get(tc, "function");
        const char *args = gw_worker_prov_str(fn, "arguments");
        struct json_object *input = args != NULL ? gw_worker_prov_parse(args, strlen(args)) : NULL;
        struct json_object *b = json_object_new_object();

        json_object_object_add(b, "type", json_object_new_string("tool_use"));
        json_object_object_add(b, "id",
                               json_object_new_string(gw_worker_prov_str(tc, "id") ?: "call_0"));
        json_object_object_add(b, "name",
                               json_object_new_string(gw_worker_prov_str(fn, "name") ?: ""));
        json_object_object_add(b, "input", input != NULL ? input : json_object_new_object());
        block_add(messages, "assistant", b);
    }
}

static struct json_object *
tools_convert(struct json_object *tools)
{
    struct json_object *out = json_object_new_array();

    for (size_t i = 0; i < gw_worker_json_len(tools); i++) {
        struct json_object *fn = gw_worker_prov_get(gw_worker_json_at(tools, i), "function");
        struct json_object *t, *params;
        if (gw_worker_prov_str(fn, "name") == NULL)
            continue;
        t = json_object_new_object();
        json_object_object_add(t, "name", json_object_new_string(gw_worker_prov_str(fn, "name")));
        if (gw_worker_prov_str(fn, "description") != NULL)
            json_object_object_add(t, "description",
                                   json_object_new_string(gw_worker_prov_str(fn, "description")));
        params = gw_worker_prov_get(fn, "parameters");
        if (params == NULL) {
            params = json_object_new_object();
            json_object_object_add(params, "type", json_object_new_string("object"));
        } else {
            params = gw_worker_prov_copy(params);
        }
        json_object_object_add(t, "input_schema", params);
        json_object_array_add(out, t);
    }
    return out;
}

/* tool_choice and parallel_tool_calls as Anthropic's tool_choice, or NULL. */
static struct json_object *
tool_choice_convert(struct json_object *req)
{
    struct json_object *tc = gw_worker_prov_get(req, "tool_choice"), *out = NULL;
    struct json_object *ptc = gw_worker_prov_get(req, "parallel_tool_calls");
    const char *type = NULL, *name = NULL;

    if (tc != NULL && json_object_is_type(tc, json_type_string)) {
        const char *s = json_object_get_string(tc);
        type = strcmp(s, "required") == 0 ? "any" : strcmp(s, "none") == 0 ? "none" : "auto";
    } else if (tc != NULL && json_object_is_type(tc, json_type_object)) {
        name = gw_worker_prov_str(gw_worker_prov_get(tc, "function"), "name");
        type = name != NULL ? "tool" : "auto";
    }
    if (ptc != NULL && json_object_is_type(ptc, json_type_boolean) &&
        !json_object_get_boolean(ptc) && type == NULL)
        type = "auto";
    if (type == NULL)
        return NULL;
    out = json_object_new_object();
    json_object_object_add(out, "type", json_object_new_string(type));
    if (name != NULL)
        json_object_object_add(out, "name", json_object_new_string(name));
    if (ptc != NULL && json_object_is_type(ptc, json_type_boolean) &&
        !json_object_get_boolean(ptc) && strcmp(type, "none") != 0)
        json_object_object_add(out, "disable_parallel_tool_use", json_object_new_boolean(1));
    return out;
}

static int
anthropic_request(struct gw_call *call)
{
    struct gw_arena *a = call->req->arena;
    struct json_object *req = gw_worker_call_json(call), *out, *messages, *v;
    struct gw_buf system = {0};
    int64_t max_tokens = gw_worker_prov_max_tokens(req);
    const char *version = NULL;
    int rc;

    if (call->endpoint != GW_EP_CHAT)
        return GW_ENOENT; /* no embeddings */
    if (max_tokens <= 0)
        max_tokens = call->provider != NULL && call->provider->max_tokens > 0
                         ? call->provider->max_tokens
                         : ANTHROPIC_MAX_TOKENS;
    out = json_object_new_object();
    messages = json_object_new_array();
    json_object_object_add(out, "model", json_object_new_string(call->target_model));
    json_object_object_add(out, "max_tokens", json_object_new_int64(max_tokens));

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
                gw_buf_printf(&system, "%s%s", system.len > 0 ? "\n\n" : "", text);
        } else if (strcmp(role, "user") == 0) {
            content_add(a, messages, "user", content);
        } else if (strcmp(role, "assistant") == 0) {
            content_add(a, messages, "assistant", content);
            tool_calls_add(messages, gw_worker_prov_get(m, "tool_calls"));
        } else if (strcmp(role, "tool") == 0) {
            struct json_object *b = json_object_new_object();
            const char *text = gw_worker_prov_content_text(a, content);
            json_object_object_add(b, "type", json_object_new_string("tool_result"));
            json_object_object_add(
                b, "tool_use_id",
                json_object_new_string(gw_worker_prov_str(m, "tool_call_id") ?: "call_0"));
            json_object_object_add(b, "content", json_object_new_string(text ?: ""));
            block_add(messages, "user", b);
        }
    }
    if (system.len > 0)
        json_object_object_add(out, "system", json_object_new_string(system.data));
    gw_buf_free(&system);
    json_object_object_add(out, "messages", messages);

    if ((v = gw_worker_prov_get(req, "stop")) != NULL) {
        struct json_object *seqs = json_object_new_array();
        if (json_object_is_type(v, json_type_string))
            json_object_array_add(seqs, json_object_new_string(json_object_get_string(v)));
        else if (json_object_is_type(v, json_type_array))
            for (size_t i = 0; i < gw_worker_json_len(v); i++)
                json_object_array_add(seqs, gw_worker_prov_copy(gw_worker_json_at(v, i)));
        json_object_object_add(out, "stop_sequences", seqs);
    }
    if ((v = gw_worker_prov_get(req, "temperature")) != NULL &&
        !json_object_is_type(v, json_type_null))
        json_object_object_add(out, "temperature", gw_worker_prov_copy(v));
    if ((v = gw_worker_prov_get(req, "top_p")) != NULL && !json_object_is_type(v, json_type_null))
        json_object_object_add(out, "top_p", gw_worker_prov_copy(v));
    if ((v = gw_worker_prov_get(req, "tools")) != NULL && json_object_is_type(v, json_type_array) &&
        gw_worker_json_len(v) > 0) {
        json_object_object_add(out, "tools", tools_convert(v));
        if ((v = tool_choice_convert(req)) != NULL)
            json_object_object_add(out, "tool_choice", v);
    }
    if (gw_worker_prov_str(req, "user") != NULL) {
        struct json_object *md = json_object_new_object();
        json_object_object_add(md, "user_id",
                               json_object_new_string(gw_worker_prov_str(req, "user")));
        json_object_object_add(out, "metadata", md);
    }
    if (call->stream)
        json_object_object_add(out, "stream", json_object_new_boolean(1));

    call->url = gw_arena_printf(a, "%s/messages", call->base_url);
    if ((rc = gw_worker_prov_body_set(call, out)) != 0)
        return rc;
    if (call->provider != NULL && call->gen != NULL)
        version = gw_gen_str(call->gen, call->provider->api_version);
    if ((rc = gw_worker_prov_header_add(call, "anthropic-version: %s", version ?: "2023-06-01")) !=
        0)
        return rc;
    if (call->api_key != NULL)
        return gw_worker_prov_header_add(call, "x-api-key: %s", call->api_key);
    return 0;
}

/* ------------------------------------------------------------- answer */

static const char *
finish_reason(const char *stop_reason)
{
    if (stop_reason == NULL)
        return "stop";
    if (strcmp(stop_reason, "max_tokens") == 0 ||
        strcmp(stop_reason, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop_reason, "tool_use") == 0)
        return "tool_calls";
    if (strcmp(stop_reason, "refusal") == 0)
        return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn */
}

/* Anthropic counts cached prompt tokens apart; OpenAI's prompt has them. */
static void
usage_read(struct json_object *u, int64_t *prompt, int64_t *completion, int64_t *cached)
{
    struct json_object *v;

    if (u == NULL)
        return;
    if ((v = gw_worker_prov_get(u, "input_tokens")) != NULL) {
        *prompt = json_object_get_int64(v);
        *cached = 0;
        if ((v = gw_worker_prov_get(u, "cache_creation_input_tokens")) != NULL)
            *prompt += json_object_get_int64(v);
        if ((v = gw_worker_prov_get(u, "cache_read_input_tokens")) != NULL) {
            *cached = json_object_get_int64(v);
            *prompt += *cached;
        }
    }
    if ((v = gw_worker_prov_get(u, "output_tokens")) != NULL)
        *completion = json_object_get_int64(v);
}

static int
anthropic_response(struct gw_call *call, const char *body, size_t len, const char **out,
                   size_t *out_len)
{
    struct gw_arena *a = call->req->arena;
    struct json_object *o = gw_worker_prov_parse(body, len), *content;
    struct gw_worker_prov_answer ans = {0};
    struct gw_buf text = {0};
    int rc;

    if (o == NULL)
        return GW_EPROTO;
    ans.id = gw_worker_prov_str(o, "id") ?: "msg";
    ans.model = gw_worker_prov_str(o, "model") ?: call->target_model;
    content = gw_worker_prov_get(o, "content");
    if (content != NULL && !json_object_is_type(content, json_type_array)) {
        json_object_put(o);
        return GW_EPROTO; /* no message of Anthropic's */
    }
    for (size_t i = 0; i < gw_worker_json_len(content); i++) {
        struct json_object *b = gw_worker_json_at(content, i);
        const char *type = gw_worker_prov_str(b, "type");
        if (type != NULL && strcmp(type, "text") == 0 && gw_worker_prov_str(b, "text") != NULL) {
            gw_buf_printf(&text, "%s", gw_worker_prov_str(b, "text"));
        } else if (type != NULL && strcmp(type, "tool_use") == 0) {
            struct json_object *input = gw_worker_prov_get(b, "input");
            if (ans.tool_calls == NULL)
                ans.tool_calls = json_object_new_array();
            json_object_array_add(
                ans.tool_calls,
                gw_worker_prov_tool_call(
                    gw_worker_prov_str(b, "id") ?: "", gw_worker_prov_str(b, "name") ?: "",
                    input != NULL ? json_object_to_json_string_ext(input, JSON_C_TO_STRING_PLAIN)
                                  : "{}"));
        }
    }
    ans.content = text.data != NULL        ? gw_arena_strndup(a, text.data, text.len)
                  : ans.tool_calls != NULL ? NULL
                                           : "";
    ans.finish_reason = finish_reason(gw_worker_prov_str(o, "stop_reason"));
    usage_read(gw_worker_prov_get(o, "usage"), &ans.prompt_tokens, &ans.completion_tokens,
               &ans.cached_tokens);
    rc = gw_worker_prov_answer(call, &ans, out, out_len);
    gw_buf_free(&text);
    json_object_put(o);
    return rc;
}

/* Anthropic's error types as OpenAI's, and the status each stands for. */
static const struct {
    const char *anthropic;
    const char *openai;
    int status;
} error_types[] = {
    {"invalid_request_error", "invalid_request_error", 400},
    {"authentication_error", "authentication_error", 401},
    {"permission_error", "permission_error", 403},
    {"not_found_error", "invalid_request_error", 404},
    {"request_too_large", "invalid_request_error", 413},
    {"rate_limit_error", "rate_limit_error", 429},
    {"api_error", "upstream_error", 502},
    {"overloaded_error", "upstream_error", 503},
};

static int
anthropic_error(struct gw_call *call, int *status, const char *body, size_t len, const char **out,
                size_t *out_len)
{
    struct json_object *o = gw_worker_prov_parse(body, len);
    struct json_object *e = gw_worker_prov_get(o, "error");
    const char *etype = gw_worker_prov_str(e, "type"), *msg = gw_worker_prov_str(e, "message");
    const char *type = gw_worker_prov_error_type(*status);
    int rc;

    for (size_t i = 0; etype != NULL && i < sizeof(error_types) / sizeof(error_types[0]); i++) {
        if (strcmp(etype, error_types[i].anthropic) == 0) {
            type = error_types[i].openai;
            /* 529 is Anthropic's own; the rest keep the status they came with. */
            if (*status == 529)
                *status = error_types[i].status;
        }
    }
    rc = gw_worker_prov_error(call, type, etype, msg ?: "The upstream provider failed.", out,
                              out_len);
    json_object_put(o);
    return rc;
}

/* ------------------------------------------------------------- stream */

static int
anthropic_event(struct gw_xstream *xs, const char *event, const char *data, size_t len)
{
    struct gw_arena *a = xs->call->req->arena;
    struct json_object *o = gw_worker_prov_parse(data, len), *v;
    const char *type = gw_worker_prov_str(o, "type") ?: event;
    int64_t index = (v = gw_worker_prov_get(o, "index")) != NULL ? json_object_get_int64(v) : -1;
    int rc = 0;

    if (o == NULL)
        return 0; /* not JSON: nothing to translate */
    if (strcmp(type, "message_start") == 0) {
        struct json_object *m = gw_worker_prov_get(o, "message");
        if (gw_worker_prov_str(m, "id") != NULL)
            xs->id = gw_arena_strdup(a, gw_worker_prov_str(m, "id"));
        if (gw_worker_prov_str(m, "model") != NULL)
            xs->model = gw_arena_strdup(a, gw_worker_prov_str(m, "model"));
        usage_read(gw_worker_prov_get(m, "usage"), &xs->prompt_tokens, &xs->completion_tokens,
                   &xs->cached_tokens);
        rc = gw_worker_prov_chunk_role(xs);
    } else if (strcmp(type, "content_block_start") == 0) {
        struct json_object *b = gw_worker_prov_get(o, "content_block");
        const char *btype = gw_worker_prov_str(b, "type");
        if (btype != NULL && strcmp(btype, "tool_use") == 0 && index >= 0 &&
            index < GW_XSTREAM_BLOCKS) {
            int k = xs->ntools++;
            xs->block_tool[index] = (int16_t)k;
            rc = gw_worker_prov_chunk_tool(xs, k, gw_worker_prov_str(b, "id") ?: "",
                                           gw_worker_prov_str(b, "name") ?: "", "", 0);
        } else if (btype != NULL && strcmp(btype, "text") == 0 &&
                   gw_worker_prov_str(b, "text") != NULL) {
            const char *t = gw_worker_prov_str(b, "text");
            rc = gw_worker_prov_chunk_text(xs, t, strlen(t));
        }
    } else if (strcmp(type, "content_block_delta") == 0) {
        struct json_object *d = gw_worker_prov_get(o, "delta");
        const char *dtype = gw_worker_prov_str(d, "type"), *s;
        if (dtype != NULL && strcmp(dtype, "text_delta") == 0 &&
            (s = gw_worker_prov_str(d, "text")) != NULL)
            rc = gw_worker_prov_chunk_text(xs, s, strlen(s));
        else if (dtype != NULL && strcmp(dtype, "input_json_delta") == 0 &&
                 (s = gw_worker_prov_str(d, "partial_json")) != NULL && index >= 0 &&
                 index < GW_XSTREAM_BLOCKS && xs->block_tool[index] >= 0)
            rc = gw_worker_prov_chunk_tool(xs, xs->block_tool[index], NULL, NULL, s, strlen(s));
    } else if (strcmp(type, "message_delta") == 0) {
        const char *sr = gw_worker_prov_str(gw_worker_prov_get(o, "delta"), "stop_reason");
        if (sr != NULL)
            xs->finish_reason = finish_reason(sr);
        usage_read(gw_worker_prov_get(o, "usage"), &xs->prompt_tokens, &xs->completion_tokens,
                   &xs->cached_tokens);
    } else if (strcmp(type, "message_stop") == 0) {
        rc = gw_worker_prov_chunk_end(xs);
    } else if (strcmp(type, "error") == 0) {
        struct json_object *e = gw_worker_prov_get(o, "error");
        const char *etype = gw_worker_prov_str(e, "type");
        const char *otype = "upstream_error";
        for (size_t i = 0; etype != NULL && i < sizeof(error_types) / sizeof(error_types[0]); i++)
            if (strcmp(etype, error_types[i].anthropic) == 0)
                otype = error_types[i].openai;
        rc = gw_worker_prov_chunk_error(xs, otype, etype ?: "upstream_error",
                                        gw_worker_prov_str(e, "message") ?: "The stream failed.");
    }
    /* ping, content_block_stop and unknown events carry nothing. */
    json_object_put(o);
    return rc;
}

static int
anthropic_stream_feed(struct gw_xstream *xs, const char *data, size_t len)
{
    return gw_worker_prov_sse_feed(xs, data, len, anthropic_event);
}

static int
anthropic_stream_finish(struct gw_xstream *xs)
{
    int rc = gw_worker_prov_flush(xs);

    return rc != 0 ? rc : xs->ended ? 0 : GW_EPROTO;
}

const struct gw_provider_adapter gw_worker_provider_anthropic = {
    .type = "anthropic",
    .request = anthropic_request,
    .response = anthropic_response,
    .error = anthropic_error,
    .stream_feed = anthropic_stream_feed,
    .stream_finish = anthropic_stream_finish,
};
