/*
 * sse_client.c - the benchmark's streaming client, and a timestamping
 * upstream ("tap") for it.
 *
 *   sse_client stream -p PORT [-k KEY] [-P PATH] [-m MODEL] -c CHUNKS -d DELAY_MS -n STREAMS
 *       STREAMS streams one after the other on one keep-alive connection
 *       (after one warm-up stream that is not reported).  One JSON line per
 *       stream on stdout:
 *         {"status":200,"ok":true,"head_us":H,"reads":R,"batched":B,"tap_batched":TB,
 *          "events_us":[...],"fwd_us":[...]}
 *       head_us: from the write of the request to the first byte of the
 *       answer; events_us[i]: to the read that completed event i; batched:
 *       events that arrived in the same read(2) as the event before them,
 *       i.e. were held back and sent together; tap_batched: of those, the
 *       ones a tap itself wrote within 1 ms of the event before (a late
 *       tap, not a proxy that held one back: not counted in batched);
 *       fwd_us (only from a tap):
 *       for each event stamped by the tap, its arrival minus the moment the
 *       tap wrote it, i.e. how long the path in between took to forward it.
 *
 *   sse_client conc -p PORT [-k KEY] [-P PATH] [-m MODEL] -c CHUNKS -d DELAY_MS -n N -T TIMEOUT_S
 *       N streams at once, each on its own connection, all opened at the
 *       start.  One JSON object on stdout: how many completed (status 200,
 *       every event, "data: [DONE]", the end of the chunked body), the
 *       failures by kind, and the spread of first-byte and total times.
 *
 *   sse_client rate -p PORT [-k KEY] [-P PATH] [-m MODEL] -n CONNS -r RPS -S SECONDS [-W WARM_S]
 *       Small non-streaming chat completions (chat.lua's) at a fixed rate
 *       of RPS a second on CONNS keep-alive connections, an open loop:
 *       latency from when a request was due, not when it could be sent.
 *       One JSON object on stdout, shaped like chat.lua's, with
 *       "offered_rps" and "late" (requests that waited over 1 ms for a
 *       free connection).
 *
 *   sse_client tap [-p PORT]
 *       An upstream that answers every request with a stream in OpenAI's
 *       shape (x-mock-chunks content events, the finish event, the usage
 *       event, [DONE]), event i written at start + i * x-mock-chunk-delay-ms
 *       on an absolute clock, each carrying "t": the CLOCK_MONOTONIC
 *       nanoseconds at which it was written.  Prints "listening PORT".
 *       One thread per connection; it serves until killed.
 *
 * Clients talk to 127.0.0.1:PORT, POST PATH (default /v1/chat/completions),
 * with "Authorization: Bearer KEY", model MODEL (default bench) and the
 * mock's x-mock-chunks and x-mock-chunk-delay-ms headers, and ask for the
 * usage chunk (stream_options.include_usage), so that every target sends
 * the same events: CHUNKS content events, the finish event, the usage
 * event, [DONE].
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 4096
#define RBUF 65536

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static char request[2048];
static size_t request_len;

/* request[]: POST PATH with the key, EXTRA header lines, and the JSON body
 * of the printf-style FMT with the model name. */
static void
request_put(int port, const char *key, const char *path, const char *extra, const char *fmt,
            const char *model)
{
    char body[512];
    int bl = snprintf(body, sizeof(body), fmt, model);
    if (bl < 0 || (size_t)bl >= sizeof(body)) {
        fprintf(stderr, "sse_client: model name too long\n");
        exit(2);
    }
    int n = snprintf(request, sizeof(request),
                     "POST %s HTTP/1.1\r\n"
                     "Host: 127.0.0.1:%d\r\n"
                     "Authorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\n"
                     "%s"
                     "Content-Length: %zu\r\n"
                     "\r\n%s",
                     path, port, key, extra, (size_t)bl, body);
    if (n < 0 || (size_t)n >= sizeof(request)) {
        fprintf(stderr, "sse_client: request too long\n");
        exit(2);
    }
    request_len = (size_t)n;
}

/* The stream of CHUNKS events DELAY_MS apart, asked of the mock. */
static void
request_build(int port, const char *key, const char *path, const char *model, int chunks,
              int delay_ms)
{
    char extra[128];

    snprintf(extra, sizeof(extra),
             "Accept: text/event-stream\r\nx-mock-chunks: %d\r\nx-mock-chunk-delay-ms: %d\r\n",
             chunks, delay_ms);
    request_put(port, key, path, extra,
                "{\"model\":\"%s\",\"stream\":true,\"stream_options\":{\"include_usage\":true},"
                "\"messages\":[{\"role\":\"user\",\"content\":\"Say hello to the benchmark\"}]}",
                model);
}

