/*
 * h1.c - HTTP/1.1 to the plain-HTTP upstreams, spoken by the worker.
 *
 * Most of what a proxied request cost beyond nginx was libcurl's work per
 * transfer: a connection looked up in its cache and checked alive, the
 * URL parsed again, the request formatted a byte at a time, the status
 * line read with sscanf, thirty clock reads (tests/bench/README.md).  For
 * an upstream reached over plain HTTP - the self-hosted servers on the
 * network (vLLM, SGLang, TGI, Ollama), where the gateway's own cost per
 * request shows most - the worker writes the request in one sendmsg and
 * reads the answer with llhttp, the parser that reads its clients'
 * requests.  libcurl still resolves the name (asynchronously, cached) and
 * connects (its timeout, both address families); the socket is then the
 * worker's, kept open for the next request to the same origin while the
 * upstream keeps it alive.  TLS, proxies and streamed uploads stay with
 * libcurl's own transfers (upstream.c).
 *
 * The answer reaches the same callbacks as curl's would: each header line,
 * then the body, decoded from its chunks.  A kept connection is looked at
 * before it is used again (idle_take); one that the upstream drops with
 * the request unanswered gets the request once more on a new connection,
 * as curl does.
 */
#include <errno.h>
#include <llhttp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "worker/worker.h"

/* How long a connection is kept unused: curl's own CURLOPT_MAXAGE_CONN. */
#define IDLE_MAX_MS (118 * 1000)
/* A connection unused this long is looked at before it is used again
 * (idle_take); one used more recently is not, which saves a system call
 * on every request of a busy worker. */
#define PEEK_AFTER_MS 1000

/* One exchange on one connection. */
struct exchange {
    const struct gw_h1_request *r;
    llhttp_t parser;
    char line[1024]; /* the header line being put together (longer ones are cut) */
    size_t line_len;
    bool in_value;
    bool kept;      /* the connection served an earlier request */
    bool done;      /* the final answer is complete */
    bool cb_failed; /* a callback refused the bytes */
    bool unasked;   /* a 408 on a kept connection: not this request's answer */
};

bool
gw_worker_h1_serves(const char *url)
{
    if (strncmp(url, "http://", 7) != 0)
        return false;
    size_t n = strcspn(url + 7, "/?#");
    /* Credentials in the URL are curl's to send (Basic). */
    return n > 0 && n < GW_H1_ORIGIN_MAX && memchr(url + 7, '@', n) == NULL;
}

/* Close an upstream connection, out of the worker's park set first. */
static void
h1_close(int fd)
{
    gw_worker_fd_forget(fd);
    close(fd);
}

void
gw_worker_h1_close_idle(struct gw_transfer *t)
{
    for (size_t i = 0; i < t->nidle; i++)
        h1_close(t->idle[i].fd);
    t->nidle = 0;
}

/* Nothing to read on fd now: no byte, no end, no error. */
static bool
nothing_to_read(int fd)
{
    char b;

    return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 &&
           (errno == EAGAIN || errno == EWOULDBLOCK);
}

/*
 * A kept connection to origin, or -1.  Those kept too long are closed, and
 * so is one unused for PEEK_AFTER_MS with something to read: the upstream
 * closed it, or said something unasked (a 408 before closing).  curl looks
 * the same way before it reuses any connection; nginx watches its idle
 * ones in its event loop.  One used more recently goes unlooked-at: an
 * upstream that closed it anyway is found by the exchange (*silent), and
 * a 408 read on it is not taken for the answer (line_flush); either way
 * the request goes once more on a new connection.
 */
static int
idle_take(struct gw_transfer *t, const char *origin, size_t len, int64_t now)
{
    for (size_t i = t->nidle; i-- > 0;) {
        struct gw_h1_idle *c = &t->idle[i];
        bool stale = now - c->since_ms >= IDLE_MAX_MS;
        if (!stale && (strncmp(c->origin, origin, len) != 0 || c->origin[len] != '\0'))
            continue;
        int fd = c->fd;
        bool recent = now - c->since_ms < PEEK_AFTER_MS;
        *c = t->idle[--t->nidle];
        if (!stale && (recent || nothing_to_read(fd)))
            return fd;
        h1_close(fd);
    }
    return -1;
}

