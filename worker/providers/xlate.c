/*
 * xlate.c - the pieces every translating adapter uses: the provider's
 * request body and headers, the OpenAI answer, error and stream chunks
 * made from what the provider sent, and the framing of server-sent
 * events coming from a provider.
 *
 * A translated stream leaves in OpenAI's order: a first chunk with the
 * role, content and tool call deltas, one chunk with the finish_reason, a
 * usage chunk, then "data: [DONE]".  The usage chunk always goes to the
 * SSE relay, which reads it for accounting and drops it unless the client
 * asked for stream_options.include_usage, as with an OpenAI upstream.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "worker/providers/providers.h"

#define JSON_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* ------------------------------------------------------- the request */

int
gw_worker_prov_body_set(struct gw_call *call, struct json_object *o)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_FLAGS, &len);
    int rc = GW_ENOMEM;

    if (s != NULL) {
        call->body = gw_arena_strndup(call->req->arena, s, len);
        call->body_len = len;
        rc = 0;
    }
    json_object_put(o);
    return rc;
}

int
gw_worker_prov_header_add(struct gw_call *call, const char *fmt, ...)
{
    va_list ap;
    char line[2048];
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(line))
        return GW_EINVAL;
    /* The adapters' headers carry the provider's credentials: the copy in
     * the arena is wiped when the call ends, this one now. */
    int rc = gw_worker_call_header(call, gw_arena_strdup(call->req->arena, line), true);
    explicit_bzero(line, sizeof(line));
    return rc;
}

char *
gw_worker_prov_path_escape(struct gw_arena *a, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    char *out = gw_arena_alloc(a, strlen(s) * 3 + 1), *w = out;

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            *w++ = (char)c;
        } else {
            *w++ = '%';
            *w++ = hex[c >> 4];
            *w++ = hex[c & 15];
        }
    }
    *w = '\0';
    return out;
}

struct json_object *
gw_worker_prov_get(struct json_object *o, const char *key)
{
    struct json_object *v;

    if (o == NULL || !json_object_is_type(o, json_type_object) ||
        !json_object_object_get_ex(o, key, &v))
        return NULL;
    return v;
}