/* ------------------------------------------------------------ response */

enum rstate { R_HEAD, R_SIZE, R_DATA, R_DATA_CR, R_TRAILER, R_RAW, R_BODY, R_DONE };

/* One response being read: HTTP head, chunked framing, SSE events. */
struct resp {
    enum rstate st;
    char head[8192];
    size_t head_len;
    int status;
    bool chunked;
    size_t chunk_left;
    size_t body_left; /* R_BODY: what Content-Length says is still to come */
    char line[64];
    size_t line_len;
    /* SSE */
    bool nl;       /* the last body byte was '\n' */
    char ev[1024]; /* the first bytes of the event being read */
    size_t ev_len;
    bool done_seen; /* "data: [DONE]" */
    int events;
    int batched;
    int tap_batched;
    int64_t last_stamp; /* the tap's stamp of the event before, or 0 */
    int reads;
    int64_t head_ns;
    int64_t *ev_ns;  /* MAX_EVENTS arrival times, or NULL */
    int64_t *fwd_ns; /* MAX_EVENTS forwarding times of tap-stamped events, or NULL */
    int nfwd;
    bool bad; /* framing that makes no sense */
};

static void
resp_reset(struct resp *r, int64_t *ev_ns, int64_t *fwd_ns)
{
    memset(r, 0, sizeof(*r));
    r->ev_ns = ev_ns;
    r->fwd_ns = fwd_ns;
}

/* The tap's stamp, ,"t":NANOSECONDS} at the end of the event's JSON, or 0. */
static int64_t
event_stamp(const char *ev, size_t len)
{
    const char *t = NULL;

    for (const char *p = memmem(ev, len, ",\"t\":", 5); p != NULL;
         p = memmem(p + 1, len - (size_t)(p + 1 - ev), ",\"t\":", 5))
        t = p;
    return t != NULL ? strtoll(t + 5, NULL, 10) : 0;
}

/* Body bytes: find the blank lines that end events. */
static void
sse_feed(struct resp *r, const char *p, size_t n, int64_t t, int *in_read)
{
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\r')
            continue;
        if (c == '\n' && r->nl) {
            if (r->ev_len >= 12 && memcmp(r->ev, "data: [DONE]", 12) == 0)
                r->done_seen = true;
            int64_t stamp = r->fwd_ns != NULL ? event_stamp(r->ev, r->ev_len) : 0;
            if (stamp > 0 && r->nfwd < MAX_EVENTS)
                r->fwd_ns[r->nfwd++] = t - stamp;
            if (r->ev_ns != NULL && r->events < MAX_EVENTS)
                r->ev_ns[r->events] = t;
            r->events++;
            if ((*in_read)++ > 0) {
                if (stamp > 0 && r->last_stamp > 0 && stamp - r->last_stamp < 1000000)
                    r->tap_batched++;
                else
                    r->batched++;
            }
            r->last_stamp = stamp;
            r->ev_len = 0;
            r->nl = false;
            continue;
        }
        r->nl = c == '\n';
        if (r->ev_len < sizeof(r->ev))
            r->ev[r->ev_len++] = c;
    }
}

static void
head_parse(struct resp *r)
{
    r->head[r->head_len] = '\0';
    if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1)
        r->bad = true;
    if (r->status != 200) {
        r->st = R_DONE; /* only the status matters: an answer the benchmark did not want */
        return;
    }
    long length = -1;
    for (char *l = strstr(r->head, "\r\n"); l != NULL; l = strstr(l + 2, "\r\n")) {
        if (strncasecmp(l + 2, "transfer-encoding:", 18) == 0 && strcasestr(l + 2, "chunked"))
            r->chunked = true;
        if (strncasecmp(l + 2, "content-length:", 15) == 0)
            length = strtol(l + 17, NULL, 10);
    }
    if (r->chunked) {
        r->st = R_SIZE;
    } else if (length >= 0) {
        r->body_left = (size_t)length;
        r->st = length > 0 ? R_BODY : R_DONE;
    } else {
        r->st = R_RAW;
    }
}

/*
 * Feed the bytes of one read.  Returns true when the response is complete
 * (the end of the chunked body).
 */
