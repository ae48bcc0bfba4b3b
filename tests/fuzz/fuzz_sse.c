/*
 * fuzz_sse.c - the server-sent-events relay (worker/sse.c), fed what a
 * provider streams: the events, the usage chunk at the end, whatever it
 * sends instead.
 *
 * Promises checked, the input cut whole, a byte at a time and as the
 * first byte says:
 * - the client gets the same bytes and the relay reads the same usage and
 *   counts the same events however the input was cut;
 * - unless the usage chunk is dropped, the client gets exactly the bytes
 *   the provider sent;
 * - the usage read by bytes from a whole body is json-c's.
 */
#include <json-c/json.h>

#include "tests/fuzz/fuzz.h"
#include "worker/worker.h"

struct result {
    struct gw_buf out;
    bool have_usage;
    int64_t prompt, completion;
    size_t events;
    int64_t generated;
};

static void
relay(const char *data, size_t len, size_t cut, bool drop_usage, struct result *r)
{
    struct gw_sse s;

    memset(r, 0, sizeof(*r));
    gw_worker_sse_init(&s, fuzz_sink, &r->out, drop_usage);
    for (size_t off = 0; off < len;) {
        size_t n = fuzz_piece((uint8_t)cut, len - off);
        FUZZ_CHECK(gw_worker_sse_feed(&s, data + off, n) == 0);
        off += n;
    }
    FUZZ_CHECK(gw_worker_sse_finish(&s) == 0);
    r->have_usage = s.have_usage;
    r->prompt = s.prompt_tokens;
    r->completion = s.completion_tokens;
    r->events = s.events;
    r->generated = s.generated;
    gw_worker_sse_fini(&s);
}

static bool
same(const struct result *a, const struct result *b)
{
    return fuzz_same(&a->out, &b->out) && a->have_usage == b->have_usage &&
           (!a->have_usage || (a->prompt == b->prompt && a->completion == b->completion)) &&
           a->events == b->events && a->generated == b->generated;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t cut = data[0];
    bool drop_usage = cut & 1;
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    struct result whole, bytes, pieces;

    relay(in, len, 0, drop_usage, &whole);
    relay(in, len, 1, drop_usage, &bytes);
    relay(in, len, cut, drop_usage, &pieces);
    FUZZ_CHECK(same(&whole, &bytes));
    FUZZ_CHECK(same(&whole, &pieces));
    if (!drop_usage)
        FUZZ_CHECK(whole.out.len == len && (len == 0 || memcmp(whole.out.data, in, len) == 0));
    else
        FUZZ_CHECK(whole.out.len <= len);
    gw_buf_free(&whole.out);
    gw_buf_free(&bytes.out);
    gw_buf_free(&pieces.out);

    /* A whole answer's usage, read by bytes, against json-c. */
    int64_t prompt = -1, completion = -1;
    struct json_tokener *tok = json_tokener_new();
    struct json_object *o = json_tokener_parse_ex(tok, in, (int)len), *u, *v;
    bool whole_body = o != NULL && json_tokener_get_parse_end(tok) == len;
    json_tokener_free(tok);
    if (gw_worker_usage_parse(in, len, &prompt, &completion) && whole_body &&
        memchr(in, 0, len) == NULL && json_object_object_get_ex(o, "usage", &u) &&
        json_object_object_get_ex(u, "prompt_tokens", &v) && json_object_is_type(v, json_type_int))
        FUZZ_CHECK(prompt == json_object_get_int64(v));
    json_object_put(o);
    return 0;
}