const char *
gw_worker_prov_str(struct json_object *o, const char *key)
{
    struct json_object *v = gw_worker_prov_get(o, key);

    return v != NULL && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

void
gw_worker_prov_turn_add(struct json_object *turns, const char *role, const char *list_key,
                        struct json_object *item)
{
    size_t n = gw_worker_json_len(turns);
    struct json_object *last = n > 0 ? gw_worker_json_at(turns, n - 1) : NULL;
    const char *last_role = gw_worker_prov_str(last, "role");

    if (last_role == NULL || strcmp(last_role, role) != 0) {
        last = json_object_new_object();
        json_object_object_add(last, "role", json_object_new_string(role));
        json_object_object_add(last, list_key, json_object_new_array());
        json_object_array_add(turns, last);
    }
    json_object_array_add(gw_worker_prov_get(last, list_key), item);
}

void
gw_worker_prov_content_add(struct gw_arena *a, struct json_object *turns, const char *role,
                           const char *list_key, struct json_object *content,
                           struct json_object *(*text)(const char *s),
                           struct json_object *(*image)(struct gw_arena *a, const char *url))
{
    struct json_object *item;

    if (content != NULL && json_object_is_type(content, json_type_string)) {
        if (json_object_get_string_len(content) > 0)
            gw_worker_prov_turn_add(turns, role, list_key, text(json_object_get_string(content)));
        return;
    }
    for (size_t i = 0; i < gw_worker_json_len(content); i++) {
        struct json_object *part = gw_worker_json_at(content, i);
        const char *type = gw_worker_prov_str(part, "type"), *s;
        item = NULL;
        if (type == NULL)
            continue;
        if (strcmp(type, "text") == 0 && (s = gw_worker_prov_str(part, "text")) != NULL &&
            s[0] != '\0') {
            item = text(s);
        } else if (strcmp(type, "image_url") == 0) {
            struct json_object *iu = gw_worker_prov_get(part, "image_url");
            s = iu != NULL && json_object_is_type(iu, json_type_string)
                    ? json_object_get_string(iu)
                    : gw_worker_prov_str(iu, "url");
            item = s != NULL ? image(a, s) : NULL;
        }
        if (item != NULL)
            gw_worker_prov_turn_add(turns, role, list_key, item);
    }
}

struct json_object *
gw_worker_prov_copy(struct json_object *v)
{
    struct json_object *out = NULL;

    if (v == NULL)
        return NULL;
    if (json_object_deep_copy(v, &out, NULL) != 0)
        return NULL;
    return out;
}

const char *
gw_worker_prov_content_text(struct gw_arena *a, struct json_object *content)
{
    struct gw_buf b = {0};
    const char *out = NULL;

    if (content == NULL)
        return NULL;
    if (json_object_is_type(content, json_type_string))
        return json_object_get_string(content);
    if (!json_object_is_type(content, json_type_array))
        return NULL;
    for (size_t i = 0; i < gw_worker_json_len(content); i++) {
        struct json_object *part = gw_worker_json_at(content, i);
        const char *type = gw_worker_prov_str(part, "type"),
                   *text = gw_worker_prov_str(part, "text");
        if (text != NULL && (type == NULL || strcmp(type, "text") == 0))
            gw_buf_printf(&b, "%s%s", b.len > 0 ? "\n" : "", text);
    }
    if (b.data != NULL)
        out = gw_arena_strndup(a, b.data, b.len);
    gw_buf_free(&b);
    return out;
}

bool
gw_worker_prov_data_url(struct gw_arena *a, const char *url, const char **media_type,
                        const char **data)
{
    const char *comma, *semi;

    if (url == NULL || strncmp(url, "data:", 5) != 0 || (comma = strchr(url, ',')) == NULL)
        return false;
    semi = memmem(url, (size_t)(comma - url), ";base64", 7);
    if (semi == NULL)
        return false;
    *media_type = gw_arena_strndup(a, url + 5, (size_t)(semi - url - 5));
    *data = comma + 1;
    return true;
}

int64_t
gw_worker_prov_max_tokens(struct json_object *req)
{
    struct json_object *v = gw_worker_prov_get(req, "max_completion_tokens");

    if (v == NULL || !json_object_is_type(v, json_type_int))
        v = gw_worker_prov_get(req, "max_tokens");
    if (v == NULL || !json_object_is_type(v, json_type_int))
        return 0;
    return json_object_get_int64(v);
}

struct json_object *
gw_worker_prov_parse(const char *data, size_t len)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = NULL;

    if (tok == NULL)
        return NULL;
    o = json_tokener_parse_ex(tok, data, (int)len);
    if (o != NULL && (json_tokener_get_error(tok) != json_tokener_success ||
                      !json_object_is_type(o, json_type_object))) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/* ------------------------------------------------------- the answers */

static int
serialize(struct gw_call *call, struct json_object *o, const char **out, size_t *out_len)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_FLAGS, &len);
    int rc = GW_ENOMEM;

    if (s != NULL) {
        *out = gw_arena_strndup(call->req->arena, s, len);
        *out_len = len;
        rc = 0;
    }
    json_object_put(o);
    return rc;
}

static struct json_object *
usage_object(int64_t prompt, int64_t completion, int64_t cached)
{
    struct json_object *u = json_object_new_object();

    json_object_object_add(u, "prompt_tokens", json_object_new_int64(prompt));
    json_object_object_add(u, "completion_tokens", json_object_new_int64(completion));
    json_object_object_add(u, "total_tokens", json_object_new_int64(prompt + completion));
    if (cached > 0) {
        struct json_object *d = json_object_new_object();
        json_object_object_add(d, "cached_tokens", json_object_new_int64(cached));
        json_object_object_add(u, "prompt_tokens_details", d);
    }
    return u;
}

