/*
 * capture.c - request capture: one JSON object per line per captured
 * request, with the request as the provider got it, the whole answer as
 * the client got it (a stream put back together, worker/answer.c), usage,
 * timings, the target, the ids, the cache flag and the safety verdicts.
 * It is the source for audits, quality analysis and fine-tuning data.
 *
 * Which requests: those of a model with capture: true, and those of the
 * keys and tenants that capture.keys and capture.tenants name.  Never a
 * header: no client key, no provider key.
 *
 * Where: files in capture.dir, or journald (capture.journal).  Files are
 * named by the UTC day (rotate: daily, capture-YYYY-MM-DD.jsonl) or by the
 * second they were begun (rotate: size, capture-YYYY-MM-DDTHH-MM-SSZ.jsonl,
 * a new one once the file would pass capture.max_size; the name in use is
 * in shm, moved on by whichever worker fills the file first).  Each record
 * is one write(2) on a descriptor opened O_APPEND: Linux appends a regular
 * file's write whole under the file's lock, so records of concurrent
 * workers never interleave, whatever their size (PIPE_BUF is about pipes).
 * A record over capture.max_record is written without the request and the
 * answer ("truncated": true).  SIGUSR1 makes the next record open the file
 * again by name.
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

#include "worker/safety.h"
#include "worker/worker.h"

/* The record buffer is kept between requests up to this size. */
#define CAPTURE_KEEP (1024 * 1024)

static int capture_fd = -1;
static char capture_path[4200]; /* what capture_fd is open on */
static struct gw_buf rec;

static const char *const endpoint_paths[] = {
    [GW_EP_CHAT] = "/v1/chat/completions",
    [GW_EP_EMBEDDINGS] = "/v1/embeddings",
    [GW_EP_IMAGES] = "/v1/images/generations",
    [GW_EP_SPEECH] = "/v1/audio/speech",
    [GW_EP_TRANSCRIPTIONS] = "/v1/audio/transcriptions",
    [GW_EP_TRANSLATIONS] = "/v1/audio/translations",
    [GW_EP_VIDEOS] = "/v1/videos",
    [GW_EP_VIDEO_GET] = "/v1/videos/",
    [GW_EP_COMPLETIONS] = "/v1/completions",
    [GW_EP_MODERATIONS] = "/v1/moderations",
    [GW_EP_RESPONSES] = "/v1/responses",
};

void
gw_worker_capture_begin(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                        struct gw_call *call)
{
    const struct gw_gen *g = w->gen;

    (void)key;
    if (g->capture_dir == 0 && !g->capture_journal)
        return;
    if (!call->model->capture &&
        !gw_gen_names_has(g, g->capture_keys, g->ncapture_keys, req->key_id) &&
        !gw_gen_names_has(g, g->capture_tenants, g->ncapture_tenants, req->tenant))
        return;
    /* Trusted keys and tenants are never captured, whatever else says so. */
    if (gw_gen_names_has(g, g->capture_bypass_keys, g->ncapture_bypass_keys, req->key_id) ||
        gw_gen_names_has(g, g->capture_bypass_tenants, g->ncapture_bypass_tenants, req->tenant))
        return;
    req->capture = true;
    if (req->answer == NULL)
        req->answer = gw_worker_answer_create(req->arena);
    call->answer = req->answer;
}

void
gw_worker_capture_reopen(void)
{
    if (capture_fd >= 0)
        close(capture_fd);
    capture_fd = -1;
    capture_path[0] = '\0';
}

/*
 * Append JSON text as one line: whitespace outside strings dropped, raw
 * control characters inside them escaped.  Text that is not a JSON object
 * or array goes in as a string.
 */
