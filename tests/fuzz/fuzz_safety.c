/*
 * fuzz_safety.c - content safety on an answer (worker/safety.c): the PII
 * detectors, a keyword and a regular expression, applied to a whole answer
 * and to the same text streamed in chunks of any size.  The text is what a
 * model wrote, which a client can steer.
 *
 * Promises checked: a stream is masked and blocked exactly as the whole
 * answer would be, wherever its chunks cut the text (the engine's window
 * is made larger than any input, so no match is longer than it); and
 * whatever a provider streams instead of well-formed chunks, the filter
 * passes it, or blocks it, without failing.
 */
#include <json-c/json.h>

#include "tests/fuzz/fuzz.h"
#include "worker/safety.h"

#define MAX_TEXT 4096

static struct gw_safety_engine *engine;

static void
engine_make(void)
{
    static const char *const words[] = {"secret plan"};
    static struct gw_worker_safety_def defs[GW_DETECT_NDETECTORS + 2];
    size_t n = 0;

    for (int d = 0; d < GW_DETECT_NDETECTORS; d++)
        defs[n++] = (struct gw_worker_safety_def){.name = gw_safety_detector_names[d],
                                                  .type = GW_SAFETY_PII,
                                                  .detector = (enum gw_safety_detector)d,
                                                  .action = GW_SAFETY_MASK,
                                                  .on = GW_SAFETY_ON_OUTPUT,
                                                  .stat = {-1, -1}};
    defs[n++] = (struct gw_worker_safety_def){.name = "plan",
                                              .type = GW_SAFETY_KEYWORDS,
                                              .action = GW_SAFETY_BLOCK,
                                              .on = GW_SAFETY_ON_OUTPUT,
                                              .whole_word = true,
                                              .words = words,
                                              .nwords = 1,
                                              .stat = {-1, -1}};
    defs[n++] = (struct gw_worker_safety_def){.name = "internal",
                                              .type = GW_SAFETY_REGEX,
                                              .action = GW_SAFETY_MASK,
                                              .on = GW_SAFETY_ON_OUTPUT,
                                              .pattern = "(?i)internal\\s+use\\s+only",
                                              .mask = "###",
                                              .stat = {-1, -1}};
    engine = gw_worker_safety_engine_create(defs, n, 2 * MAX_TEXT);
    FUZZ_CHECK(engine != NULL);
}

/* A chunk event carrying text. */
static void
chunk(struct gw_buf *b, const char *text, size_t len)
{
    struct json_object *s = json_object_new_string_len(text, (int)len);

    b->len = 0;
    gw_buf_printf(b,
                  "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
                  "\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%s},"
                  "\"finish_reason\":null}]}\n\n",
                  json_object_to_json_string_ext(s, JSON_C_TO_STRING_PLAIN));
    json_object_put(s);
}

/* The text of the content deltas in a stream; *error: an error event came. */
static void
stream_text(const struct gw_buf *out, struct gw_buf *text, bool *error)
{
    *error = false;
    if (out->len == 0)
        return;
    const char *p = out->data, *end = out->data + out->len;

    while (p < end) {
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        FUZZ_CHECK(e != NULL && (size_t)(e - p) >= 6 && memcmp(p, "data: ", 6) == 0);
        struct json_tokener *tok = json_tokener_new();
        struct json_object *o = json_tokener_parse_ex(tok, p + 6, (int)(e - p - 6)), *c, *v;
        json_tokener_free(tok);
        if (o == NULL) {
            FUZZ_CHECK(e - p - 6 == 6 && memcmp(p + 6, "[DONE]", 6) == 0);
        } else if (json_object_object_get_ex(o, "error", &v)) {
            *error = true;
        } else if (json_object_object_get_ex(o, "choices", &c) && json_object_array_length(c) > 0 &&
                   json_object_object_get_ex(json_object_array_get_idx(c, 0), "delta", &v) &&
                   json_object_object_get_ex(v, "content", &v)) {
            gw_buf_append(text, json_object_get_string(v), (size_t)json_object_get_string_len(v));
        }
        json_object_put(o);
        p = e + 2;
    }
}

