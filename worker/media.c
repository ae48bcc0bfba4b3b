/*
 * media.c - the media endpoints: images, speech, transcriptions (and
 * translations) and videos, and their usage per capability.
 *
 * JSON requests (images, speech, a JSON video) take the ordinary pipeline
 * (gw_worker_pipeline_proxy); media_prepare adds their checks and what
 * their usage counts.  Speech answers, and video content, are relayed as
 * they come with the upstream's content type.
 *
 * A multipart upload (transcriptions, translations, a multipart video) is
 * never held in memory.  Its route takes the body as a stream (http.c
 * stops after the headers); the body goes to an unlinked file in
 * state_dir as it arrives, bounded by http.max_upload_size, while
 * multipart.c finds the parts on the fly: the model field (to route),
 * response_format and stream, and the file's size and first bytes.  Once
 * the upload is complete and routed, each attempt reads the file again
 * (so failover works as for JSON), with the model field's value replaced
 * by the target's model name on the way.  The model field may come before
 * or after the file (the OpenAI SDKs send the file first): spooling is
 * what makes the order not matter.
 *
 * Video ids: GET /v1/videos/{id} names no model.  The id the client gets
 * is the provider's id, a dot, and the base64url of "model\x1fprovider\x1f
 * provider's model", so a status poll or a download goes to the target
 * that made the video with nothing stored; the client's key must still
 * be allowed the model, and the target must still be one of the model's.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "worker/providers/providers.h"

#define VIDEOS_PREFIX "/v1/videos/"
#define VIDEO_ID_SEP '.'
/* The bytes of an uploaded file kept to read its format's header. */
#define FILE_HEAD 64

bool
gw_worker_media_endpoint(enum gw_endpoint ep)
{
    return ep >= GW_EP_IMAGES && ep <= GW_EP_VIDEO_GET;
}

uint8_t
gw_worker_media_capability(enum gw_endpoint ep)
{
    switch (ep) {
    case GW_EP_CHAT: return GW_CAP_CHAT;
    case GW_EP_EMBEDDINGS: return GW_CAP_EMBEDDINGS;
    case GW_EP_IMAGES: return GW_CAP_IMAGES;
    case GW_EP_SPEECH: return GW_CAP_SPEECH;
    case GW_EP_TRANSCRIPTIONS:
    case GW_EP_TRANSLATIONS: return GW_CAP_TRANSCRIPTION;
    case GW_EP_VIDEOS:
    case GW_EP_VIDEO_GET: return GW_CAP_VIDEO;
    default: return GW_CAP_CHAT; /* the other text endpoints count tokens */
    }
}

bool
gw_worker_media_body_streamed(const struct gw_request *req)
{
    static const char *const paths[] = {"/v1/audio/transcriptions", "/v1/audio/translations",
                                        "/v1/videos"};
    const char *ctype = gw_worker_http_header(req, "content-type");

    if (req->method != HTTP_POST || ctype == NULL ||
        strncasecmp(ctype, "multipart/form-data", 19) != 0)
        return false;
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (strcmp(req->path, paths[i]) == 0)
            return true;
    return false;
}

/* ------------------------------------------------------------ the spool */

/* An unlinked file in dir (O_TMPFILE, else a named one removed at once). */
static int
spool_open(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);

    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != ENOENT))
        return fd;
    char path[4096];
    snprintf(path, sizeof(path), "%s/.aigw-upload-XXXXXX", dir);
    if ((fd = mkostemp(path, O_CLOEXEC)) >= 0)
        unlink(path);
    return fd;
}

uint64_t
gw_worker_media_upload_rewind(struct gw_upload *u, const char *model)
{
    u->pos = 0;
    u->model = model != NULL ? model : "";
    atomic_store(&u->last_read_ms, gw_now_ms());
    if (u->model_end <= u->model_start)
        return u->size;
    return u->size - (u->model_end - u->model_start) + strlen(u->model);
}

/*
 * The body sent is the spooled one in three pieces: up to the model's
 * value, the target's model name, and the rest after the value.
 */
