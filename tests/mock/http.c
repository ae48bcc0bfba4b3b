/*
 * http.c - the mock's connections: read, parse with llhttp, route,
 * and write responses.
 *
 * A connection thread reads into its buffer and feeds llhttp.  The
 * parser pauses itself at the end of each request (on_message_complete),
 * the request is answered in full with blocking writes, and parsing resumes
 * where it stopped, so pipelined requests are answered in order.
 *
 * Handlers return 0 when the connection may carry another request and a
 * negative GW_E* code when it must be closed (write failed, a fault asked
 * for it).  Helpers that may answer a request themselves (a 400 for a bad
 * body, an injected status) return 1 when they did.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "tests/mock/mock.h"
#include "worker/worker.h"

enum { HSTATE_NONE, HSTATE_NAME, HSTATE_VALUE };

/* Buffers that grew past this for one big request are given back after it. */
#define BUF_KEEP (1024 * 1024)

const char *gw_mock_require_key;

static unsigned long long mock_id;

static const char models_body[] =
    "{\"object\":\"list\",\"data\":["
    "{\"id\":\"mock-small\",\"object\":\"model\",\"created\":1700000000,"
    "\"owned_by\":\"aigw-mock\"},"
    "{\"id\":\"mock-large\",\"object\":\"model\",\"created\":1700000000,"
    "\"owned_by\":\"aigw-mock\"}"
    "]}";

static const char health_body[] = "{\"status\":\"ok\"}";

/*
 * Ids for chat completions: unique within the process, in order of arrival.
 */
unsigned long long
gw_mock_next_id(void)
{
    return __atomic_add_fetch(&mock_id, 1, __ATOMIC_RELAXED);
}

/*
 * Sleep ms milliseconds; signals are blocked in connection threads, but an
 * EINTR resumes with the time left anyway.
 */
void
gw_mock_sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};

    if (ms <= 0)
        return;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * The number of whitespace-separated words in s: the mock's token count.
 */
size_t
gw_mock_words(const char *s, size_t len)
{
    size_t n = 0;
    bool in_word = false;

    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool space = ch == ' ' || (ch >= '\t' && ch <= '\r');
        if (!space && !in_word)
            n++;
        in_word = !space;
    }
    return n;
}

/*
 * Append s as a quoted JSON string to b: quotes, backslashes and control
 * characters are escaped, other bytes (UTF-8 included) are copied as is.
 */
int
gw_mock_json_str(struct gw_buf *b, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    int rc = gw_buf_reserve(b, len + 2);

    if (rc != 0)
        return rc;
    b->data[b->len++] = '"';
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[7];
        size_t elen = 2;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
        } else if (ch == '\n') {
            memcpy(esc, "\\n", 2);
        } else if (ch == '\r') {
            memcpy(esc, "\\r", 2);
        } else if (ch == '\t') {
            memcpy(esc, "\\t", 2);
        } else if (ch < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            elen = 6;
        } else {
            continue;
        }
        if ((rc = gw_buf_append(b, s + start, i - start)) != 0 ||
            (rc = gw_buf_append(b, esc, elen)) != 0)
            return rc;
        start = i + 1;
    }
    if ((rc = gw_buf_append(b, s + start, len - start)) != 0)
        return rc;
    return GW_MOCK_APPEND(b, "\"");
}

/*
 * The value of request header name (lowercase), or NULL.  The string lives
 * in the connection until the next request.
 */
const char *
gw_mock_header(const struct gw_mock_conn *c, const char *name)
{
    for (size_t i = 0; i < c->nhdrs; i++)
        if (strcmp(c->hbuf.data + c->hdrs[i].name, name) == 0)
            return c->hbuf.data + c->hdrs[i].value;
    return NULL;
}

/*
 * The path of the request target, without the query; *len is its length
 * (the string itself goes on to the query).
 */
const char *
gw_mock_path(const struct gw_mock_conn *c, size_t *len)
{
    const char *url = c->url.data != NULL ? c->url.data : "/";

    *len = strcspn(url, "?#");
    return url;
}

static void
put_status_line(struct gw_mock_conn *c, int status)
{
    /* HTTP/1.0 clients only keep the connection when asked to */
    const char *conn = !c->keep_alive              ? "Connection: close\r\n"
                       : c->parser.http_minor == 0 ? "Connection: keep-alive\r\n"
                                                   : "";

    (void)gw_buf_printf(&c->out, "HTTP/1.1 %d %s\r\nServer: aigw-mock\r\n%s", status,
                        gw_worker_http_reason(status), conn);
}

