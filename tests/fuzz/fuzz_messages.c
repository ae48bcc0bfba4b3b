/*
 * fuzz_messages.c - Anthropic's Messages API spoken to clients
 * (worker/providers/inbound_anthropic.c): the client's request turned into
 * an OpenAI chat request, and the answer, an error or a stream turned
 * back into Anthropic's shapes.  The request comes from any client; the
 * answers from any provider, through the other adapters.
 *
 * The input's first byte picks what is fed, the second how a stream is cut.
 *
 * Promises checked:
 * - a request is either translated into an object with "model" and a
 *   "messages" array, or refused with a message;
 * - an answer or an error becomes one JSON object (an error with a 4xx or
 *   5xx status);
 * - a stream becomes the same events however it was cut, each "event: "
 *   a name, then "data: " and a JSON object.
 */
#include <json-c/json.h>

#include "tests/fuzz/fuzz.h"
#include "worker/messages.h"
#include "worker/worker.h"

/* "event: NAME\ndata: {...}\n\n", over and over. */
static void
events_check(const struct gw_buf *out)
{
    if (out->len == 0)
        return;
    const char *p = out->data, *end = out->data + out->len;

    while (p < end) {
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        FUZZ_CHECK(e != NULL);
        FUZZ_CHECK((size_t)(e - p) > 7 && memcmp(p, "event: ", 7) == 0);
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        FUZZ_CHECK(nl != NULL && (size_t)(e - nl) > 7 && memcmp(nl + 1, "data: ", 6) == 0);
        FUZZ_CHECK(fuzz_is_object(nl + 7, (size_t)(e - nl - 7)));
        p = e + 2;
    }
}

static int
translate_stream(const char *data, size_t len, uint8_t cut, struct gw_buf *out)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct gw_buf in = {0};
    struct gw_messages_stream s;
    int rc = 0;

    gw_worker_messages_stream_init(&s, a, &in, "claude-fuzz");
    for (size_t off = 0; off < len && rc == 0;) {
        size_t n = fuzz_piece(cut, len - off);
        rc = gw_worker_messages_stream_feed(&s, data + off, n, out);
        off += n;
    }
    if (rc == 0)
        rc = gw_worker_messages_stream_finish(&s, out);
    gw_buf_free(&in);
    gw_arena_destroy(a);
    return rc;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    gw_log_level = -1;
    const char *in = (const char *)data + 2;
    size_t len = size - 2;
    struct gw_arena *a = gw_arena_create(4096);
    const char *out;
    size_t out_len;

    switch (data[0] % 4) {
    case 0: {
        struct json_object *req = fuzz_json(in, len), *o = NULL, *v;
        char err[256] = "";
        if (req != NULL && json_object_is_type(req, json_type_object)) {
            if (gw_worker_messages_request(req, &o, err, sizeof(err)) == 0) {
                FUZZ_CHECK(json_object_is_type(o, json_type_object));
                FUZZ_CHECK(json_object_object_get_ex(o, "messages", &v) &&
                           json_object_is_type(v, json_type_array));
                FUZZ_CHECK(json_object_to_json_string(o) != NULL);
                json_object_put(o);
            } else {
                FUZZ_CHECK(err[0] != '\0');
            }
        }
        json_object_put(req);
        break;
    }
    case 1:
        if (gw_worker_messages_answer(a, in, len, "claude-fuzz", &out, &out_len) == 0)
            FUZZ_CHECK(fuzz_is_object(out, out_len));
        break;
    case 2: {
        int status = 0;
        if (gw_worker_messages_error(a, 400 + data[1] % 200, in, len, &status, &out, &out_len) ==
            0) {
            FUZZ_CHECK(status >= 400 && status <= 599);
            FUZZ_CHECK(fuzz_is_object(out, out_len));
        }
        break;
    }
    default: {
        struct gw_buf whole = {0}, bytes = {0}, pieces = {0};
        int x = translate_stream(in, len, 0, &whole);
        int y = translate_stream(in, len, 1, &bytes);
        int z = translate_stream(in, len, data[1], &pieces);
        FUZZ_CHECK(x == y && x == z);
        if (x == 0)
            FUZZ_CHECK(fuzz_same(&whole, &bytes) && fuzz_same(&whole, &pieces));
        events_check(&whole);
        gw_buf_free(&whole);
        gw_buf_free(&bytes);
        gw_buf_free(&pieces);
        break;
    }
    }
    gw_arena_destroy(a);
    return 0;
}
