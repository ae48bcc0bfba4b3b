/*
 * upstream.c - one upstream exchange: a libcurl transfer, or, to a
 * plain-HTTP upstream, HTTP/1.1 spoken by the worker (h1.c) into the same
 * callbacks.
 *
 * A connection context keeps one easy handle for its whole life, so
 * connections to the providers (and their DNS answers and TLS sessions)
 * are reused from request to request.  A streamed answer is written to the
 * client from the write callback as it arrives; a non-streamed one is
 * collected, its usage read, and sent as it came (no re-serialization).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "worker/safety.h"

/* Client headers that are about this hop only, or that the gateway owns. */
static const char *const skip_headers[] = {
    "host",
    "content-length",
    "authorization",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
    "accept-encoding",
    "x-request-id",
    "api-key",
    "x-api-key",
    "cookie",
    "content-type",
    "anthropic-version",
    "anthropic-beta",
};

struct upstream_io {
    struct gw_call *call;
    const struct gw_provider_adapter *ad;
    size_t max_response_size;
    struct gw_sse sse;
    struct gw_xstream xs; /* the provider's stream into OpenAI's, when ad translates */
    bool xlate;
    struct gw_buf body; /* non-streamed answer, or an error body */
    char ctype[128];
    long status;
    bool streaming;   /* relaying to the client (headers sent) */
    bool client_gone; /* a write to the client failed */
    bool too_big;
    bool blocked;   /* a safety rule ended the stream */
    bool timed_out; /* first_byte or idle timeout */
    int64_t last_io_ms;
    int64_t start_ms;
    bool got_bytes;
    const struct gw_timeouts *to;
    CURL *curl; /* NULL: the worker speaks HTTP/1.1 itself (h1.c), io.status is set */
};

/* A proxy is named in the environment (gw_worker_upstream_init): every
 * transfer is then curl's, which knows how to go through one. */
static bool proxy_env;

/* Named in the client's Connection header, hence hop-by-hop too. */
static bool
named_in_connection(const struct gw_request *req, const char *name)
{
    const char *conn = gw_worker_http_header(req, "connection");
    size_t n = strlen(name);

    for (const char *p = conn; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e != '\0' && *e != ',' && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && strncasecmp(p, name, n) == 0)
            return true;
        p = e;
    }
    return false;
}

static bool
header_forwarded(const struct gw_request *req, const char *name)
{
    for (size_t i = 0; i < sizeof(skip_headers) / sizeof(skip_headers[0]); i++)
        if (strcmp(name, skip_headers[i]) == 0)
            return false;
    if (strncmp(name, "x-aigw-", 7) == 0)
        return false;
    return !named_in_connection(req, name);
}

/* A header node: curl's list node, and whether its line is a secret. */
struct header_node {
    struct curl_slist node; /* first: the list is made of these */
    bool secret;
};

int
gw_worker_call_header(struct gw_call *call, const char *line, bool secret)
{
    struct header_node *h = line != NULL ? gw_arena_alloc(call->req->arena, sizeof(*h)) : NULL;

    if (h == NULL)
        return GW_ENOMEM;
    *h = (struct header_node){.node = {.data = (char *)line, .next = NULL}, .secret = secret};
    if (call->headers == NULL)
        call->headers_end = &call->headers;
    *call->headers_end = &h->node;
    call->headers_end = &h->node.next;
    return 0;
}

void
gw_worker_headers_wipe(struct curl_slist *headers)
{
    for (struct curl_slist *l = headers; l != NULL; l = l->next)
        if (((struct header_node *)l)->secret)
            explicit_bzero(l->data, strlen(l->data));
}

static int
headers_build(struct gw_call *call)
{
    struct gw_request *req = call->req;
    int rc = 0;

    if (!call->method_get)
        rc |= gw_worker_call_header(
            call,
            gw_arena_cat(req->arena, "Content-Type: ",
                         call->content_type != NULL ? call->content_type : "application/json"),
            false);
    /* libcurl would send "Expect: 100-continue" for large bodies. */
    rc |= gw_worker_call_header(call, "Expect:", false);
    rc |= gw_worker_call_header(call, gw_arena_cat(req->arena, "x-request-id: ", req->id), false);
    for (size_t i = 0; i < req->nheaders; i++) {
        const struct gw_header *hd = &req->headers[i];
        if (header_forwarded(req, hd->name))
            rc |= gw_worker_call_header(call, gw_arena_cat(req->arena, hd->name, ": ", hd->value),
                                        false);
    }
    return rc != 0 ? GW_ENOMEM : 0;
}

