/*
 * media.c - the media endpoints of the mock:
 *
 *   POST /v1/audio/transcriptions, /translations  multipart: the text says
 *        how many bytes of file arrived, their SHA-256 and the model named;
 *        response_format text (text/plain), json (with "usage": {"type":
 *        "duration"}) or verbose_json (with "duration"); the audio lasts
 *        one second per 32,000 bytes (16 kHz, 16-bit mono)
 *   POST /v1/audio/speech  JSON: x-mock-speech-bytes bytes (default
 *        100,000) of fake audio in 8 KiB chunks, x-mock-chunk-delay-ms
 *        apart, as audio/mpeg (or the type of response_format)
 *   POST /v1/images/generations  JSON: n images, b64_json or url
 *   POST /v1/videos  JSON or multipart: a video, status "queued"
 *   GET  /v1/videos/{id}  the video, status "completed";
 *        /v1/videos/{id}/content  4,096 bytes of video/mp4
 *
 * Every answer names the model it was asked for ("model"), so that tests
 * can see the gateway's rewrite.
 */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/evp.h>

#include "tests/mock/mock.h"
#include "worker/worker.h"

#define BYTES_PER_SECOND 32000
#define SPEECH_CHUNK 8192

struct form {
    const char *body;
    char model[256];
    char format[32];
    char prompt[256];
    uint64_t file_bytes;
    char sha256[65];
};

static void
field(char *out, size_t size, const struct gw_multipart_part *p)
{
    size_t n = p->value_len < size - 1 ? p->value_len : size - 1;

    memcpy(out, p->value, n);
    out[n] = '\0';
}

static void
on_part(void *ctx, const struct gw_multipart_part *p)
{
    struct form *f = ctx;

    if (p->file) {
        unsigned char md[32];
        unsigned int mdlen = 0;
        f->file_bytes = p->end - p->start;
        EVP_Digest(f->body + p->start, (size_t)f->file_bytes, md, &mdlen, EVP_sha256(), NULL);
        for (unsigned int i = 0; i < mdlen; i++)
            snprintf(f->sha256 + 2 * i, 3, "%02x", md[i]);
    } else if (strcmp(p->name, "model") == 0) {
        field(f->model, sizeof(f->model), p);
    } else if (strcmp(p->name, "response_format") == 0) {
        field(f->format, sizeof(f->format), p);
    } else if (strcmp(p->name, "prompt") == 0) {
        field(f->prompt, sizeof(f->prompt), p);
    }
}

/* Read a multipart body into f; -1 (answered 400) when it is not one. */
static int
form_read(struct gw_mock_conn *c, struct form *f, int *rc)
{
    struct gw_multipart mp;

    memset(f, 0, sizeof(*f));
    f->body = c->body.data;
    if (gw_worker_multipart_init(&mp, gw_mock_header(c, "content-type"), on_part, f) != 0 ||
        gw_worker_multipart_feed(&mp, c->body.data, c->body.len) != 0 ||
        !gw_worker_multipart_done(&mp)) {
        *rc = gw_mock_respond_error(c, 400, "invalid_request_error", "invalid_multipart",
                                    "The body is not a complete multipart/form-data body.");
        return -1;
    }
    return 0;
}

/* A whole answer of any content type. */
static int
respond_as(struct gw_mock_conn *c, const char *ctype, const char *body, size_t len)
{
    gw_mock_stream_begin_as(c, ctype);
    int rc = gw_mock_stream_event(c, body, len, true);
    return rc != 0 ? rc : gw_mock_stream_close(c);
}

static int
transcribe(struct gw_mock_conn *c)
{
    struct form f;
    int rc = 0;
    char text[512];

    if (form_read(c, &f, &rc) != 0)
        return rc;
    if (f.file_bytes == 0 && f.sha256[0] == '\0')
        return gw_mock_respond_error(c, 400, "invalid_request_error", "missing_required_parameter",
                                     "You must provide a file.");
    double seconds = (double)f.file_bytes / BYTES_PER_SECOND;
    snprintf(text, sizeof(text), "received %llu bytes sha256 %s model %s",
             (unsigned long long)f.file_bytes, f.sha256, f.model);
    if (strcmp(f.format, "text") == 0 || strcmp(f.format, "srt") == 0 ||
        strcmp(f.format, "vtt") == 0)
        return respond_as(c, "text/plain; charset=utf-8", text, strlen(text));
    struct json_object *o = json_object_new_object();
    if (strcmp(f.format, "verbose_json") == 0) {
        json_object_object_add(o, "task", json_object_new_string("transcribe"));
        json_object_object_add(o, "language", json_object_new_string("english"));
        json_object_object_add(o, "duration", json_object_new_double(seconds));
        json_object_object_add(o, "text", json_object_new_string(text));
        json_object_object_add(o, "segments", json_object_new_array());
    } else {
        struct json_object *u = json_object_new_object();
        json_object_object_add(o, "text", json_object_new_string(text));
        json_object_object_add(u, "type", json_object_new_string("duration"));
        json_object_object_add(u, "seconds", json_object_new_int64((int64_t)(seconds + 0.999)));
        json_object_object_add(o, "usage", u);
    }
    json_object_object_add(o, "model", json_object_new_string(f.model));
    return gw_mock_send_json(c, 200, o);
}

