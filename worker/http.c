/*
 * http.c - the server side of HTTP/1.1 in a worker: reading requests with
 * llhttp under size and time limits, and writing responses, plain
 * or chunked.
 *
 * The connection is a non-blocking socket.  A read or write that finds
 * nothing to do waits in gw_worker_poll (the worker's event loop, where
 * its other connections run), so that the idle (keep-alive), read and
 * write timeouts are exact and a stopping worker notices SIGTERM.
 * Parsed pieces (URL, header names and values, body) are copied out of the
 * read buffer as they are parsed, so the buffer can be compacted between
 * reads and pipelined requests simply stay in it.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "worker/worker.h"

#define HTTP_IN_MIN 16384
/* Waits are sliced so that a stopping worker notices within this time. */
#define HTTP_POLL_SLICE_MS 500
/* How long an idle connection stops watching for new clients when another
 * worker is free to take them. */
#define HTTP_YIELD_BACKOFF_MS 20
/* An idle keep-alive connection is given up for a waiting new client only
 * after this much idleness. */
#define HTTP_YIELD_AFTER_MS 1000
/* How long a connection closed on a client still sending (an upload
 * refused) reads and drops what comes, at most. */
#define HTTP_LINGER_MS 2000
/* A keep-alive connection whose client did not have its next request in
 * by the time the answer was out reads before waiting once in this many
 * requests, to see whether it does now. */
#define HTTP_IDLE_PROBE 16

const char *
gw_worker_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    }
    return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
}

const char *
gw_worker_http_method_name(llhttp_method_t method)
{
    /* llhttp_method_name aborts on a number it does not know. */
#define METHOD_NAME(num, name, string)                                                             \
    case HTTP_##name: return #string;
    switch (method) {
        HTTP_ALL_METHOD_MAP(METHOD_NAME)
    }
#undef METHOD_NAME
    return "UNKNOWN";
}

/* ----------------------------------------------------------- parsing */

static struct gw_http_conn *
conn_of(llhttp_t *p)
{
    return p->data;
}

/*
 * Count the request line and headers against max_header_size, by where
 * the parser is in the bytes: what it skips without a callback (line
 * ends, whitespace before a value) counts too.  Trailers of a chunked body
 * come after the head was counted and add their own lengths.
 */
static int
header_bytes_add(struct gw_http_conn *c, const char *at, size_t len)
{
    if (c->headers_done)
        c->header_bytes += len;
    else
        c->header_bytes = c->msg_bytes + (size_t)(at + len - c->parse_base);
    if (c->header_bytes > c->limits->max_header_size) {
        c->error = 431;
        return -1;
    }
    return 0;
}

static int
on_message_begin(llhttp_t *p)
{
    (void)p;
    return 0;
}

static int
on_url(llhttp_t *p, const char *at, size_t len)
{
    struct gw_http_conn *c = conn_of(p);

    if (header_bytes_add(c, at, len) != 0)
        return -1;
    return gw_buf_append(&c->url, at, len) == 0 ? 0 : -1;
}

/* A header is complete when the next name starts or the headers end. */
static void
header_commit(struct gw_http_conn *c)
{
    struct gw_request *r = c->req;

    if (c->field.len == 0)
        return;
    if (r->nheaders == c->headers_cap) {
        size_t cap = c->headers_cap ? 2 * c->headers_cap : 16;
        struct gw_header *h = gw_arena_alloc(r->arena, cap * sizeof(*h));
        if (r->nheaders)
            memcpy(h, r->headers, r->nheaders * sizeof(*h));
        r->headers = h;
        c->headers_cap = cap;
    }
    struct gw_header *h = &r->headers[r->nheaders++];
    h->name = gw_arena_strndup(r->arena, c->field.data, c->field.len);
    for (char *s = h->name; *s; s++)
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s + 32);
    /* Optional whitespace around a value is not part of it (RFC 9110). */
    size_t vlen = c->value.len;
    while (vlen > 0 && (c->value.data[vlen - 1] == ' ' || c->value.data[vlen - 1] == '\t'))
        vlen--;
    h->value = gw_arena_strndup(r->arena, c->value.len ? c->value.data : "", vlen);
    c->field.len = 0;
    c->value.len = 0;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct gw_http_conn *c = conn_of(p);

    if (header_bytes_add(c, at, len) != 0)
        return -1;
    if (c->in_value) {
        header_commit(c);
        c->in_value = false;
    }
    return gw_buf_append(&c->field, at, len) == 0 ? 0 : -1;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct gw_http_conn *c = conn_of(p);

    if (header_bytes_add(c, at, len) != 0)
        return -1;
    c->in_value = true;
    return gw_buf_append(&c->value, at, len) == 0 ? 0 : -1;
}