static size_t
on_header(char *data, size_t size, size_t n, void *ctx)
{
    struct upstream_io *io = ctx;
    size_t len = size * n;

    /* A transfer on curl shows its reads only through these callbacks;
     * h1.c stamps each read of its own, not each header line. */
    if (io->curl != NULL)
        io->last_io_ms = gw_now_ms();
    if (len > 12 && strncasecmp(data, "retry-after:", 12) == 0) {
        long secs = strtol(data + 12, NULL, 10);
        if (secs > 0)
            io->call->fail.retry_after_ms = (int64_t)secs * 1000;
    }
    if (len > 13 && strncasecmp(data, "content-type:", 13) == 0) {
        const char *v = data + 13;
        size_t vl = len - 13;
        while (vl > 0 && (*v == ' ' || *v == '\t'))
            v++, vl--;
        while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl >= sizeof(io->ctype))
            vl = sizeof(io->ctype) - 1;
        memcpy(io->ctype, v, vl);
        io->ctype[vl] = '\0';
    }
    return len;
}

static int
emit_to_client(void *ctx, const char *data, size_t len)
{
    struct upstream_io *io = ctx;
    int rc = gw_worker_http_stream_write(io->call->conn, data, len);

    if (rc != 0)
        io->client_gone = true;
    else if (io->call->answer != NULL)
        gw_worker_answer_feed(io->call->answer, data, len);
    return rc;
}

/* Between the SSE relay and the client when the answer is inspected. */
static int
emit_inspected(void *ctx, const char *data, size_t len)
{
    struct upstream_io *io = ctx;
    int rc = gw_worker_safety_stream(io->call->safety, data, len, emit_to_client, io);

    io->blocked |= rc == GW_EPERM;
    return rc;
}

/* The translated stream's OpenAI events go through the SSE relay. */
static int
relay_feed(void *ctx, const char *data, size_t len)
{
    return gw_worker_sse_feed(ctx, data, len);
}

static size_t
on_data(char *data, size_t size, size_t n, void *ctx)
{
    struct upstream_io *io = ctx;
    struct gw_call *call = io->call;
    size_t len = size * n;

    if (io->got_bytes) {
        if (io->curl != NULL)
            io->last_io_ms = gw_now_ms(); /* as in on_header */
    } else {
        io->got_bytes = true;
        int64_t now = gw_now_us();
        io->last_io_ms = now / 1000;
        call->first_byte_us = now - call->req->start_us;
        call->attempt_first_byte_us = now - call->attempt_start_us;
        if (io->curl != NULL)
            curl_easy_getinfo(io->curl, CURLINFO_RESPONSE_CODE, &io->status);
        /* A raw answer (audio, video) goes out with the upstream's own
         * content type, its bytes as they come. */
        if (call->raw && io->status >= 200 && io->status < 300) {
            if (gw_worker_http_stream_begin(call->conn, call->req, (int)io->status,
                                            io->ctype[0] ? io->ctype : "application/octet-stream",
                                            NULL) != 0) {
                io->client_gone = true;
                return 0;
            }
            io->streaming = true;
        }
        /* Relay only a successful stream; anything else is collected so
         * that it can be answered whole with its own status. */
        if (call->stream && !call->raw && io->status >= 200 && io->status < 300) {
            if (gw_worker_http_stream_begin(call->conn, call->req, (int)io->status,
                                            "text/event-stream",
                                            "Cache-Control: no-cache\r\n") != 0) {
                io->client_gone = true;
                return 0;
            }
            io->streaming = true;
        }
    }
    if (io->streaming && call->raw) {
        if (gw_worker_http_stream_write(call->conn, data, len) != 0) {
            io->client_gone = true;
            return 0;
        }
        return len;
    }
    if (io->streaming && io->xlate)
        return io->ad->stream_feed(&io->xs, data, len) == 0 ? len : 0;
    if (io->streaming)
        return gw_worker_sse_feed(&io->sse, data, len) == 0 ? len : 0;
    if (io->body.len + len > io->max_response_size) {
        io->too_big = true;
        return 0;
    }
    return gw_buf_append(&io->body, data, len) == 0 ? len : 0;
}