static int
speech(struct gw_mock_conn *c)
{
    struct json_object *o;
    const char *h = gw_mock_header(c, "x-mock-speech-bytes");
    long total = h != NULL ? strtol(h, NULL, 10) : 100000;
    char chunk[SPEECH_CHUNK];
    struct gw_mock_fault f;
    int rc;

    if ((rc = gw_mock_fault_parse(c, &f)) != 0)
        return rc > 0 ? 0 : rc;
    if ((rc = gw_mock_body_json(c, &o)) != 0)
        return rc;
    struct json_object *v;
    const char *format =
        json_object_object_get_ex(o, "response_format", &v) ? json_object_get_string(v) : "mp3";
    const char *ctype = strcmp(format, "wav") == 0    ? "audio/wav"
                        : strcmp(format, "opus") == 0 ? "audio/ogg"
                        : strcmp(format, "flac") == 0 ? "audio/flac"
                        : strcmp(format, "pcm") == 0  ? "audio/pcm"
                                                      : "audio/mpeg";
    gw_mock_stream_begin_as(c, ctype);
    json_object_put(o);
    for (long sent = 0; sent < total || total == 0;) {
        size_t n = total - sent < SPEECH_CHUNK ? (size_t)(total - sent) : SPEECH_CHUNK;
        for (size_t i = 0; i < n; i++)
            chunk[i] = (char)((sent + (long)i) * 7 + 3);
        if (sent == 0 && n >= 3)
            memcpy(chunk, "ID3", 3);
        else if (sent > 0)
            gw_mock_sleep_ms(f.chunk_delay_ms);
        sent += (long)n;
        if ((rc = gw_mock_stream_event(c, chunk, n, sent >= total)) != 0)
            return rc;
        if (total == 0)
            break;
    }
    return gw_mock_stream_close(c);
}

static int
images(struct gw_mock_conn *c)
{
    struct json_object *o, *v, *data = json_object_new_array(), *out = json_object_new_object();
    int rc;

    if ((rc = gw_mock_body_json(c, &o)) != 0) {
        json_object_put(data);
        json_object_put(out);
        return rc;
    }
    int64_t n = json_object_object_get_ex(o, "n", &v) ? json_object_get_int64(v) : 1;
    bool url = json_object_object_get_ex(o, "response_format", &v) &&
               strcmp(json_object_get_string(v), "url") == 0;
    for (int64_t i = 0; i < n && i < 10; i++) {
        struct json_object *img = json_object_new_object();
        if (url)
            json_object_object_add(img, "url",
                                   json_object_new_string("https://mock.invalid/image.png"));
        else /* a 1x1 PNG */
            json_object_object_add(
                img, "b64_json",
                json_object_new_string("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mN"
                                       "k+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="));
        json_object_array_add(data, img);
    }
    json_object_object_add(out, "created", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(out, "data", data);
    if (json_object_object_get_ex(o, "model", &v))
        json_object_object_add(out, "model", json_object_get(v));
    json_object_put(o);
    return gw_mock_send_json(c, 200, out);
}

static struct json_object *
video(const char *id, const char *model, const char *status)
{
    struct json_object *o = json_object_new_object();

    json_object_object_add(o, "id", json_object_new_string(id));
    json_object_object_add(o, "object", json_object_new_string("video"));
    json_object_object_add(o, "model", json_object_new_string(model));
    json_object_object_add(o, "status", json_object_new_string(status));
    json_object_object_add(o, "progress",
                           json_object_new_int(strcmp(status, "completed") ? 0 : 100));
    json_object_object_add(o, "created_at", json_object_new_int64((int64_t)time(NULL)));
    json_object_object_add(o, "size", json_object_new_string("720x1280"));
    json_object_object_add(o, "seconds", json_object_new_string("4"));
    return o;
}

static int
video_create(struct gw_mock_conn *c)
{
    char id[64], model[256] = "";
    const char *ctype = gw_mock_header(c, "content-type");
    int rc = 0;

    if (ctype != NULL && strncasecmp(ctype, "multipart/", 10) == 0) {
        struct form f;
        if (form_read(c, &f, &rc) != 0)
            return rc;
        snprintf(model, sizeof(model), "%s", f.model);
    } else {
        struct json_object *o, *v;
        if ((rc = gw_mock_body_json(c, &o)) != 0)
            return rc;
        if (json_object_object_get_ex(o, "model", &v))
            snprintf(model, sizeof(model), "%s", json_object_get_string(v));
        json_object_put(o);
    }
    snprintf(id, sizeof(id), "video_mock_%llu", gw_mock_next_id());
    return gw_mock_send_json(c, 200, video(id, model, "queued"));
}

int
gw_mock_media_dispatch(struct gw_mock_conn *c, const char *path, size_t plen)
{
    llhttp_method_t method = (llhttp_method_t)c->parser.method;
    char id[128];

#define IS(p) (plen == sizeof(p) - 1 && memcmp(path, p, plen) == 0)
    if (method == HTTP_POST && (IS("/v1/audio/transcriptions") || IS("/v1/audio/translations")))
        return transcribe(c);
    if (method == HTTP_POST && IS("/v1/audio/speech"))
        return speech(c);
    if (method == HTTP_POST && IS("/v1/images/generations"))
        return images(c);
    if (method == HTTP_POST && IS("/v1/videos"))
        return video_create(c);
#undef IS
    if (method != HTTP_GET || plen <= 11 || memcmp(path, "/v1/videos/", 11) != 0 ||
        plen - 11 >= sizeof(id))
        return 1;
    memcpy(id, path + 11, plen - 11);
    id[plen - 11] = '\0';
    char *slash = strchr(id, '/');
    if (slash != NULL && strcmp(slash, "/content") == 0) {
        static char mp4[4096];
        memcpy(mp4,
               "\0\0\0\x18"
               "ftypmp42",
               12);
        return respond_as(c, "video/mp4", mp4, sizeof(mp4));
    }
    if (slash != NULL || strncmp(id, "video_mock_", 11) != 0)
        return gw_mock_respond_error(c, 404, "invalid_request_error", "not_found",
                                     "No such video.");
    return gw_mock_send_json(c, 200, video(id, "mock-video", "completed"));
}