static int
on_headers_complete(llhttp_t *p)
{
    struct gw_http_conn *c = conn_of(p);
    struct gw_request *r = c->req;

    header_commit(c);
    c->in_value = false;
    c->headers_done = true;
    r->method = (llhttp_method_t)p->method;
    r->http_minor = p->http_major == 1 ? p->http_minor : 0;
    r->keep_alive = llhttp_should_keep_alive(p) != 0;

    char *url = gw_arena_strndup(r->arena, c->url.len ? c->url.data : "", c->url.len);
    /* The absolute form, which a server must take as well (RFC 9112,
     * 3.2.2): "http://host/v1/models" is "/v1/models".  Any other form
     * ("*", a bare name) names nothing here. */
    if (url[0] != '/') {
        if (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0) {
            c->error = 400;
            return -1;
        }
        char *at = strstr(url, "://") + 3;
        at += strcspn(at, "/?");
        url = *at == '/' ? at : gw_arena_cat(r->arena, "/", at);
    }
    char *q = strchr(url, '?');
    if (q != NULL) {
        *q = '\0';
        r->query = q + 1;
    }
    r->path = url;

    /* A declared length over the limit is refused before any body is read. */
    c->body_streamed = c->stream_body != NULL && c->stream_body(r);
    size_t limit = c->body_streamed ? c->limits->max_upload_size : c->limits->max_body_size;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > limit) {
        c->error = 413;
        return -1;
    }
    const char *expect = gw_worker_http_header(r, "expect");
    if (expect != NULL && r->http_minor >= 1 && strcasecmp(expect, "100-continue") == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        if (gw_write_all(c->fd, cont, sizeof(cont) - 1) != 0) {
            c->error = 400;
            return -1;
        }
    }
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    struct gw_http_conn *c = conn_of(p);

    /* A streamed body is handed out as it is parsed: the buffer holds no
     * more than one read's worth of it. */
    if (c->body_streamed) {
        c->body_seen += len;
        if (c->body_seen > c->limits->max_upload_size) {
            c->error = 413;
            return -1;
        }
        return gw_buf_append(&c->body, at, len) == 0 ? 0 : -1;
    }
    if (c->body.len + len > c->limits->max_body_size) {
        c->error = 413;
        return -1;
    }
    return gw_buf_append(&c->body, at, len) == 0 ? 0 : -1;
}