/*
 * Record a failed attempt that sent nothing to the client yet, so that
 * the pipeline can try another target or answer it (gw_worker_upstream_
 * fail_answer).
 */
static void
fail_transfer(struct upstream_io *io, CURLcode cc, const char *errbuf)
{
    struct gw_call *call = io->call;
    struct gw_call_failure *f = &call->fail;
    const char *what = errbuf[0] ? errbuf : curl_easy_strerror(cc);

    f->body = NULL;
    f->body_len = 0;
    if (io->too_big) {
        f->status = 502;
        f->code = "upstream_response_too_large";
        snprintf(f->message, sizeof(f->message),
                 "The upstream's response exceeds upstream.max_response_size (%zu bytes).",
                 io->max_response_size);
    } else if (io->timed_out || cc == CURLE_OPERATION_TIMEDOUT) {
        f->status = 504;
        f->code = "upstream_timeout";
        snprintf(f->message, sizeof(f->message),
                 "The upstream provider \"%s\" did not answer in time (%.160s).",
                 call->provider_name,
                 io->timed_out ? (io->got_bytes ? "idle timeout" : "first_byte timeout") : what);
    } else {
        f->status = 502;
        f->code = "upstream_unreachable";
        snprintf(f->message, sizeof(f->message),
                 "The upstream provider \"%s\" could not be reached: %.160s.", call->provider_name,
                 what);
    }
}

/*
 * An error answer of the provider in OpenAI's shape, when its adapter
 * translates them: *body and *len replaced, *status the one to answer.
 */
static void
error_translate(struct upstream_io *io, int *status, const char **body, size_t *len,
                const char **ctype)
{
    const char *out;
    size_t out_len;

    if (io->ad->error == NULL || io->ad->error(io->call, status, *body, *len, &out, &out_len) != 0)
        return;
    *body = out;
    *len = out_len;
    *ctype = "application/json";
}

/* The upstream answered 5xx or 429: keep its answer for a last resort. */
static void
fail_status(struct upstream_io *io)
{
    struct gw_call *call = io->call;
    struct gw_call_failure *f = &call->fail;
    const char *body = io->body.data ? io->body.data : "", *ctype = io->ctype;
    size_t len = io->body.len;
    int status = (int)io->status;

    error_translate(io, &status, &body, &len, &ctype);
    f->status = (int)io->status;
    f->code = io->status == 429 ? "upstream_rate_limited" : "upstream_error";
    snprintf(f->message, sizeof(f->message), "The upstream provider \"%s\" answered HTTP %d.",
             call->provider_name, (int)io->status);
    if (io->ad->error != NULL) {
        /* A translated error says what the provider said. */
        struct json_object *o = json_tokener_parse(body), *e, *m;
        if (o != NULL && json_object_object_get_ex(o, "error", &e) &&
            json_object_object_get_ex(e, "message", &m)) {
            /* Its first 300 bytes, cut between characters. */
            const char *said = json_object_get_string(m) ?: ""; /* NULL for null */
            int keep = (int)gw_utf8_prefix(said, 300);
            snprintf(f->message, sizeof(f->message),
                     "The upstream provider \"%s\" answered HTTP %d: %.*s", call->provider_name,
                     (int)io->status, keep, said);
        }
        json_object_put(o);
    }
    f->body = gw_arena_strndup(call->req->arena, body, len);
    f->body_len = len;
    snprintf(f->ctype, sizeof(f->ctype), "%s", ctype[0] ? ctype : "application/json");
}