/*
 * Write whatever is in c->out with one write(2) where the socket takes it
 * all, and empty it.
 */
int
gw_mock_flush(struct gw_mock_conn *c)
{
    int rc = 0;

    if (c->out.len > 0)
        rc = gw_write_all(c->fd, c->out.data, c->out.len);
    c->out.len = 0;
    return rc != 0 ? GW_ECLOSED : 0;
}

/*
 * Answer the request with status and a JSON body, headers and body in one
 * write.  extra holds more header lines ("Name: value\r\n"), or NULL.
 */
int
gw_mock_respond(struct gw_mock_conn *c, int status, const char *extra, const char *body, size_t len)
{
    bool no_body = status == 204 || status == 304;

    put_status_line(c, status);
    if (no_body)
        (void)gw_buf_printf(&c->out, "%s\r\n", extra != NULL ? extra : "");
    else
        (void)gw_buf_printf(&c->out,
                            "Content-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n", len,
                            extra != NULL ? extra : "");
    if (!no_body && gw_buf_append(&c->out, body, len) != 0)
        return GW_ENOMEM;
    return gw_mock_flush(c);
}

/*
 * Like gw_mock_respond with status 200, for x-mock-drop-after on a response
 * that is not streamed: cut 0 closes without answering; a cut > 0 sends the
 * headers and the first cut bytes of the body, then closes.  Always returns
 * GW_ECLOSED.
 */
int
gw_mock_respond_cut(struct gw_mock_conn *c, const char *body, size_t len, long cut)
{
    if (cut > 0) {
        c->keep_alive = false;
        put_status_line(c, 200);
        (void)gw_buf_printf(&c->out,
                            "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n", len);
        (void)gw_buf_append(&c->out, body, (size_t)cut < len ? (size_t)cut : len);
        (void)gw_mock_flush(c);
    }
    return GW_ECLOSED;
}

static int
respond_error_with(struct gw_mock_conn *c, int status, const char *extra, const char *type,
                   const char *code, const char *message)
{
    struct gw_buf *b = &c->ev;

    b->len = 0;
    (void)GW_MOCK_APPEND(b, "{\"error\":{\"message\":");
    (void)gw_mock_json_str(b, message, strlen(message));
    (void)gw_buf_printf(b, ",\"type\":\"%s\",\"param\":null,\"code\":", type);
    if (code != NULL)
        (void)gw_mock_json_str(b, code, strlen(code));
    else
        (void)GW_MOCK_APPEND(b, "null");
    if (GW_MOCK_APPEND(b, "}}") != 0)
        return GW_ENOMEM;
    return gw_mock_respond(c, status, extra, b->data, b->len);
}

/*
 * Answer with an error in OpenAI's shape.  code may be NULL (JSON null).
 */
int
gw_mock_respond_error(struct gw_mock_conn *c, int status, const char *type, const char *code,
                      const char *message)
{
    return respond_error_with(c, status, NULL, type, code, message);
}

/*
 * Parse the request body as a JSON object into *out (the caller puts it).
 * Returns 0, or 1 after answering 400 when the body is not a JSON object,
 * or a negative code when that answer could not be written.
 */
int
gw_mock_body_json(struct gw_mock_conn *c, struct json_object **out)
{
    struct json_object *obj = NULL;

    *out = NULL;
    if (c->tok == NULL) {
        c->tok = json_tokener_new();
        if (c->tok == NULL)
            return GW_ENOMEM;
        json_tokener_set_flags(c->tok, JSON_TOKENER_STRICT);
    }
    json_tokener_reset(c->tok);
    obj = json_tokener_parse_ex(c->tok, c->body.data != NULL ? c->body.data : "", (int)c->body.len);
    if (obj == NULL || json_tokener_get_error(c->tok) != json_tokener_success ||
        json_tokener_get_parse_end(c->tok) != c->body.len) {
        json_object_put(obj);
        goto fail;
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        goto fail;
    }
    *out = obj;
    return 0;

fail:
    if (gw_mock_respond_error(c, 400, "invalid_request_error", "invalid_json",
                              "We could not parse the JSON body of your request.") != 0)
        return GW_ECLOSED;
    return 1;
}