static bool
resp_feed(struct resp *r, const char *p, size_t n, int64_t t)
{
    int in_read = 0;

    r->reads++;
    while (n > 0 && r->st != R_DONE) {
        switch (r->st) {
        case R_HEAD: {
            if (r->head_len == 0)
                r->head_ns = t;
            size_t k = 0;
            while (k < n && r->st == R_HEAD) {
                if (r->head_len + 1 >= sizeof(r->head)) {
                    r->bad = true;
                    return true;
                }
                r->head[r->head_len++] = p[k++];
                if (r->head_len >= 4 && memcmp(r->head + r->head_len - 4, "\r\n\r\n", 4) == 0)
                    head_parse(r);
            }
            p += k;
            n -= k;
            break;
        }
        case R_SIZE:
        case R_TRAILER: {
            char c = *p++;
            n--;
            if (c == '\n') {
                r->line[r->line_len] = '\0';
                if (r->st == R_TRAILER) {
                    if (r->line_len == 0)
                        r->st = R_DONE;
                } else {
                    char *end;
                    r->chunk_left = strtoul(r->line, &end, 16);
                    if (end == r->line)
                        r->bad = true;
                    r->st = r->chunk_left == 0 ? R_TRAILER : R_DATA;
                }
                r->line_len = 0;
            } else if (c != '\r' && r->line_len + 1 < sizeof(r->line)) {
                r->line[r->line_len++] = c;
            }
            break;
        }
        case R_DATA: {
            size_t k = n < r->chunk_left ? n : r->chunk_left;
            sse_feed(r, p, k, t, &in_read);
            p += k;
            n -= k;
            r->chunk_left -= k;
            if (r->chunk_left == 0)
                r->st = R_DATA_CR;
            break;
        }
        case R_DATA_CR:
            if (*p == '\n')
                r->st = R_SIZE;
            p++;
            n--;
            break;
        case R_RAW:
            sse_feed(r, p, n, t, &in_read);
            n = 0;
            break;
        case R_BODY: {
            size_t k = n < r->body_left ? n : r->body_left;
            sse_feed(r, p, k, t, &in_read);
            p += k;
            n -= k;
            if ((r->body_left -= k) == 0)
                r->st = R_DONE;
            break;
        }
        case R_DONE: break;
        }
    }
    return r->st == R_DONE || r->bad;
}

static int
connect_to(int port, bool nonblock)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0), 0);

    if (fd < 0)
        return -1;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    return fd;
}

static int
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* -------------------------------------------------------------- stream */

static int
mode_stream(int port, int streams)
{
    static int64_t ev_ns[MAX_EVENTS], fwd_ns[MAX_EVENTS];
    static char buf[RBUF];
    struct resp r;
    int fd = -1, failures = 0;

    for (int s = -1; s < streams; s++) {
        if (fd < 0 && (fd = connect_to(port, false)) < 0) {
            fprintf(stderr, "sse_client: connect: %s\n", strerror(errno));
            return 1;
        }
        resp_reset(&r, ev_ns, fwd_ns);
        int64_t t0 = now_ns();
        if (write_all(fd, request, request_len) != 0) {
            close(fd);
            fd = -1;
            failures++;
            if (failures > 3)
                return 1;
            s--;
            continue;
        }
        bool complete = false;
        for (;;) {
            ssize_t n = read(fd, buf, sizeof(buf));
            int64_t t = now_ns();
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            if ((complete = resp_feed(&r, buf, (size_t)n, t)))
                break;
        }
        bool ok = complete && !r.bad && r.status == 200 && r.done_seen;
        if (!ok) {
            close(fd);
            fd = -1;
        }
        if (s < 0)
            continue; /* warm-up */
        printf("{\"status\":%d,\"ok\":%s,\"head_us\":%.1f,\"reads\":%d,\"batched\":%d,"
               "\"tap_batched\":%d,\"events_us\":[",
               r.status, ok ? "true" : "false", (double)(r.head_ns - t0) / 1e3, r.reads, r.batched,
               r.tap_batched);
        for (int i = 0; i < r.events && i < MAX_EVENTS; i++)
            printf("%s%.1f", i ? "," : "", (double)(ev_ns[i] - t0) / 1e3);
        printf("],\"fwd_us\":[");
        for (int i = 0; i < r.nfwd; i++)
            printf("%s%.1f", i ? "," : "", (double)fwd_ns[i] / 1e3);
        printf("]}\n");
        fflush(stdout);
    }
    if (fd >= 0)
        close(fd);
    return 0;
}

/* ---------------------------------------------------------------- conc */