int
gw_worker_upstream_fail_answer(struct gw_call *call)
{
    struct gw_call_failure *f = &call->fail;

    /* A provider's 429 is the client's to see, with its Retry-After. */
    if (f->status == 429 && f->body != NULL) {
        char *extra = NULL;
        if (f->retry_after_ms > 0)
            extra = gw_arena_printf(call->req->arena, "Retry-After: %lld\r\n",
                                    (long long)((f->retry_after_ms + 999) / 1000));
        return gw_worker_http_respond(call->conn, call->req, 429, f->ctype, extra, f->body,
                                      f->body_len);
    }
    /* A failure of the upstream is the gateway's: 502, or 504 for time. */
    int status = f->status == 504 || f->status == 503 ? f->status : 502;
    if (f->status == 503 && (f->code == NULL || strcmp(f->code, "no_healthy_target") != 0))
        status = 502; /* the upstream's own 503 */
    return gw_worker_http_error(call->conn, call->req, status, "upstream_error", f->code, NULL,
                                "%s", f->message);
}

/*
 * Tell a client whose stream already began that it broke: an SSE event in
 * OpenAI's error shape (the SDKs raise it), then the end of the stream.
 */
static int
stream_error_event(struct gw_call *call, const char *why, const char *code)
{
    struct json_object *o = json_object_new_object(), *e = json_object_new_object();
    char msg[512];
    size_t len;

    snprintf(msg, sizeof(msg), "The upstream stream from provider \"%s\" ended abnormally: %s.",
             call->provider_name, why);
    json_object_object_add(e, "message", json_object_new_string(msg));
    json_object_object_add(e, "type", json_object_new_string("upstream_error"));
    json_object_object_add(e, "param", NULL);
    json_object_object_add(e, "code", json_object_new_string(code));
    json_object_object_add(o, "error", e);
    const char *json = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN, &len);
    char *ev = gw_arena_printf(call->req->arena, "data: %s\n\n", json);
    json_object_put(o);
    return gw_worker_http_stream_write(call->conn, ev, strlen(ev));
}

/*
 * The sockets and the timer libcurl asks a connection to watch, through
 * its multi handle's socket and timer callbacks (struct gw_transfer).  One
 * transfer runs at a time on a connection, but it may have more than one
 * socket (both address families while it connects, the resolver's).
 */
static int
on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    struct gw_transfer *t = userp;
    size_t i;

    (void)easy, (void)socketp;
    for (i = 0; i < t->n && t->fd[i] != fd; i++)
        ;
    if (what == CURL_POLL_REMOVE) {
        gw_worker_fd_forget(fd); /* before curl closes it or keeps it for later */
        if (i < t->n) {
            t->n--;
            t->fd[i] = t->fd[t->n];
            t->what[i] = t->what[t->n];
        }
        return 0;
    }
    if (i == t->n) {
        if (t->n == GW_TRANSFER_WATCH_MAX)
            return -1; /* fails the transfer rather than hang it */
        t->fd[t->n++] = fd;
    }
    t->what[i] = what;
    return 0;
}

static int
on_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct gw_transfer *t = userp;

    (void)multi;
    t->timer_at_ms = timeout_ms < 0 ? -1 : gw_now_ms() + timeout_ms;
    return 0;
}

int
gw_worker_transfer_init(struct gw_transfer *t)
{
    memset(t, 0, sizeof(*t));
    t->timer_at_ms = -1;
    if ((t->multi = curl_multi_init()) == NULL)
        return GW_ENOMEM;
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(t->multi, CURLMOPT_SOCKETDATA, t);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(t->multi, CURLMOPT_TIMERDATA, t);
    return 0;
}

void
gw_worker_transfer_fini(struct gw_transfer *t)
{
    gw_worker_h1_close_idle(t);
    free(t->rbuf);
    t->rbuf = NULL;
    if (t->connect != NULL)
        curl_easy_cleanup(t->connect);
    t->connect = NULL;
    if (t->multi != NULL)
        curl_multi_cleanup(t->multi);
    t->multi = NULL;
}