/* Keep fd open for the next request to origin, in place of the longest
 * unused when all places are taken. */
static void
idle_put(struct gw_transfer *t, const char *origin, size_t len, int fd, int64_t now)
{
    struct gw_h1_idle *c = &t->idle[t->nidle];

    if (t->nidle == GW_H1_IDLE_MAX) {
        c = &t->idle[0];
        for (size_t i = 1; i < t->nidle; i++)
            if (t->idle[i].since_ms < c->since_ms)
                c = &t->idle[i];
        h1_close(c->fd);
    } else {
        t->nidle++;
    }
    c->fd = fd;
    c->since_ms = now;
    memcpy(c->origin, origin, len);
    c->origin[len] = '\0';
}

/* Connect to origin with libcurl; *fd the socket, the caller's. */
static CURLcode
h1_connect(struct gw_transfer *t, const char *origin, size_t len,
           const struct gw_transfer_clock *clock, char *errbuf, bool *timed_out, int *fd)
{
    char url[GW_H1_ORIGIN_MAX + 16];

    if (t->connect == NULL) {
        if ((t->connect = curl_easy_init()) == NULL)
            return CURLE_OUT_OF_MEMORY;
        curl_easy_setopt(t->connect, CURLOPT_CONNECT_ONLY, 1L);
        curl_easy_setopt(t->connect, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(t->connect, CURLOPT_TCP_NODELAY, 1L);
        curl_easy_setopt(t->connect, CURLOPT_TCP_KEEPALIVE, 1L);
        /* Only used when no proxy is in the environment (upstream.c). */
        curl_easy_setopt(t->connect, CURLOPT_PROXY, "");
        curl_easy_setopt(t->connect, CURLOPT_NOPROXY, "");
    }
    snprintf(url, sizeof(url), "http://%.*s/", (int)len, origin);
    curl_easy_setopt(t->connect, CURLOPT_URL, url);
    curl_easy_setopt(t->connect, CURLOPT_CONNECTTIMEOUT_MS, clock->to->connect_ms);
    curl_easy_setopt(t->connect, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode cc = gw_worker_transfer_connect(t, t->connect, clock, timed_out, fd);
    curl_easy_setopt(t->connect, CURLOPT_ERRORBUFFER, NULL); /* errbuf is the caller's */
    return cc;
}

/* ------------------------------------------------------------- answer */

static struct exchange *
exchange_of(llhttp_t *p)
{
    return p->data;
}

/* The header line put together so far goes to the callback: only the
 * final answer's (an interim 1xx answer's headers are not its).  A 408 on
 * a kept connection goes nowhere: it is the upstream's notice that it
 * closes a connection it found idle, sent before the request reached it
 * (RFC 9110, 15.5.9, lets the request be repeated on a new one). */
static int
line_flush(struct exchange *x)
{
    if (x->kept && x->parser.status_code == 408) {
        x->unasked = true;
        return -1;
    }
    if (x->line_len == 0)
        return 0;
    size_t n = x->line_len;
    x->line[n++] = '\r';
    x->line[n++] = '\n';
    x->line_len = 0;
    x->in_value = false;
    if (x->parser.status_code < 200)
        return 0;
    return x->r->on_header(x->line, 1, n, x->r->ctx) == n ? 0 : -1;
}

static void
line_add(struct exchange *x, const char *at, size_t len)
{
    size_t room = sizeof(x->line) - 2 - x->line_len; /* the CRLF */

    if (len > room)
        len = room;
    memcpy(x->line + x->line_len, at, len);
    x->line_len += len;
}

static int
on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct exchange *x = exchange_of(p);

    if (x->in_value && line_flush(x) != 0) {
        x->cb_failed = true;
        return -1;
    }
    line_add(x, at, len);
    return 0;
}

static int
on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct exchange *x = exchange_of(p);

    if (!x->in_value) {
        line_add(x, ": ", 2);
        x->in_value = true;
    }
    line_add(x, at, len);
    return 0;
}