size_t
gw_worker_media_upload_read(char *buf, size_t size, size_t n, void *ctx)
{
    struct gw_upload *u = ctx;
    size_t want = size * n, out = 0;
    bool rewrite = u->model_end > u->model_start;
    uint64_t ms = rewrite ? u->model_start : u->size;
    uint64_t mlen = rewrite ? strlen(u->model) : 0;
    uint64_t skip = rewrite ? u->model_end - u->model_start : 0;

    while (out < want) {
        uint64_t len;
        if (u->pos < ms) {
            len = ms - u->pos;
            if (len > want - out)
                len = want - out;
            ssize_t r = pread(u->fd, buf + out, (size_t)len, (off_t)u->pos);
            if (r <= 0)
                return r == 0 ? out : CURL_READFUNC_ABORT;
            len = (uint64_t)r;
        } else if (u->pos < ms + mlen) {
            len = ms + mlen - u->pos;
            if (len > want - out)
                len = want - out;
            memcpy(buf + out, u->model + (u->pos - ms), (size_t)len);
        } else {
            uint64_t at = u->pos - mlen + skip;
            if (at >= u->size)
                break;
            len = u->size - at;
            if (len > want - out)
                len = want - out;
            ssize_t r = pread(u->fd, buf + out, (size_t)len, (off_t)at);
            if (r <= 0)
                return r == 0 ? out : CURL_READFUNC_ABORT;
            len = (uint64_t)r;
        }
        out += (size_t)len;
        u->pos += len;
    }
    atomic_store(&u->last_read_ms, gw_now_ms());
    return out;
}

/* What the parts of an upload said. */
struct upload_parse {
    struct gw_upload *u;
    char model[256];
    bool have_model;
    bool model_too_long;
    char response_format[32];
    bool stream;
    bool have_file;
    uint64_t file_bytes;
    unsigned char head[FILE_HEAD];
    size_t head_len;
};

static void
on_part(void *ctx, const struct gw_multipart_part *p)
{
    struct upload_parse *up = ctx;
    uint64_t len = p->end - p->start;

    if (p->file) {
        if (!up->have_file) {
            up->have_file = true;
            up->file_bytes = len;
            up->head_len = p->value_len < FILE_HEAD ? p->value_len : FILE_HEAD;
            memcpy(up->head, p->value, up->head_len);
        }
        return;
    }
    if (strcmp(p->name, "model") == 0) {
        up->model_too_long = len >= sizeof(up->model) || len > p->value_len;
        up->have_model = !up->model_too_long && len > 0;
        if (up->have_model) {
            memcpy(up->model, p->value, (size_t)len);
            up->model[len] = '\0';
            up->u->model_start = p->start;
            up->u->model_end = p->end;
        }
    } else if (strcmp(p->name, "response_format") == 0 && len < sizeof(up->response_format)) {
        memcpy(up->response_format, p->value, (size_t)len);
        up->response_format[len] = '\0';
    } else if (strcmp(p->name, "stream") == 0) {
        up->stream = len == 4 && strncasecmp(p->value, "true", 4) == 0;
    }
}

static uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/*
 * The length of an uploaded audio file in milliseconds when its format
 * says it in its first bytes: WAV (RIFF/WAVE, the byte rate of its fmt
 * chunk over the file's size past the canonical 44-byte header).  0 when
 * unknown (compressed formats need the whole file decoded).
 */
static int64_t
audio_ms_estimate(const struct upload_parse *up)
{
    const unsigned char *h = up->head;

    if (up->head_len < 44 || memcmp(h, "RIFF", 4) != 0 || memcmp(h + 8, "WAVE", 4) != 0 ||
        memcmp(h + 12, "fmt ", 4) != 0)
        return 0;
    uint32_t byte_rate = le32(h + 28);
    if (byte_rate == 0 || up->file_bytes <= 44)
        return 0;
    return (int64_t)((up->file_bytes - 44) * 1000 / byte_rate);
}

/* ------------------------------------------------------------ the hooks */