struct json_object *
gw_worker_prov_tool_call(const char *id, const char *name, const char *arguments)
{
    struct json_object *tc = json_object_new_object(), *fn = json_object_new_object();

    json_object_object_add(tc, "id", json_object_new_string(id));
    json_object_object_add(tc, "type", json_object_new_string("function"));
    json_object_object_add(fn, "name", json_object_new_string(name));
    json_object_object_add(fn, "arguments", json_object_new_string(arguments));
    json_object_object_add(tc, "function", fn);
    return tc;
}

int
gw_worker_prov_answer(struct gw_call *call, struct gw_worker_prov_answer *a, const char **out,
                      size_t *out_len)
{
    struct json_object *o = json_object_new_object(), *choices = json_object_new_array(),
                       *choice = json_object_new_object(), *msg = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_string(a->id));
    json_object_object_add(o, "object", json_object_new_string("chat.completion"));
    json_object_object_add(o, "created", json_object_new_int64(call->created));
    json_object_object_add(o, "model", json_object_new_string(a->model));
    json_object_object_add(msg, "role", json_object_new_string("assistant"));
    json_object_object_add(msg, "content",
                           a->content != NULL ? json_object_new_string(a->content) : NULL);
    if (a->tool_calls != NULL)
        json_object_object_add(msg, "tool_calls", a->tool_calls);
    json_object_object_add(choice, "index", json_object_new_int(0));
    json_object_object_add(choice, "message", msg);
    json_object_object_add(choice, "logprobs", NULL);
    json_object_object_add(choice, "finish_reason", json_object_new_string(a->finish_reason));
    json_object_array_add(choices, choice);
    json_object_object_add(o, "choices", choices);
    json_object_object_add(o, "usage",
                           usage_object(a->prompt_tokens, a->completion_tokens, a->cached_tokens));
    a->tool_calls = NULL;
    return serialize(call, o, out, out_len);
}

const char *
gw_worker_prov_error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 429: return "rate_limit_error";
    default: return status >= 500 ? "upstream_error" : "invalid_request_error";
    }
}

static struct json_object *
error_object(const char *type, const char *code, const char *message)
{
    struct json_object *o = json_object_new_object(), *e = json_object_new_object();

    json_object_object_add(e, "message", json_object_new_string(message));
    json_object_object_add(e, "type", json_object_new_string(type));
    json_object_object_add(e, "param", NULL);
    json_object_object_add(e, "code", code != NULL ? json_object_new_string(code) : NULL);
    json_object_object_add(o, "error", e);
    return o;
}

int
gw_worker_prov_error(struct gw_call *call, const char *type, const char *code, const char *message,
                     const char **out, size_t *out_len)
{
    return serialize(call, error_object(type, code, message), out, out_len);
}

/* ------------------------------------------------------- the stream */

void
gw_worker_xstream_init(struct gw_xstream *xs, struct gw_call *call, gw_sse_emit_fn emit, void *ctx)
{
    memset(xs, 0, sizeof(*xs));
    xs->call = call;
    xs->emit = emit;
    xs->ctx = ctx;
    xs->id = gw_arena_printf(call->req->arena, "chatcmpl-%s", call->req->id);
    xs->model = call->target_model;
    for (size_t i = 0; i < GW_XSTREAM_BLOCKS; i++)
        xs->block_tool[i] = -1;
}

void
gw_worker_xstream_fini(struct gw_xstream *xs)
{
    gw_buf_free(&xs->in);
    gw_buf_free(&xs->out);
}

/* One event "data: {...}\n\n" of o (put) into xs->out. */
static int
event_add(struct gw_xstream *xs, struct json_object *o)
{
    size_t len;
    const char *s = json_object_to_json_string_length(o, JSON_FLAGS, &len);
    int rc = GW_ENOMEM;

    if (s != NULL && gw_buf_append(&xs->out, "data: ", 6) == 0 &&
        gw_buf_append(&xs->out, s, len) == 0 && gw_buf_append(&xs->out, "\n\n", 2) == 0)
        rc = 0;
    json_object_put(o);
    return rc;
}