static int
on_headers_complete(llhttp_t *p)
{
    struct exchange *x = exchange_of(p);

    if (line_flush(x) != 0) {
        x->cb_failed = true;
        return -1;
    }
    if (p->status_code >= 200)
        *x->r->status = p->status_code;
    return 0;
}

static int
on_body(llhttp_t *p, const char *at, size_t len)
{
    struct exchange *x = exchange_of(p);

    if (x->r->on_data((char *)at, 1, len, x->r->ctx) != len) {
        x->cb_failed = true;
        return -1;
    }
    return 0;
}

static int
on_message_complete(llhttp_t *p)
{
    struct exchange *x = exchange_of(p);

    /* An interim answer (100 Continue, 103 Early Hints): the final one
     * follows on the same connection. */
    if (p->status_code < 200)
        return 0;
    x->done = true;
    return HPE_PAUSED; /* bytes past the answer are not ours to read */
}

static const llhttp_settings_t answer_settings = {
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ----------------------------------------------------------- exchange */

/* Wait for fd to be ready for events (*revents: what it is ready for);
 * CURLE_OK, or the timeout's code. */
static CURLcode
wait_for(int fd, short events, short *revents, const struct gw_transfer_clock *clock,
         int64_t deadline_ms, char *errbuf, bool *timed_out)
{
    for (;;) {
        long left = gw_worker_transfer_wait_ms(clock, gw_now_ms(), deadline_ms, timed_out);
        if (left == 0) {
            if (!*timed_out)
                snprintf(errbuf, CURL_ERROR_SIZE, "Operation timed out after %ld milliseconds",
                         clock->to->total_ms);
            return CURLE_OPERATION_TIMEDOUT;
        }
        int n = gw_worker_wait_upstream(fd, events, left);
        if (n > 0) {
            *revents = (short)n;
            return CURLE_OK;
        }
        if (n < 0 && errno != EINTR) {
            snprintf(errbuf, CURL_ERROR_SIZE, "poll: %s", strerror(errno));
            return CURLE_RECV_ERROR;
        }
    }
}

/*
 * The request: its line and headers in head, then the body.  CURLE_SEND_
 * ERROR when the upstream stopped taking it (*send_errno why, 0 when it
 * began to answer or closed first, as a server refusing a large body
 * does): its answer may be there to read.
 */
static CURLcode
request_send(int fd, struct iovec *iov, int iovcnt, const struct gw_transfer_clock *clock,
             int64_t deadline_ms, char *errbuf, bool *timed_out, int *send_errno)
{
    while (iovcnt > 0) {
        struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
        ssize_t n = sendmsg(fd, &m, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                *send_errno = errno;
                return CURLE_SEND_ERROR;
            }
            short ready = 0;
            CURLcode cc =
                wait_for(fd, POLLOUT | POLLIN, &ready, clock, deadline_ms, errbuf, timed_out);
            if (cc != CURLE_OK)
                return cc;
            /* Input reported now may be the last answer's, taken by its
             * read since (gw_worker_wait_upstream reports edges). */
            if ((ready & (POLLHUP | POLLERR)) || ((ready & POLLIN) && !nothing_to_read(fd))) {
                *send_errno = 0;
                return CURLE_SEND_ERROR;
            }
            continue;
        }
        gw_worker_iov_consume(&iov, &iovcnt, (size_t)n);
    }
    return CURLE_OK;
}

static CURLcode
send_failure(char *errbuf, int send_errno)
{
    snprintf(errbuf, CURL_ERROR_SIZE, "Send failure: %s",
             send_errno != 0 ? strerror(send_errno) : "the upstream closed the connection");
    return CURLE_SEND_ERROR;
}