/*
 * Put the headers of a streamed 200 response into c->out; they leave with
 * the first event.  HTTP/1.0 clients get the stream unframed, ended by
 * closing the connection.
 */
void
gw_mock_stream_begin(struct gw_mock_conn *c)
{
    gw_mock_stream_begin_as(c, "text/event-stream");
}

/* The same, for a stream of another content type (Bedrock's event stream). */
void
gw_mock_stream_begin_as(struct gw_mock_conn *c, const char *ctype)
{
    c->chunked = c->parser.http_major == 1 && c->parser.http_minor >= 1;
    if (!c->chunked)
        c->keep_alive = false;
    put_status_line(c, 200);
    (void)gw_buf_printf(&c->out, "Content-Type: %s\r\nCache-Control: no-cache\r\n%s\r\n", ctype,
                        c->chunked ? "Transfer-Encoding: chunked\r\n" : "");
}

/*
 * Send one event (data, len: "data: ...\n\n") as its own HTTP chunk with
 * one write, together with anything still waiting in c->out; last adds the
 * terminating zero-length chunk.
 */
int
gw_mock_stream_event(struct gw_mock_conn *c, const char *data, size_t len, bool last)
{
    if (c->chunked)
        (void)gw_buf_printf(&c->out, "%zx\r\n", len);
    (void)gw_buf_append(&c->out, data, len);
    if (c->chunked && gw_buf_append(&c->out, last ? "\r\n0\r\n\r\n" : "\r\n", last ? 7 : 2) != 0)
        return GW_ENOMEM;
    return gw_mock_flush(c);
}

static bool
auth_ok(const struct gw_mock_conn *c)
{
    const char *h = gw_mock_header(c, "authorization");

    if (gw_mock_require_key == NULL)
        return true;
    if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    while (*h == ' ')
        h++;
    return strcmp(h, gw_mock_require_key) == 0;
}

static int
handle_models(struct gw_mock_conn *c)
{
    return gw_mock_respond(c, 200, NULL, models_body, sizeof(models_body) - 1);
}

static int
handle_health(struct gw_mock_conn *c)
{
    return gw_mock_respond(c, 200, NULL, health_body, sizeof(health_body) - 1);
}

/* Requests served per route (GET /mock/stats), for tests that check
 * whether the gateway called the upstream at all. */
static unsigned long long served_chat, served_embeddings, served_text;

static int
handle_stats(struct gw_mock_conn *c)
{
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"chat\":%llu,\"embeddings\":%llu,\"text\":%llu}",
                     __atomic_load_n(&served_chat, __ATOMIC_RELAXED),
                     __atomic_load_n(&served_embeddings, __ATOMIC_RELAXED),
                     __atomic_load_n(&served_text, __ATOMIC_RELAXED));

    return gw_mock_respond(c, 200, NULL, body, (size_t)n);
}

static int
handle_chat(struct gw_mock_conn *c)
{
    __atomic_add_fetch(&served_chat, 1, __ATOMIC_RELAXED);
    return gw_mock_chat_handle(c);
}

static int
handle_embeddings(struct gw_mock_conn *c)
{
    __atomic_add_fetch(&served_embeddings, 1, __ATOMIC_RELAXED);
    return gw_mock_embed_handle(c);
}

/* completions, moderations, responses: counted together as "text" */
static int
handle_text(struct gw_mock_conn *c)
{
    size_t plen;
    const char *path = gw_mock_path(c, &plen);

    __atomic_add_fetch(&served_text, 1, __ATOMIC_RELAXED);
    if (plen == 15 && memcmp(path, "/v1/completions", 15) == 0)
        return gw_mock_completions_handle(c);
    if (plen == 15 && memcmp(path, "/v1/moderations", 15) == 0)
        return gw_mock_moderations_handle(c);
    return gw_mock_responses_handle(c);
}

static const struct route {
    const char *path;
    llhttp_method_t method;
    int (*handle)(struct gw_mock_conn *c);
} routes[] = {
    {"/v1/chat/completions", HTTP_POST, handle_chat},
    {"/v1/embeddings", HTTP_POST, handle_embeddings},
    {"/v1/completions", HTTP_POST, handle_text},
    {"/v1/moderations", HTTP_POST, handle_text},
    {"/v1/responses", HTTP_POST, handle_text},
    {"/v1/models", HTTP_GET, handle_models},
    {"/healthz", HTTP_GET, handle_health},
    {"/mock/stats", HTTP_GET, handle_stats},
};