long
gw_worker_transfer_wait_ms(const struct gw_transfer_clock *clock, int64_t now, int64_t deadline_ms,
                           bool *timed_out)
{
    long limit = *clock->got_bytes ? clock->to->idle_ms : clock->to->first_byte_ms;
    int64_t last = *clock->last_io_ms;

    /* While an upload is being sent, the wait for an answer has not
     * begun: it counts from the last bytes curl took.  While a relay's
     * write waits for a slow client, what the upstream sends meanwhile
     * waits unread: it counts from when the client took it. */
    if (clock->upload_read_ms != NULL && atomic_load(clock->upload_read_ms) > last)
        last = atomic_load(clock->upload_read_ms);
    if (clock->client_took_ms != NULL && *clock->client_took_ms > last)
        last = *clock->client_took_ms;
    int64_t left = last + limit - now;
    *timed_out = left <= 0;
    if (deadline_ms >= 0 && deadline_ms - now < left) {
        left = deadline_ms - now;
        *timed_out = false;
    }
    if (left <= 0)
        return 0;
    /* A worker of one connection looks at its stop flag every second;
     * one of many interrupts this wait when it stops. */
    if (left > 1000 && !gw_worker_woken_on_stop)
        left = 1000;
    return (long)left;
}

/* gw_worker_transfer_run; adopt: see gw_worker_transfer_connect. */
static CURLcode
transfer_run(struct gw_transfer *t, CURL *curl, const struct gw_transfer_clock *clock,
             bool *timed_out, int *adopt)
{
    CURLcode cc = CURLE_OK;
    int running = 1;

    *timed_out = false;
    if (curl_multi_add_handle(t->multi, curl) != CURLM_OK)
        return CURLE_FAILED_INIT;
    /* Adding the handle set curl's timer to now: that starts the transfer
     * (connect or reuse, send the request) in the first turn below. */
    while (running) {
        int64_t now = gw_now_ms();
        if (t->timer_at_ms >= 0 && t->timer_at_ms <= now) {
            t->timer_at_ms = -1;
            if (curl_multi_socket_action(t->multi, CURL_SOCKET_TIMEOUT, 0, &running) != CURLM_OK) {
                cc = CURLE_FAILED_INIT;
                break;
            }
            continue;
        }
        /* curl keeps the whole exchange's deadline (CURLOPT_TIMEOUT_MS). */
        long left = gw_worker_transfer_wait_ms(clock, now, -1, timed_out);
        if (left == 0) {
            cc = CURLE_OPERATION_TIMEDOUT;
            break;
        }
        if (t->timer_at_ms >= 0 && t->timer_at_ms - now < left)
            left = t->timer_at_ms - now;

        /* One wait on what curl watches; what became ready goes straight
         * to curl, which then reads or writes without polling again. */
        struct pollfd pfd[GW_TRANSFER_WATCH_MAX];
        nfds_t nfds = 0;
        for (size_t i = 0; i < t->n; i++) {
            short ev = (short)((t->what[i] & CURL_POLL_IN ? POLLIN : 0) |
                               (t->what[i] & CURL_POLL_OUT ? POLLOUT : 0));
            pfd[nfds++] = (struct pollfd){.fd = t->fd[i], .events = ev};
        }
        int n;
        if (nfds == 1) { /* one connection, the usual case */
            n = gw_worker_wait_curl(pfd[0].fd, pfd[0].events, (long)left);
            pfd[0].revents = (short)(n > 0 ? n : 0);
        } else {
            n = gw_worker_poll(pfd, nfds, (long)left);
        }
        if (n < 0 && errno != EINTR) {
            cc = CURLE_RECV_ERROR;
            break;
        }
        for (nfds_t i = 0; n > 0 && i < nfds && running; i++) {
            short re = pfd[i].revents;
            if (re & POLLNVAL) {
                on_socket(NULL, pfd[i].fd, CURL_POLL_REMOVE, t, NULL); /* closed under us */
                continue;
            }
            if (re == 0)
                continue;
            int mask = (re & (POLLIN | POLLHUP | POLLERR) ? CURL_CSELECT_IN : 0) |
                       (re & POLLOUT ? CURL_CSELECT_OUT : 0) |
                       (re & POLLERR ? CURL_CSELECT_ERR : 0);
            if (curl_multi_socket_action(t->multi, pfd[i].fd, mask, &running) != CURLM_OK) {
                cc = CURLE_FAILED_INIT;
                running = 0;
            }
        }
    }
    CURLMsg *msg;
    int queued;
    while ((msg = curl_multi_info_read(t->multi, &queued)) != NULL)
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == curl && cc == CURLE_OK)
            cc = msg->data.result;
    /* A connect-only handle's connection is closed as it leaves the multi
     * handle: a second descriptor of its socket keeps it open. */
    if (adopt != NULL && cc == CURLE_OK) {
        curl_socket_t s = CURL_SOCKET_BAD;
        curl_easy_getinfo(curl, CURLINFO_ACTIVESOCKET, &s);
        if (s == CURL_SOCKET_BAD || (*adopt = fcntl(s, F_DUPFD_CLOEXEC, 0)) < 0)
            cc = CURLE_COULDNT_CONNECT;
    }
    curl_multi_remove_handle(t->multi, curl);
    return cc;
}