/*
 * Send the request on fd and read its answer, also when the upstream
 * answers before it took the whole request.  *silent: the upstream closed
 * or reset the connection without a byte of answer (a kept connection it
 * had closed meanwhile); *keep: fd may serve another.
 */
static CURLcode
exchange_run(struct gw_transfer *t, struct exchange *x, int fd, bool kept, struct iovec *iov,
             int iovcnt, const struct gw_transfer_clock *clock, int64_t deadline_ms, char *errbuf,
             bool *timed_out, bool *silent, bool *keep)
{
    char *buf = t->rbuf;
    int send_errno = 0;
    short ready;

    *silent = *keep = false;
    *x = (struct exchange){.r = x->r, .kept = kept};
    llhttp_init(&x->parser, HTTP_RESPONSE, &answer_settings);
    x->parser.data = x;
    CURLcode cc = request_send(fd, iov, iovcnt, clock, deadline_ms, errbuf, timed_out, &send_errno);
    if (cc != CURLE_OK && cc != CURLE_SEND_ERROR)
        return cc;
    /* Cut: whatever the upstream said instead is its answer; with nothing
     * said, the send's failure is. */
    bool cut = cc == CURLE_SEND_ERROR, got = false;
    bool drained = !cut; /* the answer cannot be there yet */
    for (;;) {
        if (drained &&
            (cc = wait_for(fd, POLLIN, &ready, clock, deadline_ms, errbuf, timed_out)) != 0)
            return cc;
        ssize_t n = recv(fd, buf, GW_H1_READ_SIZE, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            drained = errno == EAGAIN || errno == EWOULDBLOCK;
            if (drained)
                continue;
            *silent = !got;
            if (cut && !got)
                return send_failure(errbuf, send_errno);
            snprintf(errbuf, CURL_ERROR_SIZE, "Recv failure: %s", strerror(errno));
            return CURLE_RECV_ERROR;
        }
        if (n == 0) {
            /* The end of an answer that runs until the connection closes. */
            llhttp_finish(&x->parser);
            if (x->done)
                return CURLE_OK;
            *silent = !got;
            if (cut && !got)
                return send_failure(errbuf, send_errno);
            snprintf(errbuf, CURL_ERROR_SIZE, "%s",
                     got ? "transfer closed with outstanding read data remaining"
                         : "Empty reply from server");
            return got ? CURLE_PARTIAL_FILE : CURLE_GOT_NOTHING;
        }
        got = true;
        *clock->last_io_ms = gw_now_ms(); /* the upstream's last bytes: once a read */
        /* A short read took what was there: wait before the next. */
        drained = n < GW_H1_READ_SIZE;
        size_t used;
        llhttp_errno_t e = gw_http_parse(&x->parser, buf, (size_t)n, &used);
        if (x->done) {
            *keep = !cut && used == (size_t)n && llhttp_should_keep_alive(&x->parser);
            return CURLE_OK;
        }
        if (x->unasked) {
            *silent = true;
            snprintf(errbuf, CURL_ERROR_SIZE, "the upstream sent 408 on a kept connection");
            return CURLE_RECV_ERROR;
        }
        if (x->cb_failed)
            return CURLE_WRITE_ERROR; /* the callback's io says why */
        if (e != HPE_OK || x->parser.upgrade) {
            const char *why = llhttp_get_error_reason(&x->parser);
            snprintf(errbuf, CURL_ERROR_SIZE, "the answer is not HTTP/1.1 (%s)",
                     x->parser.upgrade ? "a protocol upgrade"
                     : why             ? why
                                       : llhttp_errno_name(e));
            return CURLE_WEIRD_SERVER_REPLY;
        }
    }
}

static char *
put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return o + n;
}

#define PUT(o, lit) put((o), (lit), sizeof(lit) - 1)