static int
dispatch(struct gw_mock_conn *c)
{
    char msg[256];
    size_t plen;
    const char *path = gw_mock_path(c, &plen);
    llhttp_method_t method = (llhttp_method_t)c->parser.method;
    int rc;

    /* The other providers' formats check their own credentials. */
    if ((rc = gw_mock_provider_dispatch(c)) != 1)
        return rc;
    if (plen >= 3 && memcmp(path, "/v1", 3) == 0 && (plen == 3 || path[3] == '/') && !auth_ok(c))
        return gw_mock_respond_error(c, 401, "invalid_request_error", "invalid_api_key",
                                     "Incorrect API key provided.");
    if (plen > 4 && memcmp(path, "/pt/", 4) == 0)
        return gw_mock_passthru_handle(c);
    if ((rc = gw_mock_media_dispatch(c, path, plen)) != 1)
        return rc;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const struct route *r = &routes[i];
        if (strlen(r->path) != plen || memcmp(r->path, path, plen) != 0)
            continue;
        if (r->method == method)
            return r->handle(c);
        char allow[64];
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", gw_worker_http_method_name(r->method));
        snprintf(msg, sizeof(msg), "Method %s not allowed on %.*s",
                 gw_worker_http_method_name(method), (int)plen, path);
        return respond_error_with(c, 405, allow, "invalid_request_error", "method_not_allowed",
                                  msg);
    }
    snprintf(msg, sizeof(msg), "Invalid URL (%s %.*s)", gw_worker_http_method_name(method),
             (int)plen, path);
    return gw_mock_respond_error(c, 404, "invalid_request_error", "unknown_url", msg);
}

/* ------------------------------------------------------ parser callbacks */

static void
buf_trim(struct gw_buf *b)
{
    if (b->cap > BUF_KEEP)
        gw_buf_free(b);
    b->len = 0;
}

static int
on_message_begin(llhttp_t *p)
{
    struct gw_mock_conn *c = p->data;

    buf_trim(&c->url);
    buf_trim(&c->hbuf);
    buf_trim(&c->body);
    buf_trim(&c->out);
    buf_trim(&c->ev);
    buf_trim(&c->pre);
    c->nhdrs = 0;
    c->hstate = HSTATE_NONE;
    c->reject = 0;
    c->chunked = false;
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
    struct gw_mock_conn *c = p->data;

    return gw_buf_append(&c->url, at, len) != 0 ? -1 : 0;
}

/* End the header value being collected: trim trailing blanks, terminate. */
static int
value_end(struct gw_mock_conn *c)
{
    size_t start = c->hdrs[c->nhdrs - 1].value;

    while (c->hbuf.len > start &&
           (c->hbuf.data[c->hbuf.len - 1] == ' ' || c->hbuf.data[c->hbuf.len - 1] == '\t'))
        c->hbuf.len--;
    return gw_buf_append(&c->hbuf, "", 1);
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct gw_mock_conn *c = p->data;

    if (c->hstate != HSTATE_NAME) {
        if (c->hstate == HSTATE_VALUE && value_end(c) != 0)
            return -1;
        if (c->nhdrs == GW_MOCK_MAX_HEADERS) {
            c->reject = 431;
            return -1;
        }
        c->hdrs[c->nhdrs++].name = c->hbuf.len;
        c->hstate = HSTATE_NAME;
    }
    size_t start = c->hbuf.len;
    if (gw_buf_append(&c->hbuf, at, len) != 0)
        return -1;
    for (size_t i = start; i < c->hbuf.len; i++)
        if (c->hbuf.data[i] >= 'A' && c->hbuf.data[i] <= 'Z')
            c->hbuf.data[i] = (char)(c->hbuf.data[i] + 'a' - 'A');
    return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct gw_mock_conn *c = p->data;

    if (c->hstate == HSTATE_NONE)
        return -1;
    if (c->hstate == HSTATE_NAME) {
        if (gw_buf_append(&c->hbuf, "", 1) != 0)
            return -1;
        c->hdrs[c->nhdrs - 1].value = c->hbuf.len;
        c->hstate = HSTATE_VALUE;
    }
    return gw_buf_append(&c->hbuf, at, len) != 0 ? -1 : 0;
}