enum cerr { E_NONE, E_CONNECT, E_WRITE, E_RESET, E_EOF, E_STATUS, E_SHORT, E_TIMEOUT, E_NKINDS };
static const char *const cerr_names[E_NKINDS] = {"none", "connect", "write", "reset",
                                                 "eof",  "status",  "short", "timeout"};

struct conn {
    int fd;
    bool sent;
    bool finished;
    enum cerr err;
    int64_t first_ns, end_ns;
    struct resp r;
};

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double
pct_ms(int64_t *v, int n, double p)
{
    if (n == 0)
        return -1;
    int i = (int)(p / 100.0 * (n - 1) + 0.5);
    return (double)v[i] / 1e6;
}

static int
mode_conc(int port, int n, int chunks, int timeout_s)
{
    struct conn *c = calloc((size_t)n, sizeof(*c));
    static char buf[RBUF];
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int open_n = 0, expect = chunks + 3;
    int64_t t0 = now_ns(), deadline = t0 + (int64_t)timeout_s * 1000000000;

    if (c == NULL || ep < 0)
        return 1;
    for (int i = 0; i < n; i++) {
        resp_reset(&c[i].r, NULL, NULL);
        c[i].fd = connect_to(port, true);
        if (c[i].fd < 0) {
            c[i].err = E_CONNECT;
            c[i].finished = true;
            continue;
        }
        struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP,
                                 .data.u32 = (uint32_t)i};
        epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
        open_n++;
    }
    int64_t opened_ns = now_ns();
    struct epoll_event evs[256];
    while (open_n > 0) {
        int64_t now = now_ns();
        if (now >= deadline)
            break;
        int k = epoll_wait(ep, evs, 256, (int)((deadline - now) / 1000000) + 1);
        if (k < 0 && errno == EINTR)
            continue;
        for (int j = 0; j < k; j++) {
            struct conn *x = &c[evs[j].data.u32];
            if (x->finished)
                continue;
            if (!x->sent && (evs[j].events & (EPOLLOUT | EPOLLERR))) {
                int soerr = 0;
                socklen_t sl = sizeof(soerr);
                getsockopt(x->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
                if (soerr != 0) {
                    x->err = E_CONNECT;
                } else if (write_all(x->fd, request, request_len) != 0) {
                    x->err = errno == ECONNRESET ? E_RESET : E_WRITE;
                } else {
                    x->sent = true;
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP,
                                             .data.u32 = evs[j].data.u32};
                    epoll_ctl(ep, EPOLL_CTL_MOD, x->fd, &ev);
                    continue;
                }
            } else if (x->sent) {
                for (;;) {
                    ssize_t r = read(x->fd, buf, sizeof(buf));
                    if (r < 0 && errno == EINTR)
                        continue;
                    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                        break;
                    int64_t t = now_ns();
                    if (r < 0) {
                        x->err = E_RESET;
                        break;
                    }
                    if (r == 0) {
                        x->err = x->r.st == R_HEAD && x->r.head_len == 0 ? E_EOF : E_SHORT;
                        break;
                    }
                    if (x->first_ns == 0)
                        x->first_ns = t;
                    if (resp_feed(&x->r, buf, (size_t)r, t)) {
                        x->end_ns = t;
                        if (x->r.bad || x->r.status != 200)
                            x->err = E_STATUS;
                        else if (!x->r.done_seen || x->r.events != expect)
                            x->err = E_SHORT;
                        x->finished = true;
                        break;
                    }
                }
                if (!x->finished && x->err == E_NONE)
                    continue;
            } else {
                continue;
            }
            x->finished = true;
            epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
            close(x->fd);
            x->fd = -1;
            open_n--;
        }
    }

    int counts[E_NKINDS] = {0};
    int64_t *dur = calloc((size_t)n, sizeof(int64_t)), *fb = calloc((size_t)n, sizeof(int64_t));
    int ndur = 0, nfb = 0, soon = 0;
    for (int i = 0; i < n; i++) {
        if (!c[i].finished)
            c[i].err = E_TIMEOUT;
        counts[c[i].err]++;
        if (c[i].first_ns > 0) {
            fb[nfb++] = c[i].first_ns - t0;
            /* Served at once: its first byte came within a second. */
            if (c[i].first_ns - t0 < 1000000000)
                soon++;
        }
        if (c[i].err == E_NONE)
            dur[ndur++] = c[i].end_ns - t0;
        if (c[i].fd >= 0)
            close(c[i].fd);
    }
    qsort(dur, (size_t)ndur, sizeof(int64_t), cmp_i64);
    qsort(fb, (size_t)nfb, sizeof(int64_t), cmp_i64);
    printf("{\"n\":%d,\"ok\":%d,\"first_byte_within_1s\":%d,\"open_ms\":%.1f,\"errors\":{", n,
           counts[E_NONE], soon, (double)(opened_ns - t0) / 1e6);
    bool first = true;
    for (int e = 1; e < E_NKINDS; e++) {
        if (counts[e] == 0)
            continue;
        printf("%s\"%s\":%d", first ? "" : ",", cerr_names[e], counts[e]);
        first = false;
    }
    printf("},\"first_byte_ms\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f},"
           "\"done_ms\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}}\n",
           pct_ms(fb, nfb, 50), pct_ms(fb, nfb, 99), pct_ms(fb, nfb, 100), pct_ms(dur, ndur, 50),
           pct_ms(dur, ndur, 99), pct_ms(dur, ndur, 100));
    free(dur);
    free(fb);
    free(c);
    close(ep);
    return 0;
}