/* The request line and headers, in r's arena; NULL when out of memory.
 * Put together by copying: printf's cost showed on every request. */
static char *
head_build(const struct gw_h1_request *r, const char *origin, size_t olen, size_t *len)
{
    const char *path = r->url + 7 + olen;
    size_t plen = strcspn(path, "#");
    bool slash = path[0] != '/';
    char clen[GW_U64_TEXT_MAX];
    size_t clen_len = r->get ? 0 : gw_u64_text(r->body_len, clen);
    size_t size;

    size = sizeof("POST / HTTP/1.1\r\nHost: \r\nContent-Length: \r\n\r\n") + plen + olen + clen_len;
    for (const struct curl_slist *h = r->headers; h != NULL; h = h->next)
        size += strlen(h->data) + 2;
    char *head = gw_arena_alloc(r->arena, size), *o = head;
    if (head == NULL)
        return NULL;
    o = r->get ? PUT(o, "GET ") : PUT(o, "POST ");
    if (slash)
        *o++ = '/';
    o = put(o, path, plen);
    o = PUT(o, " HTTP/1.1\r\nHost: ");
    o = put(o, origin, olen);
    o = PUT(o, "\r\n");
    /* curl's header conventions, which the adapters follow: "Name:" sends
     * nothing (it removes one of curl's own), "Name;" an empty value. */
    for (const struct curl_slist *h = r->headers; h != NULL; h = h->next) {
        const char *colon = strchr(h->data, ':');
        size_t n = strlen(h->data);
        if (colon != NULL && colon[1 + strspn(colon + 1, " \t")] == '\0')
            continue;
        o = put(o, h->data, n);
        if (colon == NULL && n > 0 && h->data[n - 1] == ';')
            o[-1] = ':';
        o = PUT(o, "\r\n");
    }
    if (!r->get) {
        o = PUT(o, "Content-Length: ");
        o = put(o, clen, clen_len);
        o = PUT(o, "\r\n");
    }
    o = PUT(o, "\r\n");
    *len = (size_t)(o - head);
    return head;
}

CURLcode
gw_worker_h1_run(struct gw_transfer *t, const struct gw_h1_request *r,
                 const struct gw_transfer_clock *clock, char *errbuf, bool *timed_out)
{
    const char *origin = r->url + 7;
    size_t olen = strcspn(origin, "/?#"), head_len;
    int64_t now = gw_now_ms(),
            deadline_ms = clock->to->total_ms > 0 ? now + clock->to->total_ms : -1;
    struct exchange x = {.r = r};
    CURLcode cc = CURLE_OK;

    *timed_out = false;
    char *head = head_build(r, origin, olen, &head_len);
    if (head == NULL || (t->rbuf == NULL && (t->rbuf = malloc(GW_H1_READ_SIZE)) == NULL))
        return CURLE_OUT_OF_MEMORY;
    /* A kept connection first; once more on a new one if the upstream
     * dropped it with the request unanswered. */
    for (int tries = 0; tries < 2; tries++) {
        int fd = tries == 0 ? idle_take(t, origin, olen, now) : -1;
        bool kept = fd >= 0, silent, keep;
        if (!kept) {
            cc = h1_connect(t, origin, olen, clock, errbuf, timed_out, &fd);
            if (cc != CURLE_OK)
                break;
        }
        struct iovec iov[2] = {{.iov_base = head, .iov_len = head_len},
                               {.iov_base = (void *)r->body, .iov_len = r->body_len}};
        cc = exchange_run(t, &x, fd, kept, iov, r->body_len > 0 ? 2 : 1, clock, deadline_ms, errbuf,
                          timed_out, &silent, &keep);
        if (cc == CURLE_OK && keep)
            idle_put(t, origin, olen, fd, *clock->last_io_ms); /* idle since its last read */
        else
            h1_close(fd);
        if (cc == CURLE_OK || !kept || !silent)
            break;
        errbuf[0] = '\0';
    }
    return cc;
}