/* A chunk object with one choice whose delta is delta (taken). */
static struct json_object *
chunk_new(struct gw_xstream *xs, struct json_object *delta, const char *finish_reason)
{
    struct json_object *o = json_object_new_object(), *choices = json_object_new_array(),
                       *choice = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_string(xs->id));
    json_object_object_add(o, "object", json_object_new_string("chat.completion.chunk"));
    json_object_object_add(o, "created", json_object_new_int64(xs->call->created));
    json_object_object_add(o, "model", json_object_new_string(xs->model ? xs->model : ""));
    json_object_object_add(choice, "index", json_object_new_int(0));
    json_object_object_add(choice, "delta", delta);
    json_object_object_add(choice, "logprobs", NULL);
    json_object_object_add(choice, "finish_reason",
                           finish_reason != NULL ? json_object_new_string(finish_reason) : NULL);
    json_object_array_add(choices, choice);
    json_object_object_add(o, "choices", choices);
    return o;
}

int
gw_worker_prov_chunk_role(struct gw_xstream *xs)
{
    struct json_object *delta;

    if (xs->started)
        return 0;
    xs->started = true;
    delta = json_object_new_object();
    json_object_object_add(delta, "role", json_object_new_string("assistant"));
    json_object_object_add(delta, "content", json_object_new_string(""));
    return event_add(xs, chunk_new(xs, delta, NULL));
}

int
gw_worker_prov_chunk_text(struct gw_xstream *xs, const char *text, size_t len)
{
    struct json_object *delta;
    int rc;

    if (len == 0)
        return 0;
    if ((rc = gw_worker_prov_chunk_role(xs)) != 0)
        return rc;
    delta = json_object_new_object();
    json_object_object_add(delta, "content", json_object_new_string_len(text, (int)len));
    return event_add(xs, chunk_new(xs, delta, NULL));
}

int
gw_worker_prov_chunk_tool(struct gw_xstream *xs, int index, const char *id, const char *name,
                          const char *args, size_t args_len)
{
    struct json_object *delta, *calls, *tc, *fn;
    int rc;

    if ((rc = gw_worker_prov_chunk_role(xs)) != 0)
        return rc;
    if (id == NULL && name == NULL && args_len == 0)
        return 0;
    xs->saw_tool = true;
    delta = json_object_new_object();
    calls = json_object_new_array();
    tc = json_object_new_object();
    fn = json_object_new_object();
    json_object_object_add(tc, "index", json_object_new_int(index));
    if (id != NULL) {
        json_object_object_add(tc, "id", json_object_new_string(id));
        json_object_object_add(tc, "type", json_object_new_string("function"));
    }
    if (name != NULL)
        json_object_object_add(fn, "name", json_object_new_string(name));
    json_object_object_add(fn, "arguments",
                           json_object_new_string_len(args != NULL ? args : "", (int)args_len));
    json_object_object_add(tc, "function", fn);
    json_object_array_add(calls, tc);
    json_object_object_add(delta, "tool_calls", calls);
    return event_add(xs, chunk_new(xs, delta, NULL));
}

int
gw_worker_prov_chunk_finish(struct gw_xstream *xs)
{
    int rc;

    if (xs->finished)
        return 0;
    if ((rc = gw_worker_prov_chunk_role(xs)) != 0)
        return rc;
    xs->finished = true;
    return event_add(xs, chunk_new(xs, json_object_new_object(),
                                   xs->finish_reason != NULL ? xs->finish_reason : "stop"));
}

int
gw_worker_prov_chunk_end(struct gw_xstream *xs)
{
    struct json_object *o;
    int rc;

    if (xs->ended)
        return 0;
    if ((rc = gw_worker_prov_chunk_finish(xs)) != 0)
        return rc;
    xs->ended = true;
    o = json_object_new_object();
    json_object_object_add(o, "id", json_object_new_string(xs->id));
    json_object_object_add(o, "object", json_object_new_string("chat.completion.chunk"));
    json_object_object_add(o, "created", json_object_new_int64(xs->call->created));
    json_object_object_add(o, "model", json_object_new_string(xs->model ? xs->model : ""));
    json_object_object_add(o, "choices", json_object_new_array());
    json_object_object_add(
        o, "usage", usage_object(xs->prompt_tokens, xs->completion_tokens, xs->cached_tokens));
    if ((rc = event_add(xs, o)) != 0)
        return rc;
    return gw_buf_append(&xs->out, "data: [DONE]\n\n", 14);
}

