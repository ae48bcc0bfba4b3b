/*
 * chat.c - POST /v1/chat/completions.
 *
 * The completion is N tokens "tok0 ", "tok1 ", ... (N from x-mock-chunks,
 * default 5); prompt_tokens counts the words of the messages.  A streamed
 * answer sends each token as its own SSE event and HTTP chunk, written the
 * moment it is made, in the order and shape OpenAI uses: content chunks
 * (the first with the role), a chunk with finish_reason "stop", a usage
 * chunk when stream_options.include_usage asks for it, then [DONE].
 *
 * Tools as the other formats' mocks do them (provider.c): a request that
 * offers tools (tool_choice not "none") and whose last message is no tool
 * result gets a call of the first tool with GW_MOCK_TOOL_ARGS (streamed
 * in two pieces of arguments); one whose last message is a tool result
 * gets "got RESULT".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/mock/mock.h"
#include "worker/worker.h"

struct chat {
    const char *model;
    size_t model_len;
    bool stream;
    bool include_usage;
    size_t prompt;
    size_t completion;
    unsigned long long id;
    long long created;
    const char *echo; /* JSON text of the echoed request, or NULL */
    /* x-mock-content: the completion's text instead of tokens; streamed
     * in pieces cut at the byte offsets of x-mock-split ("3,10"), one
     * piece per event (the whole text in one event without it). */
    const char *content;
    const char *split;
    const char *tool;  /* call this tool, or NULL */
    struct gw_buf got; /* "got RESULT" */
};

/* The length of the next streamed piece of content from at, by split. */
static size_t
piece_len(const char *content, const char *split, size_t at)
{
    size_t len = strlen(content), end = len;

    for (const char *p = split; p != NULL && *p != '\0';) {
        char *next;
        unsigned long cut = strtoul(p, &next, 10);
        if (next == p)
            break;
        if (cut > at && cut < end)
            end = cut;
        p = *next == ',' ? next + 1 : NULL;
    }
    return end - at;
}

static size_t
prompt_tokens(struct json_object *messages)
{
    size_t n = 0;
    size_t count = json_object_array_length(messages);

    for (size_t i = 0; i < count; i++) {
        struct json_object *msg = json_object_array_get_idx(messages, i);
        struct json_object *content, *type, *text;
        if (!json_object_object_get_ex(msg, "content", &content))
            continue;
        if (json_object_is_type(content, json_type_string)) {
            n += gw_mock_words(json_object_get_string(content),
                               (size_t)json_object_get_string_len(content));
            continue;
        }
        if (!json_object_is_type(content, json_type_array))
            continue;
        size_t nparts = json_object_array_length(content);
        for (size_t j = 0; j < nparts; j++) {
            struct json_object *part = json_object_array_get_idx(content, j);
            if (json_object_object_get_ex(part, "type", &type) &&
                strcmp(json_object_get_string(type), "text") == 0 &&
                json_object_object_get_ex(part, "text", &text) &&
                json_object_is_type(text, json_type_string))
                n += gw_mock_words(json_object_get_string(text),
                                   (size_t)json_object_get_string_len(text));
        }
    }
    return n > 0 ? n : 1;
}

/* The tool to call, or the tool result to answer about (see the top). */
static void
tools_read(struct json_object *req, struct json_object *messages, struct chat *ch)
{
    struct json_object *tools, *v, *last, *fn;
    size_t n = json_object_array_length(messages);

    last = n > 0 ? json_object_array_get_idx(messages, n - 1) : NULL;
    if (last != NULL && json_object_object_get_ex(last, "role", &v) &&
        strcmp(json_object_get_string(v), "tool") == 0) {
        json_object_object_get_ex(last, "content", &v);
        (void)gw_buf_printf(&ch->got, "got %s", v != NULL ? json_object_get_string(v) : "");
        ch->content = ch->got.data;
        ch->completion = 1;
        return;
    }
    if (json_object_object_get_ex(req, "tool_choice", &v) &&
        json_object_is_type(v, json_type_string) && strcmp(json_object_get_string(v), "none") == 0)
        return;
    if (json_object_object_get_ex(req, "tools", &tools) &&
        json_object_is_type(tools, json_type_array) && json_object_array_length(tools) > 0 &&
        json_object_object_get_ex(json_object_array_get_idx(tools, 0), "function", &fn) &&
        json_object_object_get_ex(fn, "name", &v) && json_object_is_type(v, json_type_string))
        ch->tool = json_object_get_string(v);
}