CURLcode
gw_worker_transfer_run(struct gw_transfer *t, CURL *curl, const struct gw_transfer_clock *clock,
                       bool *timed_out)
{
    return transfer_run(t, curl, clock, timed_out, NULL);
}

CURLcode
gw_worker_transfer_connect(struct gw_transfer *t, CURL *curl, const struct gw_transfer_clock *clock,
                           bool *timed_out, int *fd)
{
    *fd = -1;
    return transfer_run(t, curl, clock, timed_out, fd);
}

/*
 * The usage of a stream: what the upstream reported, else (it sent none,
 * or the stream was cut short) what it was seen to produce: one token per
 * chunk of generated text or tool arguments, and the prompt estimated as
 * the rate limits do (a quarter of the body's bytes).  Counted once
 * either way: nothing else adds a stream's tokens.
 */
static void
stream_usage(struct upstream_io *io)
{
    struct gw_call *call = io->call;

    call->have_usage = io->sse.have_usage;
    call->prompt_tokens = io->sse.prompt_tokens;
    call->completion_tokens = io->sse.completion_tokens;
    if (io->sse.have_usage || io->sse.generated == 0)
        return;
    call->have_usage = true;
    call->prompt_tokens = (int64_t)(call->req->body_len / 4);
    call->completion_tokens = io->sse.generated;
    gw_log(GW_LOG_INFO,
           "req=%s the stream ended without usage: counted %lld chunks as completion tokens, "
           "%lld prompt tokens estimated",
           call->req->id, (long long)call->completion_tokens, (long long)call->prompt_tokens);
}

void
gw_worker_upstream_init(CURL *curl)
{
    curl_easy_setopt(curl, CURLOPT_POST, 1L);
    curl_easy_setopt(curl, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
    /* libcurl looks the proxy variables up in the environment for every
     * transfer (five getenv a request).  A process's environment does not
     * change under it: when none is set, say so once ("" is no proxy and
     * no exception), which is what curl would find each time. */
    static const char *const proxy_vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY",
                                             "all_proxy",  "ALL_PROXY",   "no_proxy",
                                             "NO_PROXY"};
    bool any = false;
    for (size_t i = 0; i < sizeof(proxy_vars) / sizeof(proxy_vars[0]); i++)
        any |= getenv(proxy_vars[i]) != NULL;
    proxy_env = any;
    if (!any) {
        curl_easy_setopt(curl, CURLOPT_PROXY, "");
        curl_easy_setopt(curl, CURLOPT_NOPROXY, "");
    }
}

/* The exchange as a transfer of curl's own: HTTPS, a proxy, an upload. */
static CURLcode
curl_transfer(struct gw_transfer *xfer, CURL *curl, struct gw_call *call, struct upstream_io *io,
              const struct gw_transfer_clock *clock, char *errbuf)
{
    /* The options that never change were set once (upstream_init): no
     * reset, so the handle keeps its buffers from request to request. */
    curl_easy_setopt(curl, CURLOPT_URL, call->url);
    if (call->method_get) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    } else if (call->upload != NULL) {
        /* The spooled upload, read from its file as curl sends it. */
        uint64_t size = gw_worker_media_upload_rewind(call->upload, call->target_model);
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, NULL);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, gw_worker_media_upload_read);
        curl_easy_setopt(curl, CURLOPT_READDATA, call->upload);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)size);
    } else {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, call->body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)call->body_len);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, call->headers);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, call->timeouts.connect_ms);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, call->timeouts.total_ms);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, io);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, io);
    CURLcode cc = gw_worker_transfer_run(xfer, curl, clock, &io->timed_out);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, NULL); /* errbuf is on the caller's stack */
    if (call->upload != NULL) {
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, NULL);
        curl_easy_setopt(curl, CURLOPT_READDATA, NULL);
    }
    return cc;
}

