/*
 * answer.c - the answer as the client got it, for the response cache and
 * for request capture.
 *
 * A non-streamed answer is kept as its bytes.  A stream is read event by
 * event as it is relayed (after anything that changes it on the way, so
 * what is kept is what the client saw) and put back together: per choice
 * the role, the content and refusal text, the tool calls (id, type,
 * function name, the arguments joined), the finish reason; the first
 * chunk's id, created, model and system_fingerprint; the usage chunk.
 * Only requests that are cached or captured pay for this: one JSON parse
 * per event.
 *
 * The other way, a stored chat.completion is replayed as a stream in
 * OpenAI's chunk shapes.
 */
#include <stdio.h>
#include <string.h>

#include "worker/worker.h"

#define ANSWER_MAX_CHOICES 16
#define ANSWER_MAX_TOOLS 64
/* Content replayed in pieces of at most this many bytes. */
#define REPLAY_PIECE_MAX 64

/* A growable string in the request's arena (doubling, old copies left). */
struct sbuf {
    char *p;
    size_t len, cap;
};

struct tool_call {
    const char *id, *type, *name;
    struct sbuf args;
    bool seen; /* a delta named its index: a stream may skip some */
};

struct choice {
    bool used;
    bool has_content;
    const char *role;
    const char *finish_reason;
    struct sbuf content;
    struct sbuf refusal;
    struct tool_call tools[ANSWER_MAX_TOOLS];
    int ntools;
};

struct gw_answer {
    struct gw_arena *a;
    const char *body; /* a non-streamed answer */
    size_t body_len;
    /* a stream */
    bool streamed;
    struct sbuf pending; /* an event not complete yet */
    const char *id, *model, *fingerprint;
    int64_t created;
    const char *usage; /* the usage object's JSON text */
    bool done;         /* data: [DONE] */
    bool error;        /* an error event */
    bool overflow;     /* more choices or tool calls than kept */
    struct choice choices[ANSWER_MAX_CHOICES];
};

static void
sbuf_add(struct gw_arena *a, struct sbuf *s, const char *data, size_t len)
{
    if (s->len + len + 1 > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        while (cap < s->len + len + 1)
            cap *= 2;
        char *p = gw_arena_alloc(a, cap);
        if (s->len > 0)
            memcpy(p, s->p, s->len);
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, data, len);
    s->len += len;
    s->p[s->len] = '\0';
}

struct gw_answer *
gw_worker_answer_create(struct gw_arena *a)
{
    struct gw_answer *an = gw_arena_zalloc(a, sizeof(*an));

    an->a = a;
    return an;
}

void
gw_worker_answer_body(struct gw_answer *an, const char *body, size_t len)
{
    an->body = gw_arena_strndup(an->a, body, len);
    an->body_len = len;
}

/* A string member of o copied into the arena, or NULL. */
static const char *
str_of(struct gw_arena *a, struct json_object *o, const char *key)
{
    struct json_object *v;

    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return gw_arena_strndup(a, json_object_get_string(v), (size_t)json_object_get_string_len(v));
}

static void
append_str(struct gw_arena *a, struct sbuf *s, struct json_object *o, const char *key, bool *seen)
{
    struct json_object *v;

    if (json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)) {
        sbuf_add(a, s, json_object_get_string(v), (size_t)json_object_get_string_len(v));
        if (seen != NULL)
            *seen = true;
    }
}

static void
delta_tools(struct gw_answer *an, struct choice *ch, struct json_object *tools)
{
    size_t n = gw_worker_json_len(tools);

    for (size_t i = 0; i < n; i++) {
        struct json_object *t = gw_worker_json_at(tools, i), *v, *fn;
        int idx = json_object_object_get_ex(t, "index", &v) ? json_object_get_int(v) : (int)i;
        if (idx < 0 || idx >= ANSWER_MAX_TOOLS) {
            an->overflow = true;
            continue;
        }
        struct tool_call *tc = &ch->tools[idx];
        tc->seen = true;
        if (idx >= ch->ntools)
            ch->ntools = idx + 1;
        if (tc->id == NULL)
            tc->id = str_of(an->a, t, "id");
        if (tc->type == NULL)
            tc->type = str_of(an->a, t, "type");
        if (json_object_object_get_ex(t, "function", &fn)) {
            if (tc->name == NULL)
                tc->name = str_of(an->a, fn, "name");
            append_str(an->a, &tc->args, fn, "arguments", NULL);
        }
    }
}