/* Only JSON true is true: json-c would also take "false" and 1. */
static bool
is_true(struct json_object *v)
{
    return json_object_is_type(v, json_type_boolean) && json_object_get_boolean(v);
}

/*
 * {"method", "path", "headers": {lowercased name: value}, "body", "raw"}:
 * what the mock received, for x-mock-echo, the body parsed and as its
 * bytes came.  Repeated headers are joined with ", ".
 */
static struct json_object *
echo_create(struct gw_mock_conn *c, struct json_object *req)
{
    struct json_object *echo = json_object_new_object();
    struct json_object *headers = json_object_new_object();
    struct json_object *prev;
    struct gw_buf joined = {0};
    size_t plen;
    const char *path = gw_mock_path(c, &plen);

    if (echo == NULL || headers == NULL)
        goto fail;
    json_object_object_add(
        echo, "method",
        json_object_new_string(gw_worker_http_method_name((llhttp_method_t)c->parser.method)));
    json_object_object_add(echo, "path", json_object_new_string_len(path, (int)plen));
    if (path[plen] == '?')
        json_object_object_add(echo, "query", json_object_new_string(path + plen + 1));
    for (size_t i = 0; i < c->nhdrs; i++) {
        const char *name = c->hbuf.data + c->hdrs[i].name;
        const char *value = c->hbuf.data + c->hdrs[i].value;
        if (json_object_object_get_ex(headers, name, &prev)) {
            joined.len = 0;
            if (gw_buf_printf(&joined, "%s, %s", json_object_get_string(prev), value) != 0)
                goto fail;
            value = joined.data;
        }
        json_object_object_add(headers, name, json_object_new_string(value));
    }
    json_object_object_add(echo, "headers", headers);
    json_object_object_add(echo, "body", json_object_get(req));
    json_object_object_add(
        echo, "raw", json_object_new_string_len(c->body.len ? c->body.data : "", (int)c->body.len));
    gw_buf_free(&joined);
    return echo;

fail:
    gw_buf_free(&joined);
    if (echo != NULL)
        json_object_put(echo);
    else
        json_object_put(headers);
    return NULL;
}

/* Append token i of the completion, "tok<i> ", to b. */
static int
tok_append(struct gw_buf *b, size_t i)
{
    char tmp[32];
    size_t n = sizeof(tmp);

    tmp[--n] = ' ';
    do {
        tmp[--n] = (char)('0' + i % 10);
        i /= 10;
    } while (i > 0);
    tmp[--n] = 'k';
    tmp[--n] = 'o';
    tmp[--n] = 't';
    return gw_buf_append(b, tmp + n, sizeof(tmp) - n);
}

/* The tool call of a tool answer: whole, or its pieces of a stream. */
static void
tool_call_append(struct gw_buf *b, const struct chat *ch, bool head, const char *args,
                 size_t args_len)
{
    (void)GW_MOCK_APPEND(b, "{\"index\":0,");
    if (head) {
        (void)gw_buf_printf(b, "\"id\":\"call_mock_%llu\",\"type\":\"function\",", ch->id);
        (void)GW_MOCK_APPEND(b, "\"function\":{\"name\":");
        (void)gw_mock_json_str(b, ch->tool, strlen(ch->tool));
        (void)GW_MOCK_APPEND(b, ",\"arguments\":");
    } else {
        (void)GW_MOCK_APPEND(b, "\"function\":{\"arguments\":");
    }
    (void)gw_mock_json_str(b, args, args_len);
    (void)GW_MOCK_APPEND(b, "}}");
}