int
gw_worker_upstream_call(struct gw_transfer *xfer, CURL *curl, struct gw_call *call,
                        size_t max_response_size)
{
    struct upstream_io io = {
        .call = call, .max_response_size = max_response_size, .curl = curl, .to = &call->timeouts};
    char errbuf[CURL_ERROR_SIZE] = "";
    int rc = 0;

    const struct gw_provider_adapter *ad = gw_worker_provider_adapter(call->type);
    io.ad = ad;
    gw_worker_sse_init(&io.sse, call->safety != NULL ? emit_inspected : emit_to_client, &io,
                       call->stream && !call->client_usage);
    if (call->created == 0)
        call->created = (int64_t)time(NULL);
    int built = ad != NULL ? ad->request(call) : GW_EINVAL;
    if (built == GW_ENOENT) {
        rc = gw_worker_http_error(call->conn, call->req, 400, "invalid_request_error",
                                  "unsupported_endpoint", NULL,
                                  "The provider \"%s\" (%s) of this model does not serve %s.",
                                  call->provider_name, ad->type, call->req->path);
        goto out;
    }
    if (built != 0 || headers_build(call) != 0) {
        rc = gw_worker_http_error(call->conn, call->req, 500, "server_error", "internal_error",
                                  NULL, "The gateway could not build the upstream request.");
        goto out;
    }
    if (call->stream && !call->raw && ad->stream_feed != NULL) {
        gw_worker_xstream_init(&io.xs, call, relay_feed, &io.sse);
        io.xlate = true;
    }
    call->attempt_start_us = gw_now_us();
    io.start_ms = io.last_io_ms = call->attempt_start_us / 1000;
    call->attempt_first_byte_us = 0;

    struct gw_transfer_clock clock = {.last_io_ms = &io.last_io_ms,
                                      .got_bytes = &io.got_bytes,
                                      .to = io.to,
                                      .upload_read_ms =
                                          call->upload != NULL ? &call->upload->last_read_ms : NULL,
                                      .client_took_ms = &call->conn->took_ms};
    CURLcode cc;
    if (call->upload == NULL && !proxy_env && gw_worker_h1_serves(call->url)) {
        struct gw_h1_request hr = {.url = call->url,
                                   .get = call->method_get,
                                   .headers = call->headers,
                                   .body = call->body,
                                   .body_len = call->method_get ? 0 : call->body_len,
                                   .on_header = on_header,
                                   .on_data = on_data,
                                   .ctx = &io,
                                   .status = &io.status,
                                   .arena = call->req->arena};
        io.curl = NULL;
        cc = gw_worker_h1_run(xfer, &hr, &clock, errbuf, &io.timed_out);
    } else {
        cc = curl_transfer(xfer, curl, call, &io, &clock, errbuf);
        if (!io.got_bytes)
            curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &io.status);
    }
    call->status = (int)io.status;

    if (io.client_gone) {
        /* The transfer was stopped with the client: count what came. */
        if (io.streaming)
            stream_usage(&io);
        rc = GW_ECLOSED;
    } else if (io.streaming && call->raw) {
        /* Bytes have no error event: a broken transfer ends the
         * connection without the last chunk, so the client sees it cut. */
        if (cc == CURLE_OK) {
            rc = gw_worker_http_stream_end(call->conn) != 0 ? GW_ECLOSED : 0;
        } else {
            call->status = io.timed_out || cc == CURLE_OPERATION_TIMEDOUT ? 504 : 502;
            call->req->keep_alive = false;
            rc = GW_ECLOSED;
        }
    } else if (io.streaming) {
        /* Headers are out: an error can only be told inside the stream. */
        if (cc == CURLE_OK && io.xlate && io.ad->stream_finish(&io.xs) == GW_EPROTO) {
            (void)gw_worker_sse_finish(&io.sse);
            rc =
                stream_error_event(call, "it ended before its last event", "upstream_disconnected");
            call->status = 502;
        } else if (cc == CURLE_OK) {
            rc = gw_worker_sse_finish(&io.sse);
        }
        if (rc == 0 && cc == CURLE_OK && call->safety != NULL)
            io.blocked |=
                (rc = gw_worker_safety_stream_end(call->safety, emit_to_client, &io)) == GW_EPERM;
        if (io.blocked)
            rc = 0; /* the error event is out: the stream ends here */
        if (rc == 0 && cc != CURLE_OK && !io.blocked) {
            (void)gw_worker_sse_finish(&io.sse);
            bool timeout = io.timed_out || cc == CURLE_OPERATION_TIMEDOUT;
            rc = stream_error_event(call, io.timed_out ? "idle timeout" : curl_easy_strerror(cc),
                                    timeout ? "upstream_timeout" : "upstream_disconnected");
            call->status = timeout ? 504 : 502;
        }
        stream_usage(&io);
        if (rc == 0 && cc == CURLE_OK && !io.blocked && call->status == 200 &&
            call->on_complete != NULL)
            call->on_complete(call, call->on_complete_ctx);
        if (rc == 0)
            rc = gw_worker_http_stream_end(call->conn);
        if (rc != 0)
            rc = GW_ECLOSED;
    } else if (cc != CURLE_OK || io.status == 0) {
        fail_transfer(&io, cc, errbuf);
        call->status = call->fail.status;
        rc = GW_EUPSTREAM;
    } else if (io.status >= 500 || io.status == 429 || io.status < 200 ||
               (io.status >= 300 && io.status < 400)) {
        fail_status(&io);
        rc = GW_EUPSTREAM;
    } else if (io.status >= 400) {
        /* The client's own mistake, as the provider worded it: not retried. */
        const char *ctype = io.ctype[0] ? io.ctype : "application/json";
        const char *body = io.body.data ? io.body.data : "";
        size_t len = io.body.len;
        int status = (int)io.status;
        error_translate(&io, &status, &body, &len, &ctype);
        rc = gw_worker_http_respond(call->conn, call->req, status, ctype, NULL, body, len);
    } else {
        const char *ctype = io.ctype[0] ? io.ctype : "application/json";
        const char *body = io.body.data ? io.body.data : "";
        size_t len = io.body.len;
        bool answered = false;
        if (ad->response != NULL && ad->response(call, body, len, &body, &len) != 0) {
            rc = gw_worker_http_error(call->conn, call->req, 502, "upstream_error",
                                      "upstream_bad_response", NULL,
                                      "The upstream provider \"%s\" sent an answer the gateway "
                                      "could not read.",
                                      call->provider_name);
            call->status = 502;
            goto out;
        }
        if (ad->response != NULL)
            ctype = "application/json";
        call->have_usage =
            gw_worker_usage_parse(body, len, &call->prompt_tokens, &call->completion_tokens);
        if (call->answer_hook != NULL && call->answer_hook(call, &body, &len) != 0) {
            rc = gw_worker_http_error(call->conn, call->req, 502, "upstream_error",
                                      "upstream_bad_response", NULL,
                                      "The upstream provider \"%s\" sent an answer the gateway "
                                      "could not read.",
                                      call->provider_name);
            call->status = 502;
            goto out;
        }
        if (call->safety != NULL)
            rc = gw_worker_safety_response(call, &body, &len, &answered);
        /* What the client gets (masked, when safety masked it) is what a
         * cache stores and a capture records; a blocked answer neither. */
        if (!answered && call->answer != NULL)
            gw_worker_answer_body(call->answer, body, len);
        if (!answered && io.status == 200 && call->on_complete != NULL)
            call->on_complete(call, call->on_complete_ctx);
        if (!answered)
            rc = gw_worker_http_respond(call->conn, call->req, (int)io.status, ctype, NULL, body,
                                        len);
    }
out:
    if (io.xlate)
        gw_worker_xstream_fini(&io.xs);
    gw_worker_sse_fini(&io.sse);
    gw_buf_free(&io.body);
    gw_worker_headers_wipe(call->headers);
    call->headers = NULL;
    call->headers_end = NULL;
    return rc;
}