/* One event's data (a chat.completion.chunk, [DONE] or an error). */
static void
event_take(struct gw_answer *an, const char *data, size_t len)
{
    struct json_object *o, *choices, *v;

    if (len >= 6 && memcmp(data, "[DONE]", 6) == 0) {
        an->done = true;
        return;
    }
    struct json_tokener *tok = json_tokener_new();
    if (tok == NULL)
        return;
    o = json_tokener_parse_ex(tok, data, (int)len);
    json_tokener_free(tok);
    if (o == NULL || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return;
    }
    if (json_object_object_get_ex(o, "error", &v))
        an->error = true;
    if (an->id == NULL)
        an->id = str_of(an->a, o, "id");
    if (an->model == NULL)
        an->model = str_of(an->a, o, "model");
    if (an->fingerprint == NULL)
        an->fingerprint = str_of(an->a, o, "system_fingerprint");
    if (an->created == 0 && json_object_object_get_ex(o, "created", &v))
        an->created = json_object_get_int64(v);
    if (json_object_object_get_ex(o, "usage", &v) && json_object_is_type(v, json_type_object))
        an->usage =
            gw_arena_strdup(an->a, json_object_to_json_string_ext(
                                       v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    if (json_object_object_get_ex(o, "choices", &choices) &&
        json_object_is_type(choices, json_type_array)) {
        size_t n = gw_worker_json_len(choices);
        for (size_t i = 0; i < n; i++) {
            struct json_object *c = gw_worker_json_at(choices, i), *delta, *tools;
            int idx = json_object_object_get_ex(c, "index", &v) ? json_object_get_int(v) : 0;
            if (idx < 0 || idx >= ANSWER_MAX_CHOICES) {
                an->overflow = true;
                continue;
            }
            struct choice *ch = &an->choices[idx];
            ch->used = true;
            if (json_object_object_get_ex(c, "finish_reason", &v) &&
                json_object_is_type(v, json_type_string))
                ch->finish_reason = str_of(an->a, c, "finish_reason");
            if (!json_object_object_get_ex(c, "delta", &delta))
                continue;
            if (ch->role == NULL)
                ch->role = str_of(an->a, delta, "role");
            append_str(an->a, &ch->content, delta, "content", &ch->has_content);
            append_str(an->a, &ch->refusal, delta, "refusal", NULL);
            if (json_object_object_get_ex(delta, "tool_calls", &tools) &&
                json_object_is_type(tools, json_type_array))
                delta_tools(an, ch, tools);
        }
    }
    json_object_put(o);
}

/* The data: lines of one event, joined as SSE says (by newlines). */
static void
event_parse(struct gw_answer *an, const char *p, size_t len)
{
    struct sbuf data = {0};
    size_t lines = 0;

    for (size_t off = 0; off < len;) {
        const char *nl = memchr(p + off, '\n', len - off);
        size_t end = nl != NULL ? (size_t)(nl - p) : len, l = end - off;
        const char *line = p + off;
        if (l > 0 && line[l - 1] == '\r')
            l--;
        if (l >= 5 && memcmp(line, "data:", 5) == 0) {
            size_t skip = l > 5 && line[5] == ' ' ? 6 : 5;
            if (lines++ > 0)
                sbuf_add(an->a, &data, "\n", 1);
            sbuf_add(an->a, &data, line + skip, l - skip);
        }
        off = end + 1;
    }
    if (lines > 0)
        event_take(an, data.p, data.len);
}

void
gw_worker_answer_feed(struct gw_answer *an, const char *data, size_t len)
{
    const char *p = data;
    size_t n;

    an->streamed = true;
    if (an->pending.len > 0) {
        sbuf_add(an->a, &an->pending, data, len);
        p = an->pending.p;
        len = an->pending.len;
    }
    size_t off = 0;
    while ((n = gw_worker_sse_event_end(p + off, len - off)) > 0) {
        event_parse(an, p + off, n);
        off += n;
    }
    if (off == len) {
        an->pending.len = 0;
    } else if (p == an->pending.p) {
        memmove(an->pending.p, p + off, len - off);
        an->pending.len = len - off;
    } else {
        sbuf_add(an->a, &an->pending, p + off, len - off);
    }
}

/* -------------------------------------------------------------- output */

int
gw_worker_json_str(struct gw_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    int rc = gw_buf_append(b, "\"", 1);

    for (size_t i = 0; i < len && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        if (i > run)
            gw_buf_append(b, s + run, i - run);
        run = i + 1;
        char esc[7] = {'\\', (char)c, 0};
        switch (c) {
        case '"':
        case '\\': break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
        }
        rc = gw_buf_append(b, esc, strlen(esc));
    }
    if (rc == 0 && len > run)
        rc = gw_buf_append(b, s + run, len - run);
    if (rc == 0)
        rc = gw_buf_append(b, "\"", 1);
    return rc;
}

static void
json_opt(struct gw_buf *b, const char *s)
{
    if (s == NULL)
        gw_buf_append(b, "null", 4);
    else
        gw_worker_json_str(b, s, strlen(s));
}

const char *
gw_worker_answer_text(struct gw_answer *an, bool have_usage, int64_t prompt, int64_t completion,
                      size_t *len, bool *complete)
{
    struct gw_buf b = {0};
    bool all_finished = true, any = false;

    *complete = false;
    if (an == NULL)
        return NULL;
    if (!an->streamed) {
        if (an->body == NULL)
            return NULL;
        *complete = true;
        *len = an->body_len;
        return an->body;
    }
    gw_buf_printf(&b, "{\"id\":");
    json_opt(&b, an->id);
    gw_buf_printf(
        &b, ",\"object\":\"chat.completion\",\"created\":%lld,\"model\":", (long long)an->created);
    json_opt(&b, an->model);
    if (an->fingerprint != NULL) {
        gw_buf_printf(&b, ",\"system_fingerprint\":");
        json_opt(&b, an->fingerprint);
    }
    gw_buf_printf(&b, ",\"choices\":[");
    for (int i = 0; i < ANSWER_MAX_CHOICES; i++) {
        struct choice *ch = &an->choices[i];
        if (!ch->used)
            continue;
        gw_buf_printf(&b, "%s{\"index\":%d,\"message\":{\"role\":", any ? "," : "", i);
        any = true;
        json_opt(&b, ch->role != NULL ? ch->role : "assistant");
        gw_buf_printf(&b, ",\"content\":");
        if (ch->has_content)
            gw_worker_json_str(&b, ch->content.p ? ch->content.p : "", ch->content.len);
        else
            gw_buf_append(&b, "null", 4);
        if (ch->refusal.len > 0) {
            gw_buf_printf(&b, ",\"refusal\":");
            gw_worker_json_str(&b, ch->refusal.p, ch->refusal.len);
        }
        if (ch->ntools > 0) {
            gw_buf_printf(&b, ",\"tool_calls\":[");
            for (int t = 0, out = 0; t < ch->ntools; t++) {
                struct tool_call *tc = &ch->tools[t];
                if (!tc->seen)
                    continue;
                gw_buf_printf(&b, "%s{\"id\":", out++ ? "," : "");
                json_opt(&b, tc->id);
                gw_buf_printf(&b, ",\"type\":");
                json_opt(&b, tc->type != NULL ? tc->type : "function");
                gw_buf_printf(&b, ",\"function\":{\"name\":");
                json_opt(&b, tc->name);
                gw_buf_printf(&b, ",\"arguments\":");
                gw_worker_json_str(&b, tc->args.p ? tc->args.p : "", tc->args.len);
                gw_buf_printf(&b, "}}");
            }
            gw_buf_printf(&b, "]");
        }
        gw_buf_printf(&b, "},\"finish_reason\":");
        json_opt(&b, ch->finish_reason);
        gw_buf_printf(&b, "}");
        all_finished &= ch->finish_reason != NULL;
    }
    gw_buf_printf(&b, "],\"usage\":");
    if (an->usage != NULL)
        gw_buf_printf(&b, "%s}", an->usage);
    else if (have_usage)
        gw_buf_printf(&b,
                      "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}}",
                      (long long)prompt, (long long)completion, (long long)(prompt + completion));
    else
        gw_buf_printf(&b, "null}");
    if (b.data == NULL)
        return NULL;
    const char *out = gw_arena_strndup(an->a, b.data, b.len);
    *len = b.len;
    gw_buf_free(&b);
    *complete = an->done && !an->error && !an->overflow && any && all_finished;
    return out;
}

/* -------------------------------------------------------------- replay */

/* The head every chunk of the replay shares, up to "choices":. */
static void
chunk_head(struct gw_buf *out, struct json_object *o)
{
    struct json_object *v;

    gw_buf_printf(out, "data: {\"id\":");
    if (json_object_object_get_ex(o, "id", &v) && json_object_is_type(v, json_type_string))
        gw_worker_json_str(out, json_object_get_string(v), (size_t)json_object_get_string_len(v));
    else
        gw_buf_append(out, "null", 4);
    gw_buf_printf(out, ",\"object\":\"chat.completion.chunk\",\"created\":%lld,\"model\":",
                  json_object_object_get_ex(o, "created", &v) ? (long long)json_object_get_int64(v)
                                                              : 0LL);
    if (json_object_object_get_ex(o, "model", &v) && json_object_is_type(v, json_type_string))
        gw_worker_json_str(out, json_object_get_string(v), (size_t)json_object_get_string_len(v));
    else
        gw_buf_append(out, "null", 4);
    if (json_object_object_get_ex(o, "system_fingerprint", &v) &&
        json_object_is_type(v, json_type_string)) {
        gw_buf_printf(out, ",\"system_fingerprint\":");
        gw_worker_json_str(out, json_object_get_string(v), (size_t)json_object_get_string_len(v));
    }
    gw_buf_printf(out, ",\"choices\":[");
}

/* One chunk of choice index with delta (JSON text) and finish_reason. */
static void
chunk(struct gw_buf *out, struct json_object *o, int index, const char *delta, const char *finish,
      bool include_usage)
{
    chunk_head(out, o);
    gw_buf_printf(out, "{\"index\":%d,\"delta\":%s,\"logprobs\":null,\"finish_reason\":", index,
                  delta);
    json_opt(out, finish);
    gw_buf_printf(out, "}]%s}\n\n", include_usage ? ",\"usage\":null" : "");
}

/* The length of the next piece of s: through the spaces after a word, at
 * most REPLAY_PIECE_MAX bytes, never inside a UTF-8 sequence. */
static size_t
piece_len(const char *s, size_t len)
{
    size_t i = 0;

    while (i < len && i < REPLAY_PIECE_MAX && s[i] != ' ')
        i++;
    while (i < len && i < REPLAY_PIECE_MAX && s[i] == ' ')
        i++;
    while (i < len && i > 1 && ((unsigned char)s[i] & 0xc0) == 0x80)
        i--;
    return i > 0 ? i : len;
}

static void
replay_choice(struct gw_buf *out, struct gw_buf *d, struct json_object *o, struct json_object *c,
              int index, bool include_usage)
{
    struct json_object *msg, *content, *tools, *v;
    const char *finish = NULL;

    if (json_object_object_get_ex(c, "finish_reason", &v) &&
        json_object_is_type(v, json_type_string))
        finish = json_object_get_string(v);
    if (!json_object_object_get_ex(c, "message", &msg))
        msg = NULL;
    bool has_content = msg != NULL && json_object_object_get_ex(msg, "content", &content) &&
                       json_object_is_type(content, json_type_string);
    d->len = 0;
    gw_buf_printf(d, "{\"role\":\"assistant\",\"content\":%s}", has_content ? "\"\"" : "null");
    chunk(out, o, index, d->data, NULL, include_usage);
    if (has_content) {
        const char *s = json_object_get_string(content);
        size_t len = (size_t)json_object_get_string_len(content);
        for (size_t off = 0, n; off < len; off += n) {
            n = piece_len(s + off, len - off);
            d->len = 0;
            gw_buf_printf(d, "{\"content\":");
            gw_worker_json_str(d, s + off, n);
            gw_buf_printf(d, "}");
            chunk(out, o, index, d->data, NULL, include_usage);
        }
    }
    if (msg != NULL && json_object_object_get_ex(msg, "tool_calls", &tools) &&
        json_object_is_type(tools, json_type_array)) {
        size_t n = gw_worker_json_len(tools);
        for (size_t t = 0; t < n; t++) {
            struct json_object *tc = gw_worker_json_at(tools, t);
            if (!json_object_is_type(tc, json_type_object))
                continue;
            d->len = 0;
            gw_buf_printf(d, "{\"tool_calls\":[{\"index\":%zu,", t);
            json_object_object_foreach(tc, k, val)
            {
                gw_worker_json_str(d, k, strlen(k));
                gw_buf_printf(d, ":%s,",
                              json_object_to_json_string_ext(
                                  val, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
            }
            d->len--; /* the last comma */
            gw_buf_printf(d, "}]}");
            chunk(out, o, index, d->data, NULL, include_usage);
        }
    }
    chunk(out, o, index, "{}", finish, include_usage);
}

int
gw_worker_answer_replay(const char *body, size_t len, bool include_usage, struct gw_buf *out)
{
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = NULL, *choices, *usage;
    struct gw_buf d = {0};
    int rc = GW_EINVAL;

    if (tok == NULL)
        return GW_ENOMEM;
    o = json_tokener_parse_ex(tok, body, (int)len);
    json_tokener_free(tok);
    if (o == NULL || !json_object_object_get_ex(o, "choices", &choices) ||
        !json_object_is_type(choices, json_type_array))
        goto out;
    size_t n = gw_worker_json_len(choices);
    for (size_t i = 0; i < n; i++) {
        struct json_object *c = gw_worker_json_at(choices, i), *v;
        int index = json_object_object_get_ex(c, "index", &v) ? json_object_get_int(v) : (int)i;
        replay_choice(out, &d, o, c, index, include_usage);
    }
    if (include_usage && json_object_object_get_ex(o, "usage", &usage) &&
        json_object_is_type(usage, json_type_object)) {
        chunk_head(out, o);
        gw_buf_printf(out, "],\"usage\":%s}\n\n",
                      json_object_to_json_string_ext(usage, JSON_C_TO_STRING_PLAIN |
                                                                JSON_C_TO_STRING_NOSLASHESCAPE));
    }
    gw_buf_printf(out, "data: [DONE]\n\n");
    rc = out->data != NULL ? 0 : GW_ENOMEM;
out:
    gw_buf_free(&d);
    json_object_put(o);
    return rc;
}