/* ---------------------------------------------------------------- rate */

/* The small non-streaming chat completion of chat.lua, in request[]. */
static void
chat_build(int port, const char *key, const char *path, const char *model)
{
    request_put(port, key, path, "x-mock-stamp: 1\r\n",
                "{\"model\":\"%s\",\"messages\":[{\"role\":\"system\",\"content\":\"You are "
                "terse.\"},{\"role\":\"user\",\"content\":\"Say hello to the benchmark\"}],"
                "\"max_tokens\":16}",
                model);
}

struct rconn {
    int fd;
    int64_t due;  /* when its request was due, 0 while idle */
    int64_t sent; /* when its request was written */
    struct resp r;
    char tail[96]; /* the answer's last bytes, where the mock's stamp is */
    size_t tail_len;
};

/* Keep the last sizeof(x->tail) bytes of what x has read. */
static void
tail_keep(struct rconn *x, const char *p, size_t n)
{
    if (n >= sizeof(x->tail)) {
        memcpy(x->tail, p + n - sizeof(x->tail), sizeof(x->tail));
        x->tail_len = sizeof(x->tail);
        return;
    }
    size_t keep = x->tail_len + n > sizeof(x->tail) ? sizeof(x->tail) - n : x->tail_len;
    memmove(x->tail, x->tail + x->tail_len - keep, keep);
    memcpy(x->tail + keep, p, n);
    x->tail_len = keep + n;
}

/*
 * The time x's request spent outside the mock: from just before its write
 * to its answer's last byte (at t), less the mock's own time between
 * reading it and writing the answer ("x_mock_us":[READ,WRITE],
 * x-mock-stamp), which goes to *up.  -1 when the answer carries no stamp.
 */
static int64_t
path_ns(const struct rconn *x, int64_t t, int64_t *up)
{
    static const char key[] = "\"x_mock_us\":[";
    char s[sizeof(x->tail) + 1];
    long long in, out;

    memcpy(s, x->tail, x->tail_len);
    s[x->tail_len] = '\0';
    const char *at = strstr(s, key);
    if (at == NULL || sscanf(at + sizeof(key) - 1, "%lld,%lld", &in, &out) != 2 || out < in)
        return -1;
    /* The stamps are whole microseconds: never below 0 for that. */
    *up = (out - in) * 1000;
    int64_t ns = t - x->sent - *up;
    return ns > 0 ? ns : 0;
}

