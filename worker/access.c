/*
 * access.c - the access log: one JSON object per line per request, to a
 * file (appended with one write(2) per line, or per log.access_buffer of
 * whole lines, so workers never interleave), to stderr, or to journald
 * with structured fields.  It names keys by id and never holds a secret
 * or a prompt.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "worker/worker.h"

static int access_fd = STDERR_FILENO;
static char access_path[4096]; /* what access_fd is open on; "" for stderr */

/* log.access_buffer: whole lines not written yet, for access_fd. */
static struct gw_buf held;
static int64_t held_since_ms; /* when the oldest of them was added */
static int64_t held_flush_ms; /* log.access_flush when it was */

#define LIT(b, s) GW_BUF_LIT(b, s)

/* The segment's gw_shm_header.lines_cut, from the first line on. */
static _Atomic uint32_t no_segment;
static _Atomic uint32_t *lines_cut = &no_segment;

/* A cut line is ended by the next write, unless that write begins a new
 * file: one opened since the cut (a rotation) is empty.  A pipe or the
 * terminal is never taken for empty: an empty line costs a reader
 * nothing, two records on one line cost it both. */
static bool
file_empty(int fd)
{
    struct stat st;

    return fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0;
}

int
gw_worker_lines_write(int fd, _Atomic uint32_t *cut, uint32_t bit, const char *data, size_t len)
{
    bool after_cut = atomic_load_explicit(cut, memory_order_relaxed) & bit;
    bool newline = after_cut && !file_empty(fd);
    struct iovec iov[2] = {{.iov_base = (void *)"\n", .iov_len = 1},
                           {.iov_base = (void *)data, .iov_len = len}};
    struct iovec *v = newline ? iov : iov + 1;
    int n = newline ? 2 : 1;
    bool wrote = false;

    while (n > 0) {
        ssize_t w = writev(fd, v, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            int err = errno;
            if (wrote)
                atomic_fetch_or(cut, bit);
            return err;
        }
        wrote |= w > 0;
        gw_worker_iov_consume(&v, &n, (size_t)w);
    }
    if (after_cut)
        atomic_fetch_and(cut, ~bit);
    return 0;
}

/* Write whole lines to access_fd.  A file that stops taking them (a full
 * disk) fails every request's: the error log, often on the same disk,
 * gets one message a minute (gw_log_limited), as nginx's access_log
 * does. */
static void
lines_write(const char *data, size_t len)
{
    static struct gw_log_limit failing;
    int err = gw_worker_lines_write(access_fd, lines_cut, GW_CUT_ACCESS_LOG, data, len);

    if (err != 0)
        gw_log_limited(&failing, GW_LOG_WARN,
                       "access log write failed: %s (%zu bytes of lines lost)", strerror(err), len);
}

/* JSON string value: quotes, backslashes and control characters escaped;
 * the runs between them copied whole. */
static void
json_str(struct gw_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";

    if (s == NULL) {
        LIT(b, "null");
        return;
    }
    LIT(b, "\"");
    const unsigned char *p = (const unsigned char *)s, *run = p;
    for (; *p; p++) {
        if (*p != '"' && *p != '\\' && *p >= 0x20)
            continue;
        gw_buf_append(b, run, (size_t)(p - run));
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            gw_buf_append(b, esc, 2);
        } else {
            char esc[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
            gw_buf_append(b, esc, 6);
        }
        run = p + 1;
    }
    gw_buf_append(b, run, (size_t)(p - run));
    LIT(b, "\"");
}

static void
json_truth(struct gw_buf *b, bool v)
{
    if (v)
        LIT(b, "true");
    else
        LIT(b, "false");
}

/* "2026-11-22T19:10:46.087Z": the part up to the seconds is formatted
 * once a second. */
static void
json_time(struct gw_buf *b)
{
    static char when[32];
    static time_t last = -1;
    struct timespec ts;
    char ms[5];

    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != last) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
        last = ts.tv_sec;
    }
    long m = ts.tv_nsec / 1000000;
    ms[0] = '.';
    ms[1] = (char)('0' + m / 100);
    ms[2] = (char)('0' + m / 10 % 10);
    ms[3] = (char)('0' + m % 10);
    ms[4] = 'Z';
    LIT(b, "\"");
    gw_buf_append_str(b, when);
    gw_buf_append(b, ms, sizeof(ms));
    LIT(b, "\"");
}

/* Write the lines held back to the file they were meant for. */
void
gw_worker_access_flush(void)
{
    if (held.len == 0)
        return;
    lines_write(held.data, held.len);
    held.len = 0;
}

void
gw_worker_access_tick(void)
{
    if (held.len > 0 && gw_now_ms() - held_since_ms >= held_flush_ms)
        gw_worker_access_flush();
}

