/*
 * access.c - the access log: one JSON object per line per request, to a
 * file (appended with one write(2) per line, so workers never interleave),
 * to stderr, or to journald with structured fields.  It names keys by id
 * and never holds a secret or a prompt.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-journal.h>

#include "worker/worker.h"

static int access_fd = STDERR_FILENO;
static char access_path[4096]; /* what access_fd is open on; "" for stderr */

/* Append a string literal: its length is counted by the compiler. */
#define LIT(b, s) gw_buf_append((b), (s), sizeof(s) - 1)

/* JSON string value: quotes, backslashes and control characters escaped. */
static void
json_str(struct gw_buf *b, const char *s)
{
    if (s == NULL) {
        gw_buf_append(b, "null", 4);
        return;
    }
    gw_buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            gw_buf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            gw_buf_printf(b, "\\u%04x", *p);
        else
            gw_buf_append(b, p, 1);
    }
    gw_buf_append(b, "\"", 1);
}

/* Open (or reopen, after logrotate) the file this generation names. */
static void
access_open(const char *path)
{
    int fd = STDERR_FILENO;

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
    /* Forget the path: the next line opens the file again by name. */
    if (access_fd != STDERR_FILENO) {
        close(access_fd);
        access_fd = STDERR_FILENO;
    }
    access_path[0] = '\0';
}

static void
journal_send(const struct gw_request *req, long ms, uint64_t bytes)
{
    sd_journal_send("MESSAGE=%s %s %d %s", http_method_str(req->method), req->path, req->status,
                    req->id, "PRIORITY=6", "SYSLOG_IDENTIFIER=aigwd-access", "AIGW_REQUEST_ID=%s",
                    req->id, "AIGW_KEY_ID=%s", req->key_id ? req->key_id : "", "AIGW_TENANT=%s",
                    req->tenant ? req->tenant : "", "AIGW_MODEL=%s", req->model ? req->model : "",
                    "AIGW_TARGET=%s", req->target ? req->target : "", "AIGW_BYOK=%d", req->byok,
                    "AIGW_STATUS=%d", req->status, "AIGW_UPSTREAM_STATUS=%d", req->upstream_status,
                    "AIGW_INPUT_TOKENS=%lld", (long long)req->prompt_tokens,
                    "AIGW_OUTPUT_TOKENS=%lld", (long long)req->completion_tokens,
                    "AIGW_TTFB_MS=%lld", (long long)(req->first_byte_us / 1000),
                    "AIGW_DURATION_MS=%ld", ms, "AIGW_BYTES=%llu", (unsigned long long)bytes, NULL);
}

void
gw_worker_access_write(struct gw_worker *w, const struct gw_request *req, long ms)
{
    const struct gw_gen *g = w->gen;
    struct gw_buf *b = &w->scratch;
    struct timespec ts;
    struct tm tm;
    char when[40];

    if (g == NULL || !g->access_log)
        return;
    uint64_t bytes = w->conn.bytes_out;
    if (g->access_journal) {
        journal_send(req, ms, bytes);
        return;
    }
    const char *path = gw_gen_str(g, g->access_file);
    if (strcmp(path ? path : "", access_path) != 0)
        access_open(path);

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    b->len = 0;
    gw_buf_printf(b, "{\"time\":\"%s.%03ldZ\",\"request_id\":", when, ts.tv_nsec / 1000000);
    json_str(b, req->id);
    LIT(b, ",\"key_id\":");
    json_str(b, req->key_id);
    LIT(b, ",\"tenant\":");
    json_str(b, req->tenant);
    LIT(b, ",\"method\":");
    json_str(b, http_method_str(req->method));
    LIT(b, ",\"path\":");
    json_str(b, req->path);
    LIT(b, ",\"model\":");
    json_str(b, req->model);
    LIT(b, ",\"target\":");
    json_str(b, req->target);
    gw_buf_printf(b,
                  ",\"status\":%d,\"upstream_status\":%d,\"stream\":%s,\"byok\":%s,"
                  "\"cached\":%s,\"input_tokens\":%lld,\"output_tokens\":%lld,"
                  "\"ttfb_ms\":%lld,\"duration_ms\":%ld,\"bytes\":%llu}\n",
                  req->status, req->upstream_status, req->stream ? "true" : "false",
                  req->byok ? "true" : "false", req->cache_hit ? "true" : "false",
                  (long long)req->prompt_tokens, (long long)req->completion_tokens,
                  (long long)(req->first_byte_us / 1000), ms, (unsigned long long)bytes);
    if (b->data != NULL && gw_write_all(access_fd, b->data, b->len) != 0)
        gw_log(GW_LOG_WARN, "req=%s access log write failed: %s", req->id, strerror(errno));
}