static int
on_message_complete(llhttp_t *p)
{
    struct gw_http_conn *c = conn_of(p);

    c->done = true;
    /* Stop here: the bytes after this message belong to the next one. */
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

void
gw_worker_http_init(struct gw_http_conn *c, int fd, const struct gw_http_limits *limits)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->limits = limits;
    c->in_cap = limits->max_header_size + 1024;
    if (c->in_cap < HTTP_IN_MIN)
        c->in_cap = HTTP_IN_MIN;
    c->in = malloc(c->in_cap);
    if (c->in == NULL)
        gw_fatal("malloc(%zu): out of memory", c->in_cap);
    c->idle_hit = true;
    /* Its number may have been a socket closed without leaving the park
     * set (worker.c): start afresh. */
    gw_worker_fd_forget(fd);
    /* Reads and writes never block: a wait is gw_worker_poll's, where the
     * worker's other connections run (a worker accepts with SOCK_NONBLOCK
     * already; a descriptor from elsewhere is made so). */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

void
gw_worker_http_fini(struct gw_http_conn *c)
{
    gw_worker_fd_forget(c->fd);
    free(c->in);
    gw_buf_free(&c->url);
    gw_buf_free(&c->field);
    gw_buf_free(&c->value);
    gw_buf_free(&c->body);
    gw_buf_free(&c->out);
    gw_buf_free(&c->filter_in);
    gw_buf_free(&c->filter_out);
    c->in = NULL;
}

/*
 * Wait until the client's socket is readable or timeout_ms after start
 * (the wait may have begun in a read that timed out) passes: for bytes
 * that arrive after the last read found it empty (c->drained).
 * Returns 1 readable, 0 timed out, GW_ECLOSED when an idle connection
 * should be let go: the worker is stopping, or a new client is waiting on
 * a listening socket and the worker should serve it instead (the
 * connection's yield hook decides; see worker.c).
 */
static int
wait_readable(struct gw_http_conn *c, int64_t start, long timeout_ms, bool idle)
{
    int64_t deadline = start + timeout_ms;
    /* A connection idle this long may give way; a client reusing it sends
     * sooner than that, so it will not meet a connection just closed. */
    int64_t yield_from = start + HTTP_YIELD_AFTER_MS;
    struct pollfd pfd[1 + GW_HTTP_MAX_YIELD_FDS];
    size_t nfds = 1, nwatch = 1;

    pfd[0] = (struct pollfd){.fd = c->fd, .events = POLLIN};
    if (idle && c->should_yield != NULL && c->served > 0)
        for (size_t i = 0; i < c->nyield_fds && nwatch < sizeof(pfd) / sizeof(pfd[0]); i++)
            pfd[nwatch++] = (struct pollfd){.fd = c->yield_fds[i], .events = POLLIN};
    for (int64_t now = start;; now = gw_now_ms()) {
        /* A stopping worker drops a connection between two requests, but
         * not a fresh one whose first request is on its way: that one is
         * served, with no more than read_timeout to arrive. */
        if (idle && gw_worker_stopping) {
            if (c->served > 0)
                return GW_ECLOSED;
            int64_t cap = start + c->limits->read_timeout_ms;
            if (cap < deadline)
                deadline = cap;
        }
        int64_t left = deadline - now;
        if (left <= 0)
            return 0;
        /* A worker of one connection looks at its stop flag every slice;
         * one of many wakes its connections when it stops. */
        if (left > HTTP_POLL_SLICE_MS && !gw_worker_woken_on_stop)
            left = HTTP_POLL_SLICE_MS;
        if (now < yield_from) {
            nfds = 1;
            if (left > yield_from - now)
                left = yield_from - now;
        } else {
            nfds = nwatch;
        }
        /* The client's socket alone: gw_worker_wait_client (the idle wait of
         * a worker of one connection also watches the listening sockets). */
        int n;
        if (nfds == 1) {
            n = gw_worker_wait_client(c->fd, POLLIN, (long)left);
            pfd[0].revents = (short)(n > 0 ? n : 0);
        } else {
            n = gw_worker_poll(pfd, nfds, (long)left);
        }
        if (n < 0 && errno != EINTR)
            return 1; /* let read(2) report the error */
        if (n <= 0)
            continue;
        if (pfd[0].revents != 0)
            return 1;
        if (c->should_yield(c->yield_ctx))
            return GW_ECLOSED;
        /* Someone else will take the new client: stop watching for a bit. */
        yield_from = gw_now_ms() + HTTP_YIELD_BACKOFF_MS;
    }
}

/* read(2) from the client into buf, noting whether it took what there was. */
static ssize_t
read_in(struct gw_http_conn *c, char *buf, size_t room)
{
    ssize_t r = read(c->fd, buf, room);

    if (r >= 0 || errno != EINTR)
        c->drained = r < 0 || (size_t)r < room;
    return r;
}

int
gw_worker_http_read(struct gw_http_conn *c, struct gw_request *req)
{
    c->req = req;
    c->url.len = c->field.len = c->value.len = c->body.len = 0;
    c->msg_bytes = c->header_bytes = 0;
    c->headers_cap = 0;
    c->bytes_out = 0;
    c->in_value = c->done = c->headers_done = false;
    c->body_streamed = false;
    c->body_off = 0;
    c->body_seen = 0;
    c->error = 0;
    c->sent_us = 0;
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;

    for (;;) {
        if (c->in_off < c->in_len) {
            size_t avail = c->in_len - c->in_off;
            /* The request's time starts with its first byte, not with the
             * wait for it on a keep-alive connection (the bytes may have
             * come with the last request's: pipelining).  Its request line
             * and headers must all arrive within read_timeout of it; a
             * client trickling them in gets 408 too.  The body is timed
             * per read. */
            if (c->msg_bytes == 0) {
                req->start_us = gw_now_us();
                c->header_deadline = req->start_us / 1000 + c->limits->read_timeout_ms;
            }
            size_t n;
            c->parse_base = c->in + c->in_off;
            llhttp_errno_t e = gw_http_parse(&c->parser, c->parse_base, avail, &n);

            c->in_off += n;
            c->msg_bytes += n;
            bool streamed = c->body_streamed && c->headers_done && c->error == 0 &&
                            (e == HPE_OK || e == HPE_PAUSED);
            if (e == HPE_PAUSED || c->done || streamed) {
                if (e == HPE_PAUSED)
                    llhttp_resume(&c->parser);
                c->served++;
                /* A streamed body stays in c->body for body_read. */
                req->body = c->body_streamed ? NULL : c->body.len ? c->body.data : "";
                req->body_len = c->body_streamed ? 0 : c->body.len;
                return 0;
            }
            if (c->error != 0)
                return GW_EPROTO;
            if (e != HPE_OK) {
                c->error = 400;
                return GW_EPROTO;
            }
            /* A read of only what no callback sees (whitespace) counts. */
            if (!c->headers_done && c->msg_bytes > c->limits->max_header_size) {
                c->error = 431;
                return GW_EPROTO;
            }
        }
        /* Need more bytes: make room first. */
        if (c->in_off == c->in_len) {
            c->in_off = c->in_len = 0;
        } else if (c->in_len == c->in_cap) {
            memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
            c->in_len -= c->in_off;
            c->in_off = 0;
        }
        bool idle = c->msg_bytes == 0;
        /* A new connection's first bytes, and the rest of what a full
         * read left, are usually there already: read first, and wait
         * (deadlines, stop flag, giving way to new clients) only when the
         * read finds nothing.  After a read that took what there was, the
         * rest of a request is waited for.  So is the next request on a
         * keep-alive connection, as nginx does, unless it is there by
         * the time the answer is out (a client quicker to send it than a
         * busy worker to get round to it): a read first then saves the
         * wait, so it is tried while it finds the request, and once every
         * HTTP_IDLE_PROBE requests. */
        bool read_first = !c->drained;
        if (idle)
            read_first |= c->idle_hit || c->served % HTTP_IDLE_PROBE == 0;
        ssize_t r = -1;
        errno = EAGAIN;
        if (read_first && !(idle && gw_worker_stopping)) {
            r = read_in(c, c->in + c->in_len, c->in_cap - c->in_len);
            if (idle)
                c->idle_hit = r > 0;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            int64_t now = gw_now_ms();
            long wait = idle ? c->limits->keepalive_timeout_ms : c->limits->read_timeout_ms;
            if (!idle && !c->headers_done) {
                long left = (long)(c->header_deadline - now);
                wait = left < wait ? (left > 0 ? left : 0) : wait;
            }
            int w = wait_readable(c, now, wait, idle);
            if (w == GW_ECLOSED)
                return GW_ECLOSED;
            if (w == 0) {
                if (idle)
                    return GW_ECLOSED;
                c->error = 408;
                return GW_EPROTO;
            }
            r = read_in(c, c->in + c->in_len, c->in_cap - c->in_len);
        }
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (r <= 0) {
            /* EOF: the parser may need to see it (a body delimited by close
             * is not allowed in requests, so this ends the connection). */
            return GW_ECLOSED;
        }
        c->in_len += (size_t)r;
    }
}

int
gw_worker_http_body_read(struct gw_http_conn *c, const char **data, size_t *len)
{
    *len = 0;
    for (;;) {
        if (c->body_off < c->body.len) {
            *data = c->body.data + c->body_off;
            *len = c->body.len - c->body_off;
            c->body_off = c->body.len;
            return 0;
        }
        c->body.len = c->body_off = 0;
        if (c->done)
            return 0;
        if (c->error != 0)
            return GW_EPROTO;
        if (c->in_off < c->in_len) {
            size_t n;
            llhttp_errno_t e =
                gw_http_parse(&c->parser, c->in + c->in_off, c->in_len - c->in_off, &n);
            c->in_off += n;
            if (e == HPE_PAUSED)
                llhttp_resume(&c->parser); /* the message is complete */
            else if (c->error == 0 && e != HPE_OK)
                c->error = 400;
            if (c->error != 0)
                return GW_EPROTO;
            continue;
        }
        c->in_off = c->in_len = 0;
        if (c->drained) {
            int w = wait_readable(c, gw_now_ms(), c->limits->read_timeout_ms, false);
            if (w == GW_ECLOSED)
                return GW_ECLOSED;
            if (w == 0) {
                c->error = 408;
                return GW_EPROTO;
            }
        }
        ssize_t r = read_in(c, c->in, c->in_cap);
        if (r < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (r <= 0)
            return GW_ECLOSED;
        c->in_len = (size_t)r;
    }
}

bool
gw_worker_http_body_unread(const struct gw_http_conn *c)
{
    return c->body_streamed && !c->done;
}

void
gw_worker_http_linger(struct gw_http_conn *c)
{
    int64_t end = gw_now_ms() + HTTP_LINGER_MS;

    if (shutdown(c->fd, SHUT_WR) != 0)
        return;
    for (;;) {
        int64_t left = end - gw_now_ms();
        if (left <= 0)
            break;
        /* Read to EAGAIN before each wait: the wait is for what comes after. */
        ssize_t r = read(c->fd, c->in, c->in_cap);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
            break;
        if (r < 0 && gw_worker_wait_client(c->fd, POLLIN, (long)left) <= 0)
            break;
    }
}

const char *
gw_worker_http_header(const struct gw_request *req, const char *name)
{
    for (size_t i = 0; i < req->nheaders; i++)
        if (strcmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

/* ----------------------------------------------------------- writing */

/* RFC 9110 Date, formatted at most once a second. */
static const char *
http_date(void)
{
    static char date[40];
    static time_t last;
    time_t now = time(NULL);

    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return date;
}

/* Write it all, waiting for the client to take it no longer than
 * write_timeout between two writes that made progress.  A write that had
 * to wait stamps c->took_ms when the client took it. */
static int
writev_all(struct gw_http_conn *c, struct iovec *iov, int n)
{
    int64_t deadline = 0;

    while (n > 0) {
        ssize_t w = writev(c->fd, iov, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return GW_EIO;
            int64_t now = gw_now_ms();
            if (deadline == 0)
                deadline = now + (int64_t)c->limits->write_timeout_ms;
            if (now >= deadline)
                return GW_ETIMEDOUT;
            if (gw_worker_wait_client(c->fd, POLLOUT, (long)(deadline - now)) < 0 && errno != EINTR)
                return GW_EIO;
            continue;
        }
        if (deadline != 0) {
            c->took_ms = gw_now_ms();
            deadline = 0;
        }
        c->bytes_out += (uint64_t)w;
        gw_worker_iov_consume(&iov, &n, (size_t)w);
    }
    return 0;
}

void
gw_worker_iov_consume(struct iovec **iov, int *n, size_t written)
{
    while (*n > 0 && written >= (*iov)->iov_len) {
        written -= (*iov)->iov_len;
        (*iov)++;
        (*n)--;
    }
    if (*n > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + written;
        (*iov)->iov_len -= written;
    }
}

/* Status line and the headers every response carries.  Built with
 * appends rather than printf: it is written for every response. */
static int
head_format(struct gw_http_conn *c, struct gw_request *req, int status, const char *ctype,
            const char *extra)
{
    /* A body left unread cannot be skipped to the next request. */
    bool close = !req->keep_alive || gw_worker_stopping || gw_worker_http_body_unread(c);
    const char *const optional[] = {req->extra_headers, req->cache_headers, req->limit_headers,
                                    req->quota_headers, extra};
    struct gw_buf *b = &c->out;
    int rc = 0;

    req->status = status;
    b->len = 0;
    if (close)
        req->keep_alive = false;
    rc |= GW_BUF_LIT(b, "HTTP/1.1 ");
    rc |= gw_buf_append_u64(b, (uint64_t)(status > 0 ? status : 0));
    rc |= GW_BUF_LIT(b, " ");
    rc |= gw_buf_append_str(b, gw_worker_http_reason(status));
    rc |= GW_BUF_LIT(b, "\r\nServer: aigw\r\nDate: ");
    rc |= gw_buf_append_str(b, http_date());
    rc |= GW_BUF_LIT(b, "\r\nContent-Type: ");
    rc |= gw_buf_append_str(b, ctype);
    rc |= GW_BUF_LIT(b, "\r\nx-request-id: ");
    rc |= gw_buf_append_str(b, req->id);
    rc |= GW_BUF_LIT(b, "\r\n");
    for (size_t i = 0; i < sizeof(optional) / sizeof(optional[0]); i++)
        if (optional[i] != NULL)
            rc |= gw_buf_append_str(b, optional[i]);
    if (close)
        rc |= GW_BUF_LIT(b, "Connection: close\r\n");
    else if (req->http_minor == 0)
        rc |= GW_BUF_LIT(b, "Connection: keep-alive\r\n");
    return rc != 0 ? GW_ENOMEM : 0;
}

/* Run one call of the request's filter (see struct gw_http_filter). */
#define FILTERED(c, call)                                                                          \
    do {                                                                                           \
        if ((c)->filter != NULL && !(c)->filtering) {                                              \
            (c)->filtering = true;                                                                 \
            int rc_ = (c)->filter->call;                                                           \
            (c)->filtering = false;                                                                \
            return rc_;                                                                            \
        }                                                                                          \
    } while (0)

int
gw_worker_http_respond(struct gw_http_conn *c, struct gw_request *req, int status,
                       const char *ctype, const char *extra, const char *body, size_t len)
{
    c->sent_us = gw_wall_us(); /* the answer's last (and only) write */
    FILTERED(c, respond(c, req, status, ctype, extra, body, len));
    if (head_format(c, req, status, ctype, extra) != 0 ||
        GW_BUF_LIT(&c->out, "Content-Length: ") != 0 || gw_buf_append_u64(&c->out, len) != 0 ||
        GW_BUF_LIT(&c->out, "\r\n\r\n") != 0)
        return GW_ENOMEM;
    struct iovec iov[2] = {{c->out.data, c->out.len}, {(void *)body, len}};
    return writev_all(c, iov, req->method == HTTP_HEAD || len == 0 ? 1 : 2);
}

int
gw_worker_http_error(struct gw_http_conn *c, struct gw_request *req, int status, const char *type,
                     const char *code, const char *param, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    /* A message quoting a long name is cut between characters: half of
     * one would make the answer invalid UTF-8, which JSON readers refuse. */
    size_t len = n < 0                     ? 0
                 : (size_t)n < sizeof(msg) ? (size_t)n
                                           : gw_utf8_whole(msg, sizeof(msg) - 1);

    struct json_object *err = json_object_new_object(), *o = json_object_new_object();
    json_object_object_add(err, "message", json_object_new_string_len(msg, (int)len));
    json_object_object_add(err, "type", json_object_new_string(type));
    json_object_object_add(err, "param", param ? json_object_new_string(param) : NULL);
    json_object_object_add(err, "code", code ? json_object_new_string(code) : NULL);
    json_object_object_add(o, "error", err);
    const char *body = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
    /* The body must outlive json_object_put: copy it into the request. */
    char *copy = gw_arena_strndup(req->arena, body, len);
    json_object_put(o);

    /* After a protocol error the stream position is unknown: close. */
    if (c->error != 0)
        req->keep_alive = false;
    const char *extra = NULL;
    if (status == 405 && req->allow != NULL)
        extra = gw_arena_printf(req->arena, "Allow: %s\r\n", req->allow);
    return gw_worker_http_respond(c, req, status, "application/json", extra, copy, len);
}

int
gw_worker_http_stream_begin(struct gw_http_conn *c, struct gw_request *req, int status,
                            const char *ctype, const char *extra)
{
    FILTERED(c, stream_begin(c, req, status, ctype, extra));
    /* HTTP/1.0 has no chunked coding: the end of the body is the close. */
    c->chunked = req->http_minor >= 1;
    if (!c->chunked)
        req->keep_alive = false;
    if (head_format(c, req, status, ctype, extra) != 0 ||
        gw_buf_printf(&c->out, "%s\r\n", c->chunked ? "Transfer-Encoding: chunked\r\n" : "") != 0)
        return GW_ENOMEM;
    c->response_open = true;
    struct iovec iov[1] = {{c->out.data, c->out.len}};
    return writev_all(c, iov, 1);
}

int
gw_worker_http_stream_write(struct gw_http_conn *c, const char *data, size_t len)
{
    char size[24];

    FILTERED(c, stream_write(c, data, len));
    if (len == 0)
        return 0;
    if (!c->chunked) {
        struct iovec iov[1] = {{(void *)data, len}};
        return writev_all(c, iov, 1);
    }
    int n = snprintf(size, sizeof(size), "%zx\r\n", len);
    /* One writev per chunk: size line, data and CRLF leave together. */
    struct iovec iov[3] = {{size, (size_t)n}, {(void *)data, len}, {(void *)"\r\n", 2}};
    return writev_all(c, iov, 3);
}

int
gw_worker_http_stream_end(struct gw_http_conn *c)
{
    c->sent_us = gw_wall_us(); /* the stream's last write */
    FILTERED(c, stream_end(c));
    c->response_open = false;
    if (!c->chunked)
        return 0;
    struct iovec iov[1] = {{(void *)"0\r\n\r\n", 5}};
    return writev_all(c, iov, 1);
}