/* Open connection i, level-triggered in ep; -1 when it cannot. */
static int
rate_open(int ep, struct rconn *c, int i, int port)
{
    c[i].fd = connect_to(port, false);
    if (c[i].fd < 0)
        return -1;
    fcntl(c[i].fd, F_SETFL, fcntl(c[i].fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    return epoll_ctl(ep, EPOLL_CTL_ADD, c[i].fd, &ev);
}

/*
 * Requests at a fixed rate, whatever the answers do (an open loop): request
 * k is due at start + k / RPS and goes out on the first idle one of CONNS
 * keep-alive connections, at once or, when all are busy, as soon as one is
 * free.  Its latency runs from when it was due to its answer's last byte,
 * so time spent waiting for a connection counts (no coordinated omission:
 * a stall of the server shows in every request it held up, not only in the
 * one it stalled).  Requests due in the first WARM_S seconds are not
 * counted.  One JSON object on stdout, shaped like chat.lua's, with
 * "path_us": the spread of path_ns() (what the request spent outside the
 * mock: the client's, the network's and any proxy's share),
 * "upstream_us": the spread of the mock's own time, and "unstamped":
 * answers without the mock's stamp.
 */
static int
mode_rate(int port, int conns, int rps, int secs, int warm_s)
{
    enum { E_CONN, E_READ, E_WRITE, E_STATUS, E_TIMEOUT, E_N };
    struct rconn *c = calloc((size_t)conns, sizeof(*c));
    int *idle = calloc((size_t)conns, sizeof(int)), nidle = 0;
    int64_t interval = 1000000000 / rps, counted_from, stop_at;
    int64_t cap = (int64_t)rps * (secs + 1) + 16, nlat = 0, sum = 0;
    int64_t *lat = calloc((size_t)cap, sizeof(int64_t));
    int64_t *path = calloc((size_t)cap, sizeof(int64_t)), npath = 0, unstamped = 0;
    int64_t *up = calloc((size_t)cap, sizeof(int64_t));
    int64_t due_n = 0, sent_n = 0, late = 0, errs[E_N] = {0};
    int ep = epoll_create1(EPOLL_CLOEXEC), tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    static char buf[RBUF];

    if (c == NULL || idle == NULL || lat == NULL || path == NULL || up == NULL || ep < 0 || tfd < 0)
        return 1;
    for (int i = 0; i < conns; i++) {
        if (rate_open(ep, c, i, port) != 0) {
            fprintf(stderr, "sse_client: connect: %s\n", strerror(errno));
            return 1;
        }
        idle[nidle++] = i;
    }
    int64_t t0 = now_ns() + 1000000;
    counted_from = t0 + (int64_t)warm_s * 1000000000;
    stop_at = counted_from + (int64_t)secs * 1000000000;
    struct itimerspec its = {.it_value = {t0 / 1000000000, t0 % 1000000000},
                             .it_interval = {interval / 1000000000, interval % 1000000000}};
    struct epoll_event tev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) != 0 ||
        epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &tev) != 0)
        return 1;
    bool issuing = true;
    int64_t deadline = stop_at + 10 * (int64_t)1000000000;
    struct epoll_event evs[256];
    while (issuing || sent_n < due_n || nidle < conns) {
        if (now_ns() > deadline)
            break;
        int k = epoll_wait(ep, evs, 256, 100);
        if (k < 0 && errno == EINTR)
            continue;
        for (int j = 0; j < k; j++) {
            if (evs[j].data.u32 == UINT32_MAX) {
                uint64_t fired;
                if (read(tfd, &fired, sizeof(fired)) != sizeof(fired))
                    continue;
                for (uint64_t f = 0; f < fired && issuing; f++) {
                    if (t0 + due_n * interval >= stop_at) {
                        issuing = false;
                        timerfd_settime(tfd, 0, &(struct itimerspec){0}, NULL);
                    } else {
                        due_n++;
                    }
                }
                continue;
            }
            int i = (int)evs[j].data.u32;
            struct rconn *x = &c[i];
            ssize_t r = read(x->fd, buf, sizeof(buf));
            if (r < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            int64_t t = now_ns();
            if (r > 0)
                tail_keep(x, buf, (size_t)r);
            bool done = r > 0 && x->due != 0 && resp_feed(&x->r, buf, (size_t)r, t);
            if (r > 0 && !done && x->due != 0)
                continue;
            if (done && !x->r.bad && x->r.status == 200) {
                if (x->due >= counted_from && nlat < cap) {
                    lat[nlat++] = t - x->due;
                    sum += t - x->due;
                    int64_t pn = path_ns(x, t, &up[npath]);
                    if (pn >= 0)
                        path[npath++] = pn;
                    else
                        unstamped++;
                }
                x->due = 0;
                idle[nidle++] = i;
                continue;
            }
            /* An error answer, a closed or reset connection, bytes nobody
             * asked for: count it and start the connection again. */
            if (x->due >= counted_from)
                errs[done ? E_STATUS : E_READ]++;
            epoll_ctl(ep, EPOLL_CTL_DEL, x->fd, NULL);
            close(x->fd);
            bool was_busy = x->due != 0;
            x->due = 0;
            if (rate_open(ep, c, i, port) != 0) {
                errs[E_CONN]++;
                x->fd = -1;
                conns--; /* lost for good */
                continue;
            }
            if (was_busy)
                idle[nidle++] = i;
        }
        /* What is due goes out, oldest first, on the idle connections;
         * late: it waited over a millisecond for one. */
        int64_t now = now_ns();
        while (sent_n < due_n && nidle > 0) {
            struct rconn *x = &c[idle[--nidle]];
            resp_reset(&x->r, NULL, NULL);
            x->tail_len = 0;
            x->due = t0 + sent_n * interval;
            sent_n++;
            if (now - x->due > 1000000 && x->due >= counted_from)
                late++;
            x->sent = now_ns();
            if (write(x->fd, request, request_len) != (ssize_t)request_len) {
                if (x->due >= counted_from)
                    errs[E_WRITE]++;
                x->due = 0;
                idle[nidle++] = (int)(x - c);
                break;
            }
        }
    }
    errs[E_TIMEOUT] = due_n - sent_n + (conns - nidle);
    qsort(lat, (size_t)nlat, sizeof(int64_t), cmp_i64);
    qsort(path, (size_t)npath, sizeof(int64_t), cmp_i64);
    qsort(up, (size_t)npath, sizeof(int64_t), cmp_i64);
    double us = 1e3;
    printf("{\"requests\":%lld,\"duration_us\":%lld,\"bytes\":0,\"rps\":%.1f,\"offered_rps\":%d,"
           "\"late\":%lld,\"lat_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"max\":%.0f,"
           "\"mean\":%.1f},\"errors\":{\"connect\":%lld,\"read\":%lld,\"write\":%lld,"
           "\"status\":%lld,\"timeout\":%lld},",
           (long long)nlat, (long long)secs * 1000000, (double)nlat / secs, rps, (long long)late,
           pct_ms(lat, (int)nlat, 50) * us, pct_ms(lat, (int)nlat, 90) * us,
           pct_ms(lat, (int)nlat, 99) * us, pct_ms(lat, (int)nlat, 100) * us,
           nlat ? (double)sum / (double)nlat / 1e3 : -1.0, (long long)errs[E_CONN],
           (long long)errs[E_READ], (long long)errs[E_WRITE], (long long)errs[E_STATUS],
           (long long)errs[E_TIMEOUT]);
    printf("\"path_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"max\":%.0f},"
           "\"upstream_us\":{\"p50\":%.0f,\"p90\":%.0f,\"p99\":%.0f,\"max\":%.0f},"
           "\"unstamped\":%lld}\n",
           pct_ms(path, (int)npath, 50) * us, pct_ms(path, (int)npath, 90) * us,
           pct_ms(path, (int)npath, 99) * us, pct_ms(path, (int)npath, 100) * us,
           pct_ms(up, (int)npath, 50) * us, pct_ms(up, (int)npath, 90) * us,
           pct_ms(up, (int)npath, 99) * us, pct_ms(up, (int)npath, 100) * us, (long long)unstamped);
    return 0;
}

