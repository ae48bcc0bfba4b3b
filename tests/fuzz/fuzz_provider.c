/*
 * fuzz_provider.c - what the provider adapters (worker/providers/) make of
 * what Anthropic, Gemini and Bedrock send back: a whole answer, an error,
 * a stream (server-sent events; Bedrock's binary event stream).  A
 * provider that misbehaves, or a proxy in between that mangles its
 * answer, must get the client an answer in OpenAI's shape or an error,
 * never a crash or broken JSON.
 *
 * The input's first byte picks the adapter and what is fed (an answer, an
 * error and its status, a stream cut as the second byte says, or the
 * client's request to translate for the provider).
 *
 * Promises checked:
 * - a client's request becomes the provider's: a URL and a JSON object;
 * - a translated answer or error is one JSON object; an error's status is
 *   4xx or 5xx;
 * - a translated stream ends the same way however the provider's bytes
 *   were cut, and is the same unless it failed; each of its events is
 *   "data: " and a JSON object, or "data: [DONE]".
 */
#include <json-c/json.h>

#include "tests/fuzz/fuzz.h"
#include "worker/worker.h"

static const char request[] =
    "{\"model\":\"m\",\"stream\":true,\"max_tokens\":16,\"messages\":[{\"role\":\"user\","
    "\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\","
    "\"parameters\":{\"type\":\"object\"}}}]}";

struct fixture {
    struct gw_arena *arena;
    struct gw_request req;
    struct gw_gen_provider provider;
    struct gw_call call;
};

static void
fixture_init(struct fixture *fx, enum gw_provider_type type, bool stream)
{
    memset(fx, 0, sizeof(*fx));
    fx->arena = gw_arena_create(4096);
    fx->req.arena = fx->arena;
    strcpy(fx->req.id, "fuzz");
    fx->req.body = request;
    fx->req.body_len = sizeof(request) - 1;
    fx->provider.type = type;
    fx->call = (struct gw_call){
        .req = &fx->req,
        .endpoint = GW_EP_CHAT,
        .type = type,
        .provider_name = "p",
        .base_url = "https://upstream.example/v1",
        .target_model = "target-model",
        .json = json_tokener_parse(request),
        .stream = stream,
        .provider = &fx->provider,
        .created = 1700000000,
    };
}

static void
fixture_fini(struct fixture *fx)
{
    json_object_put(fx->call.json);
    gw_arena_destroy(fx->arena);
}

static int
translate_stream(const struct gw_provider_adapter *ad, enum gw_provider_type type, const char *data,
                 size_t len, uint8_t cut, struct gw_buf *out)
{
    struct fixture fx;
    struct gw_xstream xs;
    int rc = 0;

    fixture_init(&fx, type, true);
    gw_worker_xstream_init(&xs, &fx.call, fuzz_sink, out);
    for (size_t off = 0; off < len && rc == 0;) {
        size_t n = fuzz_piece(cut, len - off);
        rc = ad->stream_feed(&xs, data + off, n);
        off += n;
    }
    if (rc == 0)
        rc = ad->stream_finish(&xs);
    gw_worker_xstream_fini(&xs);
    fixture_fini(&fx);
    return rc;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum gw_provider_type types[] = {GW_PROVIDER_ANTHROPIC, GW_PROVIDER_GEMINI,
                                                  GW_PROVIDER_BEDROCK, GW_PROVIDER_OPENAI};
    if (size < 2)
        return 0;
    gw_log_level = -1;
    enum gw_provider_type type = types[data[0] & 3];
    const struct gw_provider_adapter *ad = gw_worker_provider_adapter(type);
    int mode = (data[0] >> 2) % 4;
    const char *in = (const char *)data + 2;
    size_t len = size - 2;
    struct fixture fx;
    const char *out;
    size_t out_len;

    /* OpenAI's answers need no translation: its adapter has only the
     * request. */
    if (type == GW_PROVIDER_OPENAI && mode != 3)
        return 0;
    if (mode == 0) {
        fixture_init(&fx, type, false);
        if (ad->response(&fx.call, in, len, &out, &out_len) == 0)
            FUZZ_CHECK(fuzz_is_object(out, out_len));
        fixture_fini(&fx);
    } else if (mode == 1) {
        int status = 400 + data[1] % 200;
        fixture_init(&fx, type, false);
        if (ad->error(&fx.call, &status, in, len, &out, &out_len) == 0) {
            FUZZ_CHECK(status >= 400 && status <= 599);
            FUZZ_CHECK(fuzz_is_object(out, out_len));
        }
        fixture_fini(&fx);
    } else if (mode == 3) {
        /* The client's request, as the pipeline lets it through (a JSON
         * object), into the provider's. */
        fixture_init(&fx, type, data[1] & 1);
        json_object_put(fx.call.json);
        fx.req.body = in;
        fx.req.body_len = len;
        fx.call.json = NULL;
        struct json_object *o = gw_worker_call_json(&fx.call);
        if (json_object_object_length(o) > 0) {
            if (type == GW_PROVIDER_BEDROCK)
                fx.call.api_key = "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
            if (ad->request(&fx.call) == 0)
                FUZZ_CHECK(fx.call.url != NULL && fuzz_is_object(fx.call.body, fx.call.body_len));
        }
        gw_worker_headers_wipe(fx.call.headers);
        fixture_fini(&fx);
    } else {
        struct gw_buf whole = {0}, bytes = {0}, pieces = {0};
        int a = translate_stream(ad, type, in, len, 0, &whole);
        int b = translate_stream(ad, type, in, len, 1, &bytes);
        int c = translate_stream(ad, type, in, len, data[1], &pieces);
        /* A stream that fails may fail after more or fewer events,
         * depending on where its bytes were cut; one that does not is
         * the same whatever the cut. */
        FUZZ_CHECK(a == b && a == c);
        if (a == 0)
            FUZZ_CHECK(fuzz_same(&whole, &bytes) && fuzz_same(&whole, &pieces));
        fuzz_openai_events(&whole);
        fuzz_openai_events(&bytes);
        gw_buf_free(&whole);
        gw_buf_free(&bytes);
        gw_buf_free(&pieces);
    }
    return 0;
}