static void
json_inline(struct gw_buf *b, const char *s, size_t len)
{
    size_t i = 0, run = 0;
    bool in_string = false;

    while (i < len && strchr(" \t\r\n", s[i]) != NULL && s[i] != '\0')
        i++;
    if (i >= len || (s[i] != '{' && s[i] != '[')) {
        gw_worker_json_str(b, s, len);
        return;
    }
    for (run = i; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (in_string) {
            if (c == '\\' && i + 1 < len) {
                i++;
            } else if (c == '"') {
                in_string = false;
            } else if (c < 0x20) {
                gw_buf_append(b, s + run, i - run);
                gw_buf_printf(b, "\\u%04x", c);
                run = i + 1;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            gw_buf_append(b, s + run, i - run);
            run = i + 1;
        }
    }
    gw_buf_append(b, s + run, len - run);
}

static void
str_or_null(struct gw_buf *b, const char *s)
{
    if (s == NULL)
        gw_buf_append(b, "null", 4);
    else
        gw_worker_json_str(b, s, strlen(s));
}

/*
 * The safety verdicts of the request: what each content-safety rule
 * decided on its input and output ({"rule", "on", "action"}).  Empty until
 * content safety (issue 8, item 1) records them on the request.
 */
static void
safety_verdicts(struct gw_buf *b, const struct gw_request *req)
{
    gw_worker_safety_verdicts(req, b);
}

/* The record of req, one line, into rec. */
static void
record_build(const struct gw_request *req, long ms, const char *endpoint, bool whole)
{
    struct gw_buf *b = &rec;
    struct timespec ts;
    struct tm tm;
    char when[40];
    size_t alen = 0;
    bool complete = false;
    const char *answer = gw_worker_answer_text(req->answer, req->have_usage, req->prompt_tokens,
                                               req->completion_tokens, &alen, &complete);

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    b->len = 0;
    gw_buf_printf(b, "{\"time\":\"%s.%03ldZ\",\"request_id\":", when, ts.tv_nsec / 1000000);
    str_or_null(b, req->id);
    gw_buf_printf(b, ",\"key_id\":");
    str_or_null(b, req->key_id);
    gw_buf_printf(b, ",\"tenant\":");
    str_or_null(b, req->tenant);
    gw_buf_printf(b, ",\"model\":");
    str_or_null(b, req->model);
    gw_buf_printf(b, ",\"target\":");
    str_or_null(b, req->target);
    gw_buf_printf(b, ",\"endpoint\":");
    str_or_null(b, endpoint);
    gw_buf_printf(b,
                  ",\"stream\":%s,\"status\":%d,\"upstream_status\":%d,\"cache_hit\":%s,"
                  "\"duration_ms\":%ld,\"ttfb_ms\":%lld,\"usage\":",
                  req->stream ? "true" : "false", req->status, req->upstream_status,
                  req->cache_hit ? "true" : "false", ms, (long long)(req->first_byte_us / 1000));
    if (req->have_usage || req->cache_hit)
        gw_buf_printf(b,
                      "{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,\"total_tokens\":%lld}",
                      (long long)req->prompt_tokens, (long long)req->completion_tokens,
                      (long long)(req->prompt_tokens + req->completion_tokens));
    else
        gw_buf_append(b, "null", 4);
    gw_buf_printf(b, ",\"request\":");
    if (whole && req->body_len > 0)
        json_inline(b, req->body, req->body_len);
    else
        gw_buf_append(b, "null", 4);
    gw_buf_printf(b, ",\"response\":");
    if (whole && answer != NULL)
        json_inline(b, answer, alen);
    else
        gw_buf_append(b, "null", 4);
    gw_buf_printf(b, ",\"response_complete\":%s,\"safety\":", complete ? "true" : "false");
    safety_verdicts(b, req);
    gw_buf_printf(b, "%s}\n", whole ? "" : ",\"truncated\":true");
}

/* Open the file a record written now belongs in, if it is not open. */
static int
file_for(struct gw_worker *w, const struct gw_gen *g, size_t len)
{
    const char *dir = gw_gen_str(g, g->capture_dir);
    char path[sizeof(capture_path)];
    struct tm tm;
    time_t now = time(NULL);
    _Atomic int64_t *cur = &w->env->shm->hdr->capture_file;

    for (int tries = 0; tries < 3; tries++) {
        if (g->capture_rotate == GW_CAPTURE_DAILY) {
            gmtime_r(&now, &tm);
            snprintf(path, sizeof(path), "%s/capture-%04d-%02d-%02d.jsonl", dir, tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday);
        } else {
            int64_t id = atomic_load(cur);
            if (id == 0 && atomic_compare_exchange_strong(cur, &id, (int64_t)now))
                id = (int64_t)now;
            time_t t = (time_t)id;
            gmtime_r(&t, &tm);
            snprintf(path, sizeof(path), "%s/capture-%04d-%02d-%02dT%02d-%02d-%02dZ.jsonl", dir,
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec);
        }
        if (capture_fd < 0 || strcmp(path, capture_path) != 0) {
            gw_worker_capture_reopen();
            capture_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
            if (capture_fd < 0 && errno == ENOENT && gw_mkdir_p(dir, 0750) == 0)
                capture_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
            if (capture_fd < 0) {
                gw_log(GW_LOG_ERROR, "capture: open(%s): %s", path, strerror(errno));
                return GW_EIO;
            }
            snprintf(capture_path, sizeof(capture_path), "%s", path);
        }
        if (g->capture_rotate == GW_CAPTURE_DAILY)
            return 0;
        /* rotate: size: the first writer to find the file full moves the
         * name on (to the next second at least); the others follow it. */
        struct stat st;
        if (fstat(capture_fd, &st) != 0 || st.st_size == 0 ||
            (uint64_t)st.st_size + len <= g->capture_max_size)
            return 0;
        int64_t id = atomic_load(cur), next = (int64_t)now > id ? (int64_t)now : id + 1;
        atomic_compare_exchange_strong(cur, &id, next);
    }
    return 0;
}

/* /metrics: "c:capture" counts the records written (requests) and those
 * that could not be (failures). */
static void
count(struct gw_worker *w, bool written)
{
    static long entry = -1;

    if (entry < 0)
        entry = gw_shm_stat_find(w->env->shm, "c:capture", true);
    if (entry < 0)
        return;
    struct gw_shm_stat *st = gw_shm_stat_at(w->env->shm, (size_t)entry);
    atomic_fetch_add(written ? &st->requests : &st->failures, 1);
}

static int
journal_write(const struct gw_request *req, const char *record, size_t len)
{
    char f[6][160];
    struct iovec iov[8];
    int n = 0;

    /* MESSAGE is the record itself, without its newline. */
    char *msg = gw_arena_alloc(req->arena, len + 8);
    memcpy(msg, "MESSAGE=", 8);
    memcpy(msg + 8, record, len - 1);
    iov[n++] = (struct iovec){.iov_base = msg, .iov_len = len + 7};
    snprintf(f[0], sizeof(f[0]), "SYSLOG_IDENTIFIER=aigwd-capture");
    snprintf(f[1], sizeof(f[1]), "PRIORITY=6");
    snprintf(f[2], sizeof(f[2]), "AIGW_REQUEST_ID=%s", req->id);
    snprintf(f[3], sizeof(f[3]), "AIGW_KEY_ID=%s", req->key_id ? req->key_id : "");
    snprintf(f[4], sizeof(f[4]), "AIGW_MODEL=%.140s", req->model ? req->model : "");
    snprintf(f[5], sizeof(f[5]), "AIGW_TENANT=%.140s", req->tenant ? req->tenant : "");
    for (int i = 0; i < 6; i++)
        iov[n++] = (struct iovec){.iov_base = f[i], .iov_len = strlen(f[i])};
    return sd_journal_sendv(iov, n);
}

void
gw_worker_capture_write(struct gw_worker *w, const struct gw_request *req, long ms)
{
    const struct gw_gen *g = w->gen;
    const char *endpoint = NULL;

    if (g == NULL || !req->capture)
        return;
    for (size_t i = 0; i < sizeof(endpoint_paths) / sizeof(endpoint_paths[0]); i++)
        if (endpoint_paths[i] != NULL && strcmp(req->path, endpoint_paths[i]) == 0)
            endpoint = endpoint_paths[i];
    record_build(req, ms, endpoint, true);
    if (rec.len > g->capture_max_record)
        record_build(req, ms, endpoint, false);
    if (rec.data == NULL) {
        gw_log(GW_LOG_ERROR, "req=%s capture record: out of memory", req->id);
        return;
    }
    bool written = false;
    if (g->capture_journal) {
        written = journal_write(req, rec.data, rec.len) >= 0;
    } else if (file_for(w, g, rec.len) == 0) {
        /* A write the disk filled up in leaves a cut line, which readers
         * skip; the next record starts on a line of its own. */
        static struct gw_log_limit failing;
        int err = gw_worker_lines_write(capture_fd, &w->env->shm->hdr->lines_cut, GW_CUT_CAPTURE,
                                        rec.data, rec.len);
        written = err == 0;
        if (!written)
            gw_log_limited(&failing, GW_LOG_WARN, "req=%s capture write to %s: %s", req->id,
                           capture_path, strerror(err));
    }
    count(w, written);
    if (rec.cap > CAPTURE_KEEP)
        gw_buf_free(&rec);
}