/* ----------------------------------------------------------------- tap */

static void
sleep_until(int64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};

    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static long
header_long(const char *head, const char *name, long dflt)
{
    size_t n = strlen(name);

    for (const char *l = strstr(head, "\r\n"); l != NULL; l = strstr(l + 2, "\r\n"))
        if (strncasecmp(l + 2, name, n) == 0 && l[2 + n] == ':')
            return strtol(l + 3 + n, NULL, 10);
    return dflt;
}

/* Write one event as its own chunk, stamped with the time of the write. */
static int
tap_event(int fd, const char *head, const char *json, bool stamp, bool last)
{
    char ev[1024], out[1200];
    int n;

    if (stamp)
        n = snprintf(ev, sizeof(ev), "data: %.*s,\"t\":%lld}\n\n", (int)strlen(json) - 1, json,
                     (long long)now_ns());
    else
        n = snprintf(ev, sizeof(ev), "data: %s\n\n", json);
    int m = snprintf(out, sizeof(out), "%s%x\r\n%s\r\n%s", head, n, ev, last ? "0\r\n\r\n" : "");
    return write_all(fd, out, (size_t)m);
}

/* One connection: requests one after the other, each answered with a stream. */
static void *
tap_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    size_t len = 0;

    for (;;) {
        char *end;
        while ((end = memmem(buf, len, "\r\n\r\n", 4)) == NULL) {
            if (len == sizeof(buf))
                goto out;
            ssize_t r = read(fd, buf + len, sizeof(buf) - len);
            if (r <= 0)
                goto out;
            len += (size_t)r;
        }
        *end = '\0';
        size_t hl = (size_t)(end - buf) + 4;
        long body = header_long(buf, "content-length", 0);
        long chunks = header_long(buf, "x-mock-chunks", 5);
        long delay = header_long(buf, "x-mock-chunk-delay-ms", 0);
        /* Drop the body: its bytes in buf, then the rest from the socket. */
        size_t have = len - hl;
        if ((long)have >= body) {
            memmove(buf, buf + hl + body, have - (size_t)body);
            len = have - (size_t)body;
        } else {
            long left = body - (long)have;
            len = 0;
            while (left > 0) {
                ssize_t r = read(fd, buf, left < (long)sizeof(buf) ? (size_t)left : sizeof(buf));
                if (r <= 0)
                    goto out;
                left -= r;
            }
        }
        static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                   "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
        static const char pre[] = "{\"id\":\"chatcmpl-tap\",\"object\":\"chat.completion.chunk\","
                                  "\"created\":0,\"model\":\"tap\",\"choices\":[";
        char json[800];
        int64_t start = now_ns();
        long i;
        for (i = 0; i < chunks + 2; i++) {
            if (i > 0)
                sleep_until(start + i * delay * 1000000);
            if (i < chunks)
                snprintf(json, sizeof(json),
                         "%s{\"index\":0,\"delta\":{%s\"content\":\"tok%ld \"},"
                         "\"finish_reason\":null}],\"usage\":null}",
                         pre, i == 0 ? "\"role\":\"assistant\"," : "", i);
            else if (i == chunks)
                snprintf(json, sizeof(json),
                         "%s{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}",
                         pre);
            else
                snprintf(json, sizeof(json),
                         "%s],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":%ld,"
                         "\"total_tokens\":%ld}}",
                         pre, chunks, chunks + 5);
            if (tap_event(fd, i == 0 ? head : "", json, true, false) != 0)
                goto out;
        }
        sleep_until(start + i * delay * 1000000);
        if (tap_event(fd, "", "[DONE]", false, true) != 0)
            goto out;
    }