/* The relay's complete events go through the stream filter. */
struct relay {
    struct gw_safety_req *st;
    struct gw_buf *out;
    int rc;
};

static int
relay_emit(void *ctx, const char *data, size_t len)
{
    struct relay *r = ctx;

    if (r->rc == 0)
        r->rc = gw_worker_safety_stream(r->st, data, len, fuzz_sink, r->out);
    return 0;
}

/*
 * Whatever a provider streams, in its own shape, through the relay and
 * the filter as the worker runs them: the filter must end it (0), or
 * block it (GW_EPERM), and nothing else.
 */
static void
provider_stream(const char *data, size_t len, uint8_t cut)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct gw_buf out = {0};
    struct relay r = {.st = gw_worker_safety_req_create(engine, UINT64_MAX, a, NULL, "f"),
                      .out = &out};
    struct gw_sse sse;

    gw_worker_sse_init(&sse, relay_emit, &r, false);
    for (size_t off = 0; off < len;) {
        size_t n = fuzz_piece(cut, len - off);
        FUZZ_CHECK(gw_worker_sse_feed(&sse, data + off, n) == 0);
        off += n;
    }
    FUZZ_CHECK(gw_worker_sse_finish(&sse) == 0);
    if (r.rc == 0)
        r.rc = gw_worker_safety_stream_end(r.st, fuzz_sink, &out);
    FUZZ_CHECK(r.rc == 0 || r.rc == GW_EPERM);
    gw_worker_sse_fini(&sse);
    gw_buf_free(&out);
    gw_arena_destroy(a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char finish[] =
        "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
        "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
        "data: [DONE]\n\n";

    if (size < 2 || size - 1 > MAX_TEXT || memchr(data + 1, 0, size - 1) != NULL)
        return 0;
    gw_log_level = -1;
    if (engine == NULL)
        engine_make();
    /* A first byte of 0xF0 and up: the rest is a provider's stream. */
    if (data[0] >= 0xF0) {
        provider_stream((const char *)data + 1, size - 1, data[0] & 0x0F);
        return 0;
    }
    uint8_t cut = data[0];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    struct gw_arena *a = gw_arena_create(4096);
    const char *whole;
    size_t whole_len;

    struct gw_safety_req *st = gw_worker_safety_req_create(engine, UINT64_MAX, a, NULL, "f");
    int blocked = gw_worker_safety_scan(st, GW_SAFETY_OUTPUT, text, len, &whole, &whole_len);

    /* Streamed: a new request, the same rules. */
    struct gw_buf ev = {0}, out = {0}, streamed = {0};
    st = gw_worker_safety_req_create(engine, UINT64_MAX, a, NULL, "f");
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0;) {
        size_t n = fuzz_piece(cut, len - off);
        chunk(&ev, text + off, n);
        rc = gw_worker_safety_stream(st, ev.data, ev.len, fuzz_sink, &out);
        off += n;
    }
    if (rc == 0)
        rc = gw_worker_safety_stream(st, finish, sizeof(finish) - 1, fuzz_sink, &out);
    if (rc == 0)
        rc = gw_worker_safety_stream_end(st, fuzz_sink, &out);
    FUZZ_CHECK(rc == 0 || rc == GW_EPERM);

    bool error;
    stream_text(&out, &streamed, &error);
    FUZZ_CHECK(error == (rc == GW_EPERM));
    FUZZ_CHECK((blocked >= 0) == (rc == GW_EPERM));
    if (blocked < 0)
        FUZZ_CHECK(streamed.len == whole_len &&
                   (whole_len == 0 || memcmp(streamed.data, whole, whole_len) == 0));
    gw_buf_free(&ev);
    gw_buf_free(&out);
    gw_buf_free(&streamed);
    gw_arena_destroy(a);
    return 0;
}