static int
chat_tool_full(struct gw_mock_conn *c, const struct chat *ch)
{
    struct gw_buf *b = &c->ev;

    b->len = 0;
    (void)gw_buf_printf(b,
                        "{\"id\":\"chatcmpl-mock-%llu\",\"object\":\"chat.completion\","
                        "\"created\":%lld,\"model\":",
                        ch->id, ch->created);
    (void)gw_mock_json_str(b, ch->model, ch->model_len);
    (void)GW_MOCK_APPEND(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                            "\"content\":null,\"tool_calls\":[");
    tool_call_append(b, ch, true, GW_MOCK_TOOL_ARGS, sizeof(GW_MOCK_TOOL_ARGS) - 1);
    if (gw_buf_printf(b,
                      "]},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":%zu,"
                      "\"completion_tokens\":%zu,\"total_tokens\":%zu}}",
                      ch->prompt, ch->completion, ch->prompt + ch->completion) != 0)
        return GW_ENOMEM;
    return gw_mock_respond(c, 200, NULL, b->data, b->len);
}

static int
chat_full(struct gw_mock_conn *c, const struct chat *ch, const struct gw_mock_fault *f)
{
    struct gw_buf *b = &c->ev;

    if (ch->tool != NULL)
        return chat_tool_full(c, ch);

    b->len = 0;
    (void)gw_buf_printf(b,
                        "{\"id\":\"chatcmpl-mock-%llu\",\"object\":\"chat.completion\","
                        "\"created\":%lld,\"model\":",
                        ch->id, ch->created);
    (void)gw_mock_json_str(b, ch->model, ch->model_len);
    (void)gw_buf_printf(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
                           "\"content\":");
    if (ch->echo != NULL || ch->content != NULL) {
        const char *text = ch->echo != NULL ? ch->echo : ch->content;
        (void)gw_mock_json_str(b, text, strlen(text));
    } else {
        (void)GW_MOCK_APPEND(b, "\"");
        for (size_t i = 0; i < ch->completion; i++)
            (void)tok_append(b, i);
        (void)GW_MOCK_APPEND(b, "\"");
    }
    (void)gw_buf_printf(b,
                        "},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":%zu,"
                        "\"completion_tokens\":%zu,\"total_tokens\":%zu}",
                        ch->prompt, ch->completion, ch->prompt + ch->completion);
    /* The bench's path time: what a request spent outside the mock. */
    if (f->stamp)
        (void)gw_buf_printf(b, ",\"x_mock_us\":[%lld,%lld]", (long long)c->t_read,
                            (long long)gw_now_us());
    if (GW_MOCK_APPEND(b, "}") != 0)
        return GW_ENOMEM;
    if (f->drop_after >= 0)
        return gw_mock_respond_cut(c, b->data, b->len, f->drop_after);
    return gw_mock_respond(c, 200, NULL, b->data, b->len);
}

/* Send the event in c->ev, after the chunk delay unless it is the first. */
static int
event_send(struct gw_mock_conn *c, const struct gw_mock_fault *f, size_t *nsent, bool last)
{
    if ((*nsent)++ > 0)
        gw_mock_sleep_ms(f->chunk_delay_ms);
    return gw_mock_stream_event(c, c->ev.data, c->ev.len, last);
}

/* Start the next event in c->ev: the prefix every chunk shares. */
static void
event_start(struct gw_mock_conn *c)
{
    c->ev.len = 0;
    (void)gw_buf_append(&c->ev, c->pre.data, c->pre.len);
}