/*
 * A transcription's answer: the audio's length from its "duration"
 * (verbose_json) or "usage": {"type": "duration", "seconds"} (json), its
 * tokens from "usage": {"input_tokens", "output_tokens"}; a text answer
 * (text, srt, vtt) keeps the estimate made from the file.
 */
static int
transcription_hook(struct gw_call *call, const char **body, size_t *len)
{
    struct json_object *o = gw_worker_prov_parse(*body, *len), *u, *v;

    if (o == NULL)
        return 0;
    if (json_object_object_get_ex(o, "duration", &v) &&
        (json_object_is_type(v, json_type_double) || json_object_is_type(v, json_type_int)))
        call->req->units = (int64_t)(json_object_get_double(v) * 1000.0 + 0.5);
    if (json_object_object_get_ex(o, "usage", &u) && json_object_is_type(u, json_type_object)) {
        const char *type = gw_worker_prov_str(u, "type");
        if (type != NULL && strcmp(type, "duration") == 0 &&
            json_object_object_get_ex(u, "seconds", &v))
            call->req->units = (int64_t)(json_object_get_double(v) * 1000.0 + 0.5);
        if (json_object_object_get_ex(u, "input_tokens", &v)) {
            call->have_usage = true;
            call->prompt_tokens = json_object_get_int64(v);
            if (json_object_object_get_ex(u, "output_tokens", &v))
                call->completion_tokens = json_object_get_int64(v);
        }
    }
    json_object_put(o);
    return 0;
}

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static char *
b64url_encode(struct gw_arena *a, const char *s, size_t n)
{
    char *out = gw_arena_alloc(a, (n + 2) / 3 * 4 + 1), *o = out;

    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)(unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        *o++ = b64url[v >> 18];
        *o++ = b64url[(v >> 12) & 63];
        if (i + 1 < n)
            *o++ = b64url[(v >> 6) & 63];
        if (i + 2 < n)
            *o++ = b64url[v & 63];
    }
    *o = '\0';
    return out;
}

/* NULL when s is not base64url. */
static char *
b64url_decode(struct gw_arena *a, const char *s, size_t n)
{
    char *out = gw_arena_alloc(a, n * 3 / 4 + 2), *o = out;
    uint32_t v = 0;
    int bits = 0;

    for (size_t i = 0; i < n; i++) {
        const char *c = strchr(b64url, s[i]);
        if (s[i] == '\0' || c == NULL)
            return NULL;
        v = v << 6 | (uint32_t)(c - b64url);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (char)(v >> bits);
        }
    }
    *o = '\0';
    return out;
}

/* The id a client gets for the provider's video id made by call's target. */
static const char *
video_id_encode(struct gw_call *call, const char *id)
{
    struct gw_arena *a = call->req->arena;
    const char *route =
        gw_arena_printf(a, "%s\x1f%s\x1f%s", gw_gen_str(call->gen, call->model->name),
                        call->provider_name, call->target_model);

    return gw_arena_printf(a, "%s%c%s", id, VIDEO_ID_SEP, b64url_encode(a, route, strlen(route)));
}

/* A video object (or a list of them): ids the client can route back. */
static int
video_hook(struct gw_call *call, const char **body, size_t *len)
{
    struct json_object *o = gw_worker_prov_parse(*body, *len), *data;
    const char *id;

    if (o == NULL)
        return 0; /* not JSON: as it came */
    if ((id = gw_worker_prov_str(o, "id")) != NULL)
        json_object_object_add(o, "id", json_object_new_string(video_id_encode(call, id)));
    if (json_object_object_get_ex(o, "data", &data) && json_object_is_type(data, json_type_array))
        for (size_t i = 0; i < gw_worker_json_len(data); i++) {
            struct json_object *e = gw_worker_json_at(data, i);
            if ((id = gw_worker_prov_str(e, "id")) != NULL)
                json_object_object_add(e, "id", json_object_new_string(video_id_encode(call, id)));
        }
    size_t n;
    const char *s = json_object_to_json_string_length(
        o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
    *body = gw_arena_strndup(call->req->arena, s, n);
    *len = n;
    json_object_put(o);
    return 0;
}

/* ------------------------------------------------------- JSON requests */

static int
missing(struct gw_worker *w, struct gw_request *req, const char *param, const char *what)
{
    return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                "missing_required_parameter", param,
                                "You must provide a %s parameter (%s).", param, what)
               ?: -1;
}