static int
on_headers_complete(llhttp_t *p)
{
    struct gw_mock_conn *c = p->data;

    if (c->hstate == HSTATE_NAME) {
        /* a name without a value: give it an empty one */
        if (gw_buf_append(&c->hbuf, "", 1) != 0)
            return -1;
        c->hdrs[c->nhdrs - 1].value = c->hbuf.len;
        c->hstate = HSTATE_VALUE;
    }
    if (c->hstate == HSTATE_VALUE && value_end(c) != 0)
        return -1;
    c->hstate = HSTATE_NONE;
    c->keep_alive = llhttp_should_keep_alive(p) != 0;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > GW_MOCK_MAX_BODY) {
        c->reject = 413;
        return -1;
    }

    /* curl (and libcurl in the gateway) waits for this before a large body */
    const char *expect = gw_mock_header(c, "expect");
    if (expect != NULL && strcasecmp(expect, "100-continue") == 0 && p->http_minor >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (gw_write_all(c->fd, cont, sizeof(cont) - 1) != 0)
            return -1;
    }
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    struct gw_mock_conn *c = p->data;

    if (c->body.len + len > GW_MOCK_MAX_BODY) {
        c->reject = 413;
        return -1;
    }
    return gw_buf_append(&c->body, at, len) != 0 ? -1 : 0;
}

static int
on_message_complete(llhttp_t *p)
{
    (void)p;
    /* stop here: the run loop answers, then resumes after this request */
    return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Answer a request the parser refused, before closing the connection. */
static void
refuse(struct gw_mock_conn *c, llhttp_errno_t err)
{
    c->keep_alive = false;
    if (c->reject == 413)
        (void)gw_mock_respond_error(c, 413, "invalid_request_error", "request_too_large",
                                    "Request body too large.");
    else if (c->reject == 431)
        (void)gw_mock_respond_error(c, 431, "invalid_request_error", "headers_too_large",
                                    "Request header fields too large.");
    else
        (void)gw_mock_respond_error(c, 400, "invalid_request_error", "bad_request",
                                    llhttp_get_error_reason(&c->parser) != NULL
                                        ? llhttp_get_error_reason(&c->parser)
                                        : llhttp_errno_name(err));
}

static void
conn_destroy(struct gw_mock_conn *c)
{
    close(c->fd);
    if (c->tok != NULL)
        json_tokener_free(c->tok);
    gw_buf_free(&c->url);
    gw_buf_free(&c->hbuf);
    gw_buf_free(&c->body);
    gw_buf_free(&c->out);
    gw_buf_free(&c->ev);
    gw_buf_free(&c->pre);
    free(c);
}

/*
 * Serve one connection until the client closes it, a request asks to
 * close, or a write fails; then close the fd and free everything.  Runs as
 * a detached thread and owns the fd it is given.
 */
void *
gw_mock_conn_run(void *arg)
{
    struct gw_mock_conn *c = calloc(1, sizeof(*c));

    if (c == NULL) {
        gw_log(GW_LOG_ERROR, "calloc(%zu): out of memory", sizeof(struct gw_mock_conn));
        close((int)(intptr_t)arg);
        return NULL;
    }
    c->fd = (int)(intptr_t)arg;
    /* Every connection thread parses JSON: off the global locale, json-c
     * would take glibc's locale lock three times a parse, and 64 threads
     * on 2 CPUs convoyed on it for 20-160 ms (tests/bench/README.md). */
    gw_locale_c_thread();
    llhttp_init(&c->parser, HTTP_REQUEST, &settings);
    c->parser.data = c;

    for (;;) {
        ssize_t n = read(c->fd, c->rbuf, sizeof(c->rbuf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        c->t_read = gw_now_us();
        size_t off = 0;
        while (off < (size_t)n) {
            size_t used;
            llhttp_errno_t err = gw_http_parse(&c->parser, c->rbuf + off, (size_t)n - off, &used);
            off += used;
            if (err == HPE_PAUSED) {
                if (dispatch(c) != 0 || !c->keep_alive || c->parser.upgrade)
                    goto done;
                llhttp_resume(&c->parser);
                continue;
            }
            if (err != HPE_OK) {
                refuse(c, err);
                goto done;
            }
        }
    }

done:
    conn_destroy(c);
    return NULL;
}