static int
chat_stream(struct gw_mock_conn *c, const struct chat *ch, const struct gw_mock_fault *f)
{
    const char *tail = ch->include_usage ? "],\"usage\":null}\n\n" : "]}\n\n";
    size_t tail_len = strlen(tail);
    size_t nsent = 0;
    bool role = true;
    int rc;

    c->pre.len = 0;
    (void)gw_buf_printf(&c->pre,
                        "data: {\"id\":\"chatcmpl-mock-%llu\",\"object\":"
                        "\"chat.completion.chunk\",\"created\":%lld,\"model\":",
                        ch->id, ch->created);
    (void)gw_mock_json_str(&c->pre, ch->model, ch->model_len);
    if (GW_MOCK_APPEND(&c->pre, ",\"choices\":[") != 0)
        return GW_ENOMEM;

    gw_mock_stream_begin(c);
    if (ch->tool != NULL) {
        /* The call's head with the role, then its arguments in two pieces. */
        size_t half = (sizeof(GW_MOCK_TOOL_ARGS) - 1) / 2;
        for (int piece = 0; piece < 3; piece++) {
            event_start(c);
            (void)GW_MOCK_APPEND(&c->ev, "{\"index\":0,\"delta\":{");
            if (piece == 0)
                (void)GW_MOCK_APPEND(&c->ev, "\"role\":\"assistant\",\"content\":null,");
            (void)GW_MOCK_APPEND(&c->ev, "\"tool_calls\":[");
            tool_call_append(&c->ev, ch, piece == 0,
                             piece == 1   ? GW_MOCK_TOOL_ARGS
                             : piece == 2 ? GW_MOCK_TOOL_ARGS + half
                                          : "",
                             piece == 1   ? half
                             : piece == 2 ? sizeof(GW_MOCK_TOOL_ARGS) - 1 - half
                                          : 0);
            (void)GW_MOCK_APPEND(&c->ev, "]},\"finish_reason\":null}");
            if (gw_buf_append(&c->ev, tail, tail_len) != 0)
                return GW_ENOMEM;
            if ((rc = event_send(c, f, &nsent, false)) != 0)
                return rc;
        }
        role = false;
    }
    if (ch->echo != NULL) {
        event_start(c);
        (void)GW_MOCK_APPEND(&c->ev, "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":");
        (void)gw_mock_json_str(&c->ev, ch->echo, strlen(ch->echo));
        (void)GW_MOCK_APPEND(&c->ev, "},\"finish_reason\":null}");
        (void)gw_buf_append(&c->ev, tail, tail_len);
        if ((rc = event_send(c, f, &nsent, false)) != 0)
            return rc;
        role = false;
    }
    for (size_t at = 0, n; ch->content != NULL && ch->echo == NULL && ch->content[at]; at += n) {
        n = piece_len(ch->content, ch->split, at);
        event_start(c);
        (void)GW_MOCK_APPEND(&c->ev, "{\"index\":0,\"delta\":{");
        if (role)
            (void)GW_MOCK_APPEND(&c->ev, "\"role\":\"assistant\",");
        role = false;
        (void)GW_MOCK_APPEND(&c->ev, "\"content\":");
        (void)gw_mock_json_str(&c->ev, ch->content + at, n);
        (void)GW_MOCK_APPEND(&c->ev, "},\"finish_reason\":null}");
        if (gw_buf_append(&c->ev, tail, tail_len) != 0)
            return GW_ENOMEM;
        if ((rc = event_send(c, f, &nsent, false)) != 0)
            return rc;
    }
    for (size_t i = 0; i < ch->completion && ch->content == NULL && ch->tool == NULL; i++) {
        if ((long)i == f->drop_after)
            goto drop;
        event_start(c);
        (void)GW_MOCK_APPEND(&c->ev, "{\"index\":0,\"delta\":{");
        if (role)
            (void)GW_MOCK_APPEND(&c->ev, "\"role\":\"assistant\",");
        role = false;
        (void)GW_MOCK_APPEND(&c->ev, "\"content\":\"");
        (void)tok_append(&c->ev, i);
        (void)GW_MOCK_APPEND(&c->ev, "\"},\"finish_reason\":null}");
        if (gw_buf_append(&c->ev, tail, tail_len) != 0)
            return GW_ENOMEM;
        if ((rc = event_send(c, f, &nsent, false)) != 0)
            return rc;
    }
    if (f->drop_after == (long)ch->completion)
        goto drop;

    event_start(c);
    if (ch->tool != NULL)
        (void)GW_MOCK_APPEND(&c->ev, "{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}");
    else
        (void)GW_MOCK_APPEND(&c->ev, "{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}");
    if (gw_buf_append(&c->ev, tail, tail_len) != 0)
        return GW_ENOMEM;
    if ((rc = event_send(c, f, &nsent, false)) != 0)
        return rc;

    if (ch->include_usage) {
        event_start(c);
        if (gw_buf_printf(&c->ev,
                          "],\"usage\":{\"prompt_tokens\":%zu,\"completion_tokens\":%zu,"
                          "\"total_tokens\":%zu}}\n\n",
                          ch->prompt, ch->completion, ch->prompt + ch->completion) != 0)
            return GW_ENOMEM;
        if ((rc = event_send(c, f, &nsent, false)) != 0)
            return rc;
    }

    c->ev.len = 0;
    if (GW_MOCK_APPEND(&c->ev, "data: [DONE]\n\n") != 0)
        return GW_ENOMEM;
    rc = event_send(c, f, &nsent, true);
    if (rc == 0 && !c->chunked)
        rc = GW_ECLOSED; /* HTTP/1.0: the end of the stream is the close */
    return rc;

drop:
    /* the headers may still be waiting: send them, then cut the stream */
    (void)gw_mock_flush(c);
    return GW_ECLOSED;
}

/*
 * POST /v1/chat/completions.  See the top of this file; x-mock-* headers
 * apply (fault.c), x-mock-echo makes the content a JSON string of the
 * request the mock received, x-mock-content makes it the given text
 * (streamed in the pieces x-mock-split cuts).
 */
int
gw_mock_chat_handle(struct gw_mock_conn *c)
{
    struct gw_mock_fault f;
    struct json_object *req = NULL, *echo = NULL;
    struct json_object *messages, *v, *opts;
    struct chat ch = {.model = "mock-small", .model_len = 10};
    int rc;

    if ((rc = gw_mock_fault_parse(c, &f)) != 0 || (rc = gw_mock_fault_apply(c, &f)) != 0)
        return rc > 0 ? 0 : rc;
    if ((rc = gw_mock_body_json(c, &req)) != 0)
        return rc > 0 ? 0 : rc;
    if (!json_object_object_get_ex(req, "messages", &messages) ||
        !json_object_is_type(messages, json_type_array)) {
        rc = gw_mock_respond_error(c, 400, "invalid_request_error", "invalid_messages",
                                   "'messages' is a required property and must be an array.");
        goto done;
    }
    if (json_object_object_get_ex(req, "model", &v) && json_object_is_type(v, json_type_string)) {
        ch.model = json_object_get_string(v);
        ch.model_len = (size_t)json_object_get_string_len(v);
    }
    ch.stream = json_object_object_get_ex(req, "stream", &v) && is_true(v);
    ch.include_usage = ch.stream && json_object_object_get_ex(req, "stream_options", &opts) &&
                       json_object_object_get_ex(opts, "include_usage", &v) && is_true(v) &&
                       !f.no_usage;
    ch.prompt = prompt_tokens(messages);
    ch.completion = (size_t)f.chunks;
    ch.content = gw_mock_header(c, "x-mock-content");
    ch.split = gw_mock_header(c, "x-mock-split");
    tools_read(req, messages, &ch);
    ch.id = gw_mock_next_id();
    ch.created = (long long)time(NULL);
    if (f.echo) {
        echo = echo_create(c, req);
        if (echo == NULL) {
            rc = GW_ENOMEM;
            goto done;
        }
        ch.echo = json_object_to_json_string_ext(echo, JSON_C_TO_STRING_PLAIN |
                                                           JSON_C_TO_STRING_NOSLASHESCAPE);
    }
    rc = ch.stream ? chat_stream(c, &ch, &f) : chat_full(c, &ch, &f);

done:
    gw_buf_free(&ch.got);
    json_object_put(echo);
    json_object_put(req);
    return rc;
}