int
gw_worker_prov_chunk_error(struct gw_xstream *xs, const char *type, const char *code,
                           const char *message)
{
    if (xs->ended)
        return 0;
    xs->ended = true;
    return event_add(xs, error_object(type, code, message));
}

int
gw_worker_prov_flush(struct gw_xstream *xs)
{
    int rc = 0;

    if (xs->out.len > 0)
        rc = xs->emit(xs->ctx, xs->out.data, xs->out.len);
    xs->out.len = 0;
    return rc;
}

/* One complete event p[0..len) (without its blank line): fields to fn. */
static int
sse_event(struct gw_xstream *xs, const char *p, size_t len, gw_worker_prov_event_fn fn)
{
    struct gw_buf data = {0};
    char event[64] = "";
    int rc = 0;

    for (size_t off = 0; off < len;) {
        const char *nl = memchr(p + off, '\n', len - off);
        size_t end = nl != NULL ? (size_t)(nl - p) : len, llen = end - off;
        const char *line = p + off;
        if (llen > 0 && line[llen - 1] == '\r')
            llen--;
        off = end + 1;
        if (llen >= 5 && memcmp(line, "data:", 5) == 0) {
            size_t skip = llen > 5 && line[5] == ' ' ? 6 : 5;
            if (data.len > 0)
                gw_buf_append(&data, "\n", 1);
            if (gw_buf_append(&data, line + skip, llen - skip) != 0)
                rc = GW_ENOMEM;
        } else if (llen >= 6 && memcmp(line, "event:", 6) == 0) {
            size_t skip = llen > 6 && line[6] == ' ' ? 7 : 6;
            snprintf(event, sizeof(event), "%.*s", (int)(llen - skip), line + skip);
        }
    }
    if (rc == 0 && (data.len > 0 || event[0] != '\0') && !xs->ended)
        rc = fn(xs, event, data.data != NULL ? data.data : "", data.len);
    gw_buf_free(&data);
    return rc;
}

int
gw_worker_prov_sse_feed(struct gw_xstream *xs, const char *data, size_t len,
                        gw_worker_prov_event_fn fn)
{
    int rc;

    if ((rc = gw_buf_append(&xs->in, data, len)) != 0)
        return rc;
    size_t off = 0;
    while (rc == 0) {
        const char *p = xs->in.data + off;
        size_t left = xs->in.len - off, end = 0, next = 0;
        /* The event ends at a blank line: "\n\n" or "\r\n\r\n". */
        for (size_t i = 0; i + 1 < left; i++) {
            if (p[i] != '\n')
                continue;
            if (p[i + 1] == '\n') {
                end = i;
                next = i + 2;
                break;
            }
            if (p[i + 1] == '\r' && i + 2 < left && p[i + 2] == '\n') {
                end = i;
                next = i + 3;
                break;
            }
        }
        if (next == 0)
            break;
        rc = sse_event(xs, p, end, fn);
        off += next;
    }
    gw_buf_consume(&xs->in, off);
    if (rc == 0)
        rc = gw_worker_prov_flush(xs);
    return rc;
}

/* ------------------------------------------------------- the registry */

const struct gw_provider_adapter *
gw_worker_provider_adapter(enum gw_provider_type type)
{
    switch (type) {
    case GW_PROVIDER_OPENAI: return &gw_worker_provider_openai;
    case GW_PROVIDER_AZURE: return &gw_worker_provider_azure;
    case GW_PROVIDER_ANTHROPIC: return &gw_worker_provider_anthropic;
    case GW_PROVIDER_GEMINI: return &gw_worker_provider_gemini;
    case GW_PROVIDER_BEDROCK: return &gw_worker_provider_bedrock;
    }
    return NULL;
}