/* Characters (code points) of UTF-8 text. */
static int64_t
utf8_chars(const char *s)
{
    int64_t n = 0;

    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

int
gw_worker_media_prepare(struct gw_worker *w, struct gw_request *req, struct gw_call *call)
{
    struct json_object *o = gw_worker_call_json(call), *v;
    const char *s;

    switch (call->endpoint) {
    case GW_EP_IMAGES: {
        if (gw_worker_prov_str(o, "prompt") == NULL)
            return missing(w, req, "prompt", "a string");
        int64_t n = json_object_object_get_ex(o, "n", &v) ? json_object_get_int64(v) : 1;
        const char *size = gw_worker_prov_str(o, "size");
        const char *quality = gw_worker_prov_str(o, "quality");
        /* The tier as asked; the defaults are DALL-E's.  What a client
         * asks is cut between characters: the tier is stored and exported. */
        size = size ? size : "1024x1024";
        quality = quality ? quality : "standard";
        req->units = n > 0 ? n : 1;
        req->tier = gw_arena_printf(req->arena, "%.*s/%.*s", (int)gw_utf8_prefix(size, 11), size,
                                    (int)gw_utf8_prefix(quality, 10), quality);
        break;
    }
    case GW_EP_SPEECH:
        if ((s = gw_worker_prov_str(o, "input")) == NULL)
            return missing(w, req, "input", "the text to speak");
        req->units = utf8_chars(s);
        call->raw = true;
        break;
    case GW_EP_VIDEOS:
        if (gw_worker_prov_str(o, "prompt") == NULL)
            return missing(w, req, "prompt", "a string");
        req->units = 1;
        call->answer_hook = video_hook;
        break;
    default: break;
    }
    return 0;
}

/* ------------------------------------------------------------ requests */

/* The results of the attempts into the request, for the access log and
 * the usage record. */
static void
results_take(struct gw_request *req, const struct gw_call *call)
{
    req->upstream_status = call->status;
    req->stream = call->raw || call->stream;
    req->have_usage = call->have_usage;
    req->prompt_tokens = call->prompt_tokens;
    req->completion_tokens = call->completion_tokens;
    req->first_byte_us = call->first_byte_us;
    if (call->target != NULL)
        req->cost_nano =
            (int64_t)((double)call->prompt_tokens * call->target->price_input * 1000.0 +
                      (double)call->completion_tokens * call->target->price_output * 1000.0 + 0.5);
}

/* Authorize model name for key and take its quotas and limits; answers
 * and returns NULL when refused (*rc the answer's result). */
static const struct gw_gen_model *
admit(struct gw_worker *w, struct gw_request *req, const struct gw_key *key, const char *name,
      struct gw_quota_hold *qhold, struct gw_limit_hold *hold, int *rc)
{
    const struct gw_gen_model *m = gw_gen_model_find(w->gen, name);
    bool refused = false;

    req->model = gw_arena_strdup(req->arena, name);
    if (m == NULL) {
        *rc = gw_worker_http_error(
            &w->conn, req, 404, "invalid_request_error", "model_not_found", "model",
            "The model `%s` does not exist or you do not have access to it.", req->model);
        return NULL;
    }
    if (!gw_key_allows(key, name)) {
        *rc = gw_worker_http_error(&w->conn, req, 403, "permission_error", "model_not_allowed",
                                   "model", "This API key may not use the model `%s`.", req->model);
        return NULL;
    }
    req->model_stat = m->stat;
    *rc = gw_worker_quota_admit(w, req, key, req->model, qhold, &refused);
    if (refused)
        return NULL;
    /* No JSON body to estimate tokens from: the limits count the call. */
    *rc = gw_worker_limit_admit(w, req, key, m, NULL, hold, &refused);
    if (refused) {
        gw_worker_quota_release(w, qhold);
        return NULL;
    }
    return m;
}

/* Answer a failed read of the upload. */
static int
upload_read_failed(struct gw_worker *w, struct gw_request *req, int rc)
{
    int status = w->conn.error;

    if (rc == GW_ECLOSED) {
        req->status = 499; /* the client went away mid-upload */
        req->keep_alive = false;
        return GW_ECLOSED;
    }
    req->keep_alive = false;
    return gw_worker_http_error(&w->conn, req, status, "invalid_request_error",
                                status == 413   ? "request_too_large"
                                : status == 408 ? "request_timeout"
                                                : "bad_request",
                                NULL, "%s",
                                status == 413 ? "The upload exceeds http.max_upload_size."
                                : status == 408
                                    ? "The upload was not received in time."
                                    : "The request body is not valid HTTP/1.1 framing.");
}

int
gw_worker_media_upload(struct gw_worker *w, struct gw_request *req, const struct gw_key *key,
                       enum gw_endpoint ep)
{
    struct gw_upload u = {.fd = -1};
    struct upload_parse up = {.u = &u};
    struct gw_multipart mp;
    struct gw_call call = {.req = req, .conn = &w->conn, .endpoint = ep, .upload = &u};
    struct gw_quota_hold qhold;
    struct gw_limit_hold hold;
    const char *ctype = gw_worker_http_header(req, "content-type");
    int rc = 0;

    req->capability = gw_worker_media_capability(ep);
    if (!w->conn.body_streamed) {
        if (ep == GW_EP_VIDEOS)
            return gw_worker_pipeline_proxy(w, req, key, ep);
        return gw_worker_http_error(
            &w->conn, req, 400, "invalid_request_error", "invalid_content_type", NULL,
            "%s takes a multipart/form-data body with a file and a model.", req->path);
    }
    if (gw_worker_multipart_init(&mp, ctype, on_part, &up) != 0)
        return gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                    "invalid_content_type", NULL,
                                    "The multipart/form-data body needs a boundary parameter "
                                    "(1 to 70 characters).");
    if ((u.fd = spool_open(w->env->cfg->state_dir)) < 0) {
        gw_log(GW_LOG_ERROR, "req=%s open(%s, O_TMPFILE): %s", req->id, w->env->cfg->state_dir,
               strerror(errno));
        return gw_worker_http_error(&w->conn, req, 500, "server_error", "internal_error", NULL,
                                    "The gateway could not store the upload (request %s).",
                                    req->id);
    }

    /* Spool the body while the parts go by. */
    for (;;) {
        const char *data;
        size_t len;
        if ((rc = gw_worker_http_body_read(&w->conn, &data, &len)) != 0) {
            rc = upload_read_failed(w, req, rc);
            goto out;
        }
        if (len == 0)
            break;
        if (gw_write_all(u.fd, data, len) != 0) {
            gw_log(GW_LOG_ERROR, "req=%s write(upload spool): %s", req->id, strerror(errno));
            rc = gw_worker_http_error(&w->conn, req, 500, "server_error", "internal_error", NULL,
                                      "The gateway could not store the upload (request %s).",
                                      req->id);
            goto out;
        }
        u.size += len;
        if (gw_worker_multipart_feed(&mp, data, len) != 0)
            break;
    }
    if (!gw_worker_multipart_done(&mp)) {
        rc = gw_worker_http_error(&w->conn, req, 400, "invalid_request_error", "invalid_multipart",
                                  NULL,
                                  "The multipart/form-data body is malformed or ends before its "
                                  "closing boundary.");
        goto out;
    }
    if (!up.have_model) {
        rc = gw_worker_http_error(
            &w->conn, req, 400, "invalid_request_error", "missing_required_parameter", "model",
            up.model_too_long ? "The model parameter is too long (255 bytes at most)."
                              : "You must provide a model parameter (a form field).");
        goto out;
    }
    if (!up.have_file && ep != GW_EP_VIDEOS) {
        rc = gw_worker_http_error(&w->conn, req, 400, "invalid_request_error",
                                  "missing_required_parameter", "file",
                                  "You must provide a file parameter (the audio, as a file).");
        goto out;
    }
    if ((call.model = admit(w, req, key, up.model, &qhold, &hold, &rc)) == NULL)
        goto out;

    call.content_type = ctype;
    if (ep == GW_EP_VIDEOS) {
        req->units = 1;
        call.answer_hook = video_hook;
    } else {
        /* An estimate until the answer says how long the audio was. */
        req->units = audio_ms_estimate(&up);
        call.answer_hook = transcription_hook;
    }
    /* A streamed transcription (stream=true) comes back as it is made. */
    call.raw = up.stream;
    call.hook_ctx = &up;
    rc = gw_worker_pipeline_attempts(w, req, key, &call, call.model);
    results_take(req, &call);
    gw_worker_limit_settle(w, req, &hold);
    gw_worker_quota_settle(w, req, &qhold);
out:
    if (u.fd >= 0)
        close(u.fd);
    return rc;
}