out:
    close(fd);
    return NULL;
}

static int
mode_tap(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    socklen_t sl = sizeof(sa);
    pthread_attr_t attr;
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(lfd, 1024) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0) {
        fprintf(stderr, "sse_client tap: %s\n", strerror(errno));
        return 1;
    }
    printf("listening %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            usleep(10000);
            continue;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        pthread_t t;
        if (pthread_create(&t, &attr, tap_conn, (void *)(intptr_t)fd) != 0)
            close(fd);
    }
}

static void
usage(void)
{
    fprintf(
        stderr,
        "usage: sse_client stream -p PORT [-k KEY] [-P PATH] [-m MODEL] -c CHUNKS -d DELAY_MS "
        "-n STREAMS\n"
        "       sse_client conc -p PORT [-k KEY] [-P PATH] [-m MODEL] -c CHUNKS -d DELAY_MS "
        "-n N -T TIMEOUT_S\n"
        "       sse_client rate -p PORT [-k KEY] [-P PATH] [-m MODEL] -n CONNS -r RPS -S SECONDS "
        "[-W WARM_S]\n"
        "       sse_client tap [-p PORT]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *key = "none", *path = "/v1/chat/completions", *model = "bench";
    int port = 0, chunks = 5, delay = 0, n = 1, timeout = 60, rps = 1000, secs = 5, warm = 1, ch;
    struct rlimit rl;

    if (argc < 2)
        usage();
    const char *mode = argv[1];
    optind = 2;
    while ((ch = getopt(argc, argv, "p:k:P:m:c:d:n:T:r:S:W:")) != -1) {
        switch (ch) {
        case 'p': port = atoi(optarg); break;
        case 'k': key = optarg; break;
        case 'P': path = optarg; break;
        case 'm': model = optarg; break;
        case 'c': chunks = atoi(optarg); break;
        case 'd': delay = atoi(optarg); break;
        case 'n': n = atoi(optarg); break;
        case 'T': timeout = atoi(optarg); break;
        case 'r': rps = atoi(optarg); break;
        case 'S': secs = atoi(optarg); break;
        case 'W': warm = atoi(optarg); break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
    signal(SIGPIPE, SIG_IGN);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (strcmp(mode, "tap") == 0)
        return mode_tap(port);
    if (port <= 0)
        usage();
    if (strcmp(mode, "rate") == 0) {
        if (rps <= 0 || secs <= 0 || warm < 0 || n <= 0)
            usage();
        chat_build(port, key, path, model);
        return mode_rate(port, n, rps, secs, warm);
    }
    request_build(port, key, path, model, chunks, delay);
    if (strcmp(mode, "stream") == 0)
        return mode_stream(port, n);
    if (strcmp(mode, "conc") == 0)
        return mode_conc(port, n, chunks, timeout);
    usage();
    return 2;
}