/* Open (or reopen, after logrotate) the file this generation names. */
static void
access_open(const char *path)
{
    int fd = STDERR_FILENO;

    gw_worker_access_flush(); /* what was held goes where it was meant to */

    if (path != NULL) {
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
        if (fd < 0) {
            gw_log(GW_LOG_ERROR, "open(%s): %s; access log goes to stderr", path, strerror(errno));
            fd = STDERR_FILENO;
        }
    }
    if (access_fd != STDERR_FILENO)
        close(access_fd);
    access_fd = fd;
    snprintf(access_path, sizeof(access_path), "%s", fd == STDERR_FILENO ? "" : path);
}

void
gw_worker_access_reopen(void)
{
    /* Lines held back belong to the file being rotated out.  Then forget
     * the path: the next line opens the file again by name. */
    gw_worker_access_flush();
    if (access_fd != STDERR_FILENO) {
        close(access_fd);
        access_fd = STDERR_FILENO;
    }
    access_path[0] = '\0';
}

static void
journal_send(const struct gw_request *req, long ms, uint64_t bytes)
{
    sd_journal_send("MESSAGE=%s %s %d %s", gw_worker_http_method_name(req->method), req->path,
                    req->status, req->id, "PRIORITY=6", "SYSLOG_IDENTIFIER=aigwd-access",
                    "AIGW_REQUEST_ID=%s", req->id, "AIGW_KEY_ID=%s", req->key_id ? req->key_id : "",
                    "AIGW_TENANT=%s", req->tenant ? req->tenant : "", "AIGW_MODEL=%s",
                    req->model ? req->model : "", "AIGW_TARGET=%s", req->target ? req->target : "",
                    "AIGW_BYOK=%d", req->byok, "AIGW_STATUS=%d", req->status,
                    "AIGW_UPSTREAM_STATUS=%d", req->upstream_status, "AIGW_INPUT_TOKENS=%lld",
                    (long long)req->prompt_tokens, "AIGW_OUTPUT_TOKENS=%lld",
                    (long long)req->completion_tokens, "AIGW_TTFB_MS=%lld",
                    (long long)(req->first_byte_us / 1000), "AIGW_DURATION_MS=%ld", ms,
                    "AIGW_BYTES=%llu", (unsigned long long)bytes, NULL);
}

void
gw_worker_access_write(struct gw_worker *w, const struct gw_request *req, long ms)
{
    const struct gw_gen *g = w->gen;
    struct gw_buf *b = &w->scratch;

    if (g == NULL || !g->access_log)
        return;
    uint64_t bytes = w->conn.bytes_out;
    if (g->access_journal) {
        journal_send(req, ms, bytes);
        return;
    }
    lines_cut = &w->env->shm->hdr->lines_cut;
    const char *path = gw_gen_str(g, g->access_file);
    if (strcmp(path ? path : "", access_path) != 0)
        access_open(path);

    /* Appends, not printf: this runs for every request. */
    b->len = 0;
    LIT(b, "{\"time\":");
    json_time(b);
    LIT(b, ",\"request_id\":");
    json_str(b, req->id);
    LIT(b, ",\"key_id\":");
    json_str(b, req->key_id);
    LIT(b, ",\"tenant\":");
    json_str(b, req->tenant);
    LIT(b, ",\"method\":");
    json_str(b, gw_worker_http_method_name(req->method));
    LIT(b, ",\"path\":");
    json_str(b, req->path);
    LIT(b, ",\"model\":");
    json_str(b, req->model);
    LIT(b, ",\"target\":");
    json_str(b, req->target);
    LIT(b, ",\"status\":");
    gw_buf_append_i64(b, req->status);
    LIT(b, ",\"upstream_status\":");
    gw_buf_append_i64(b, req->upstream_status);
    LIT(b, ",\"stream\":");
    json_truth(b, req->stream);
    LIT(b, ",\"byok\":");
    json_truth(b, req->byok);
    LIT(b, ",\"cached\":");
    json_truth(b, req->cache_hit);
    LIT(b, ",\"input_tokens\":");
    gw_buf_append_i64(b, req->prompt_tokens);
    LIT(b, ",\"output_tokens\":");
    gw_buf_append_i64(b, req->completion_tokens);
    LIT(b, ",\"ttfb_ms\":");
    gw_buf_append_i64(b, req->first_byte_us / 1000);
    LIT(b, ",\"duration_ms\":");
    gw_buf_append_i64(b, ms);
    LIT(b, ",\"bytes\":");
    gw_buf_append_u64(b, bytes);
    LIT(b, "}\n");
    if (b->data == NULL)
        return;
    size_t cap = g->access_buffer;
    if (held.len > 0 && held.len + b->len > cap)
        gw_worker_access_flush();
    if (b->len <= cap) {
        /* Held back with the others: one write per buffer or per
         * log.access_flush (gw_worker_access_tick), as nginx's buffer=. */
        if (held.len == 0) {
            held_since_ms = gw_now_ms();
            held_flush_ms = g->access_flush_ms;
        }
        if (gw_buf_append(&held, b->data, b->len) == 0) {
            gw_worker_access_tick();
            return;
        }
        gw_worker_access_flush(); /* out of memory: what is held goes now, then this line */
    }
    lines_write(b->data, b->len);
}