/* ------------------------------------------------------------ videos */

static int
video_not_found(struct gw_worker *w, struct gw_request *req, const char *id)
{
    return gw_worker_http_error(&w->conn, req, 404, "invalid_request_error", "video_not_found",
                                NULL, "No video with id `%s` is known to this gateway.", id);
}

int
gw_worker_media_video_get(struct gw_worker *w, struct gw_request *req, const struct gw_key *key)
{
    struct gw_arena *a = req->arena;
    const struct gw_gen *g = w->gen;
    struct gw_call call = {
        .req = req, .conn = &w->conn, .endpoint = GW_EP_VIDEO_GET, .method_get = true};
    char *id = gw_arena_strdup(a, req->path + strlen(VIDEOS_PREFIX));
    char *suffix = strchr(id, '/');
    int rc;

    req->capability = GW_CAP_VIDEO;
    if (suffix != NULL) {
        if (strcmp(suffix, "/content") != 0)
            return gw_worker_http_error(&w->conn, req, 404, "invalid_request_error", "unknown_url",
                                        NULL, "Unknown request URL: GET %s.", req->path);
        *suffix = '\0';
        call.raw = true;
    }
    char *sep = strrchr(id, VIDEO_ID_SEP), *route, *provider, *pmodel;
    if (sep == NULL || sep == id || (route = b64url_decode(a, sep + 1, strlen(sep + 1))) == NULL ||
        (provider = strchr(route, '\x1f')) == NULL ||
        (pmodel = strchr(provider + 1, '\x1f')) == NULL)
        return video_not_found(w, req, id);
    *sep = '\0';
    *provider++ = '\0';
    *pmodel++ = '\0';

    const struct gw_gen_model *m = gw_gen_model_find(g, route);
    if (m == NULL || !gw_key_allows(key, route))
        return video_not_found(w, req, id);
    for (uint32_t i = 0; i < m->ntargets && call.pin_target == 0; i++) {
        const struct gw_gen_target *t = gw_gen_target(g, m->first_target + i);
        const struct gw_gen_provider *p = gw_gen_provider(g, t->provider);
        if (strcmp(gw_gen_str(g, p->name), provider) == 0 &&
            strcmp(gw_gen_str(g, t->model), pmodel) == 0)
            call.pin_target = (int)i + 1;
    }
    req->model = gw_arena_strdup(a, route);
    req->model_stat = m->stat;
    if (call.pin_target == 0)
        return gw_worker_http_error(&w->conn, req, 404, "invalid_request_error", "video_not_found",
                                    NULL,
                                    "The video `%s` was made by %s/%s, which is no longer a "
                                    "target of the model `%s`.",
                                    id, provider, pmodel, route);
    call.upstream_path = gw_arena_printf(a, "/videos/%s%s%s%s", gw_worker_prov_path_escape(a, id),
                                         call.raw ? "/content" : "", req->query ? "?" : "",
                                         req->query ? req->query : "");
    if (!call.raw)
        call.answer_hook = video_hook;
    /* A status poll or a download is a call of the model, not a video:
     * no quota is taken, and it makes no units. */
    rc = gw_worker_pipeline_attempts(w, req, key, &call, m);
    results_take(req, &call);
    return rc;
}
