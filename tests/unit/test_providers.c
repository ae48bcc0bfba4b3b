/*
 * test_providers.c - the provider adapters, one golden file per direction:
 * the OpenAI request into the provider's (URL, headers, body), the
 * provider's answer, error and stream back into OpenAI's.  Streams are fed
 * whole, a byte at a time and in uneven pieces, and must come out the
 * same.  Then AWS Signature V4 against AWS's published test suite and
 * documented example, and the event-stream framing.
 *
 * The golden files are in tests/unit/golden/: NAME.in.json is the
 * client's request, NAME.answer.json, NAME.error.json and NAME.stream.txt
 * what the provider sends (for bedrock, NAME.stream.txt lists the events,
 * "TYPE JSON" a line, encoded here), and NAME.*.golden what must come out.
 * GOLDEN_UPDATE=1 writes the .golden files instead of comparing: read the
 * diff before committing it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/worker.h"
#include "tests/unit/golden.h"

#define CREATED 1700000000 /* 2023-11-14T22:13:20Z */

struct fixture {
    struct gw_arena *arena;
    struct gw_request req;
    struct gw_gen_provider provider;
    struct gw_call call;
    char *body;
};

static void
fixture_init(struct fixture *fx, const char *name, enum gw_provider_type type, bool stream)
{
    char path[256];
    size_t len = 0;

    memset(fx, 0, sizeof(*fx));
    fx->arena = gw_arena_create(4096);
    fx->req.arena = fx->arena;
    snprintf(fx->req.id, sizeof(fx->req.id), "req-1");
    snprintf(path, sizeof(path), GOLDEN "%s.in.json", name);
    fx->body = slurp(path, &len);
    assert_non_null(fx->body);
    fx->req.body = fx->body;
    fx->req.body_len = len;
    fx->provider.type = type;
    fx->call = (struct gw_call){
        .req = &fx->req,
        .endpoint = GW_EP_CHAT,
        .type = type,
        .provider_name = "p",
        .base_url = "https://upstream.example/v1",
        .api_key = "test-key",
        .target_model = "target-model",
        .json = json_tokener_parse(fx->body),
        .stream = stream,
        .provider = &fx->provider,
        .created = CREATED,
    };
    assert_non_null(fx->call.json);
}

static void
fixture_fini(struct fixture *fx)
{
    gw_worker_headers_wipe(fx->call.headers);
    json_object_put(fx->call.json);
    gw_arena_destroy(fx->arena);
    free(fx->body);
}

/* NAME.request.golden: the URL, the headers, a blank line, the body. */
static void
request_check(const char *name, enum gw_provider_type type, bool stream, unsigned quirks)
{
    const struct gw_provider_adapter *ad = gw_worker_provider_adapter(type);
    struct fixture fx;
    struct gw_buf out = {0};
    char file[128];

    fixture_init(&fx, name, type, stream);
    fx.provider.quirks = quirks;
    if (type == GW_PROVIDER_BEDROCK)
        fx.call.api_key = "AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    assert_int_equal(ad->request(&fx.call), 0);
    gw_buf_printf(&out, "POST %s\n", fx.call.url);
    for (struct curl_slist *h = fx.call.headers; h != NULL; h = h->next)
        gw_buf_printf(&out, "%s\n", h->data);
    char *body = pretty(fx.call.body, fx.call.body_len);
    gw_buf_printf(&out, "\n%s\n", body);
    free(body);
    snprintf(file, sizeof(file), "%s.request.golden", name);
    golden_check(file, out.data, out.len);
    gw_buf_free(&out);
    fixture_fini(&fx);
}

/* NAME.answer.json through the adapter into NAME.answer.golden. */
static void
answer_check(const char *name, enum gw_provider_type type)
{
    const struct gw_provider_adapter *ad = gw_worker_provider_adapter(type);
    struct fixture fx;
    char path[256], file[128];
    const char *out;
    size_t len = 0, out_len;
    int64_t prompt = 0, completion = 0;

    fixture_init(&fx, name, type, false);
    snprintf(path, sizeof(path), GOLDEN "%s.answer.json", name);
    char *answer = slurp(path, &len);
    assert_non_null(answer);
    assert_int_equal(ad->response(&fx.call, answer, len, &out, &out_len), 0);
    /* What the gateway then accounts is read from the translated answer. */
    assert_true(gw_worker_usage_parse(out, out_len, &prompt, &completion));
    assert_true(prompt > 0 && completion > 0);
    char *p = pretty(out, out_len);
    size_t plen = strlen(p);
    p = realloc(p, plen + 2);
    p[plen] = '\n';
    p[plen + 1] = '\0';
    snprintf(file, sizeof(file), "%s.answer.golden", name);
    golden_check(file, p, plen + 1);
    free(p);
    free(answer);
    fixture_fini(&fx);
}

/* NAME.error.json (answered with status) into NAME.error.golden. */
static void
error_check(const char *name, enum gw_provider_type type, int status, int want_status)
{
    const struct gw_provider_adapter *ad = gw_worker_provider_adapter(type);
    struct fixture fx;
    char path[256], file[128];
    const char *out;
    size_t len = 0, out_len;

    fixture_init(&fx, name, type, false);
    snprintf(path, sizeof(path), GOLDEN "%s.error.json", name);
    char *err = slurp(path, &len);
    assert_non_null(err);
    assert_int_equal(ad->error(&fx.call, &status, err, len, &out, &out_len), 0);
    assert_int_equal(status, want_status);
    char *p = pretty(out, out_len);
    size_t plen = strlen(p);
    p = realloc(p, plen + 2);
    p[plen] = '\n';
    p[plen + 1] = '\0';
    snprintf(file, sizeof(file), "%s.error.golden", name);
    golden_check(file, p, plen + 1);
    free(p);
    free(err);
    fixture_fini(&fx);
}

static int
sink(void *ctx, const char *data, size_t len)
{
    return gw_buf_append(ctx, data, len);
}

/* "TYPE JSON" lines into event-stream messages; "!TYPE JSON" is an exception. */
static char *
evstream_build(const char *text, size_t *len)
{
    struct gw_buf b = {0};

    for (const char *line = text; *line;) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line) : strlen(line);
        const char *sp = memchr(line, ' ', n);
        if (n > 0 && sp != NULL) {
            bool exc = line[0] == '!';
            char type[64];
            snprintf(type, sizeof(type), "%.*s", (int)(sp - line - exc), line + exc);
            const char *names[] = {":message-type", exc ? ":exception-type" : ":event-type",
                                   ":content-type"};
            const char *values[] = {exc ? "exception" : "event", type, "application/json"};
            assert_int_equal(gw_worker_evstream_encode(&b, names, values, 3, sp + 1,
                                                       n - (size_t)(sp + 1 - line)),
                             0);
        }
        line += n + (nl != NULL);
    }
    *len = b.len;
    return b.data;
}

/*
 * NAME.stream.txt through the adapter's stream translation into
 * NAME.stream.golden; every way of cutting the input gives the same.
 * want_finish is what stream_finish must return.
 */
static void
stream_check(const char *name, enum gw_provider_type type, int want_finish)
{
    const struct gw_provider_adapter *ad = gw_worker_provider_adapter(type);
    char path[256], file[128];
    size_t len = 0;
    struct gw_buf first = {0};

    snprintf(path, sizeof(path), GOLDEN "%s.stream.txt", name);
    char *in = slurp(path, &len);
    assert_non_null(in);
    if (type == GW_PROVIDER_BEDROCK) {
        char *bin = evstream_build(in, &len);
        free(in);
        in = bin;
    }
    size_t pieces[] = {len, 1, 7, 64};
    for (size_t k = 0; k < sizeof(pieces) / sizeof(pieces[0]); k++) {
        struct fixture fx;
        struct gw_xstream xs;
        struct gw_buf out = {0};

        fixture_init(&fx, name, type, true);
        gw_worker_xstream_init(&xs, &fx.call, sink, &out);
        for (size_t off = 0; off < len; off += pieces[k])
            assert_int_equal(
                ad->stream_feed(&xs, in + off, off + pieces[k] > len ? len - off : pieces[k]), 0);
        assert_int_equal(ad->stream_finish(&xs), want_finish);
        if (k == 0) {
            gw_buf_append(&first, out.data, out.len);
        } else {
            assert_int_equal(out.len, first.len);
            assert_memory_equal(out.data, first.data, first.len);
        }
        gw_worker_xstream_fini(&xs);
        gw_buf_free(&out);
        fixture_fini(&fx);
    }
    snprintf(file, sizeof(file), "%s.stream.golden", name);
    golden_check(file, first.data, first.len);
    gw_buf_free(&first);
    free(in);
}

/* --------------------------------------------------------------- openai */

static void
openai_request_keeps_the_client_bytes(void **state)
{
    (void)state;
    request_check("openai_chat", GW_PROVIDER_OPENAI, true, 0);
}

static void
openai_preset_quirks_rename_max_tokens_and_drop_stream_options(void **state)
{
    (void)state;
    request_check("openai_quirks", GW_PROVIDER_OPENAI, true,
                  GW_QUIRK_MAX_TOKENS | GW_QUIRK_NO_STREAM_USAGE);
}

/* The header lines are in the request's arena, in the order added; a
 * provider's own (its credential) are wiped when the caller is done with
 * them, the request's others are left as they are. */
static void
header_lines_with_credentials_are_wiped(void **state)
{
    const struct gw_provider_adapter *ad = gw_worker_provider_adapter(GW_PROVIDER_OPENAI);
    struct fixture fx;

    (void)state;
    fixture_init(&fx, "openai_chat", GW_PROVIDER_OPENAI, true);
    assert_int_equal(ad->request(&fx.call), 0);
    assert_int_equal(gw_worker_call_header(&fx.call, "x-request-id: req-1", false), 0);
    struct curl_slist *auth = fx.call.headers, *last = auth;
    while (last->next != NULL)
        last = last->next;
    assert_string_equal(auth->data, "Authorization: Bearer test-key");
    assert_string_equal(last->data, "x-request-id: req-1");
    size_t n = strlen(auth->data);
    gw_worker_headers_wipe(fx.call.headers);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(auth->data[i], 0);
    assert_string_equal(last->data, "x-request-id: req-1");
    fx.call.headers = NULL;
    fixture_fini(&fx);
}

static void
azure_request_uses_deployment_url_and_api_key(void **state)
{
    (void)state;
    request_check("azure_chat", GW_PROVIDER_AZURE, false, 0);
}

/* ------------------------------------------------------------ anthropic */

static void
anthropic_request(void **state)
{
    (void)state;
    request_check("anthropic_chat", GW_PROVIDER_ANTHROPIC, false, 0);
    request_check("anthropic_stream", GW_PROVIDER_ANTHROPIC, true, 0);
}

static void
anthropic_answer(void **state)
{
    (void)state;
    answer_check("anthropic_chat", GW_PROVIDER_ANTHROPIC);
}

static void
anthropic_stream(void **state)
{
    (void)state;
    stream_check("anthropic_stream", GW_PROVIDER_ANTHROPIC, 0);
}

static void
anthropic_stream_error_event(void **state)
{
    (void)state;
    stream_check("anthropic_stream_error", GW_PROVIDER_ANTHROPIC, 0);
}

static void
anthropic_stream_cut_short_is_reported(void **state)
{
    (void)state;
    stream_check("anthropic_stream_cut", GW_PROVIDER_ANTHROPIC, GW_EPROTO);
}

static void
anthropic_overloaded_is_503(void **state)
{
    (void)state;
    error_check("anthropic_chat", GW_PROVIDER_ANTHROPIC, 529, 503);
}

/* --------------------------------------------------------------- gemini */

static void
gemini_request(void **state)
{
    (void)state;
    request_check("gemini_chat", GW_PROVIDER_GEMINI, false, 0);
    request_check("gemini_stream", GW_PROVIDER_GEMINI, true, 0);
}

static void
gemini_answer(void **state)
{
    (void)state;
    answer_check("gemini_chat", GW_PROVIDER_GEMINI);
}

static void
gemini_stream(void **state)
{
    (void)state;
    stream_check("gemini_stream", GW_PROVIDER_GEMINI, 0);
}

static void
gemini_error(void **state)
{
    (void)state;
    error_check("gemini_chat", GW_PROVIDER_GEMINI, 400, 400);
}

/* -------------------------------------------------------------- bedrock */

static void
bedrock_request_is_signed(void **state)
{
    (void)state;
    request_check("bedrock_chat", GW_PROVIDER_BEDROCK, false, 0);
}

static void
bedrock_answer(void **state)
{
    (void)state;
    answer_check("bedrock_chat", GW_PROVIDER_BEDROCK);
}

static void
bedrock_stream(void **state)
{
    (void)state;
    stream_check("bedrock_stream", GW_PROVIDER_BEDROCK, 0);
}

static void
bedrock_stream_exception(void **state)
{
    (void)state;
    stream_check("bedrock_stream_exception", GW_PROVIDER_BEDROCK, 0);
}

static void
bedrock_error(void **state)
{
    (void)state;
    error_check("bedrock_chat", GW_PROVIDER_BEDROCK, 429, 429);
}

/* ---------------------------------------------------------------- SigV4 */

static const struct gw_sigv4 suite = {
    .access_key = "AKIDEXAMPLE",
    .secret_key = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    .region = "us-east-1",
    .service = "service",
    .amz_date = "20150830T123600Z",
};

#define SUITE_PREFIX                                                                               \
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "            \
    "SignedHeaders=host;x-amz-date, Signature="

/* aws-sig-v4-test-suite: get-vanilla, get-vanilla-query-order-key-case, post-vanilla. */
static void
sigv4_matches_the_aws_test_suite(void **state)
{
    const char *headers[] = {"host:example.amazonaws.com", "x-amz-date:20150830T123600Z"};
    char auth[GW_SIGV4_AUTH_MAX];

    (void)state;
    assert_int_equal(
        gw_worker_sigv4_sign(&suite, "GET", "/", NULL, headers, 2, "", 0, auth, sizeof(auth)), 0);
    assert_string_equal(auth, SUITE_PREFIX
                        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
    assert_int_equal(gw_worker_sigv4_sign(&suite, "GET", "/", "Param2=value2&Param1=value1",
                                          headers, 2, "", 0, auth, sizeof(auth)),
                     0);
    assert_string_equal(auth, SUITE_PREFIX
                        "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
    assert_int_equal(
        gw_worker_sigv4_sign(&suite, "POST", "/", NULL, headers, 2, "", 0, auth, sizeof(auth)), 0);
    assert_string_equal(auth, SUITE_PREFIX
                        "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
}

static void
hexify(const unsigned char *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", in[i]);
}

/* The IAM ListUsers example of AWS's SigV4 documentation, step by step. */
static void
sigv4_matches_the_documented_example(void **state)
{
    const char *headers[] = {"content-type:application/x-www-form-urlencoded; charset=utf-8",
                             "host:iam.amazonaws.com", "x-amz-date:20150830T123600Z"};
    struct gw_sigv4 k = suite;
    struct gw_arena *a = gw_arena_create(1024);
    unsigned char key[32];
    char hex[65], auth[GW_SIGV4_AUTH_MAX];

    (void)state;
    k.service = "iam";
    char *creq = gw_worker_sigv4_canonical(
        a, "GET", "/", "Action=ListUsers&Version=2010-05-08", headers, 3,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_string_equal(creq, "GET\n/\nAction=ListUsers&Version=2010-05-08\n"
                              "content-type:application/x-www-form-urlencoded; charset=utf-8\n"
                              "host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
                              "content-type;host;x-amz-date\n"
                              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    gw_worker_sigv4_key(k.secret_key, "20150830", "us-east-1", "iam", key);
    hexify(key, 32, hex);
    assert_string_equal(hex, "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9");
    assert_int_equal(gw_worker_sigv4_sign(&k, "GET", "/", "Action=ListUsers&Version=2010-05-08",
                                          headers, 3, "", 0, auth, sizeof(auth)),
                     0);
    assert_string_equal(auth, "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/"
                              "aws4_request, SignedHeaders=content-type;host;x-amz-date, "
                              "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924"
                              "a6f2b5d7");
    gw_arena_destroy(a);
}

/* A path sent percent-encoded is signed encoded once more (not S3). */
static void
sigv4_encodes_the_sent_path_again(void **state)
{
    const char *headers[] = {"host:h"};
    struct gw_arena *a = gw_arena_create(1024);

    (void)state;
    char *creq =
        gw_worker_sigv4_canonical(a, "POST", "/model/a%3A0/converse", NULL, headers, 1, "x");
    assert_non_null(strstr(creq, "\n/model/a%253A0/converse\n"));
    gw_arena_destroy(a);
}

/* --------------------------------------------------------- event stream */

static void
evstream_round_trip_and_partial_input(void **state)
{
    const char *names[] = {":event-type", ":message-type"};
    const char *values[] = {"contentBlockDelta", "event"};
    struct gw_buf b = {0};
    struct gw_evstream_msg m;

    (void)state;
    assert_int_equal(gw_worker_evstream_encode(&b, names, values, 2, "{\"a\":1}", 7), 0);
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(gw_worker_evstream_decode(b.data, n, &m), 0);
    assert_int_equal(gw_worker_evstream_decode(b.data, b.len, &m), (long)b.len);
    assert_int_equal(m.event_type_len, 17);
    assert_memory_equal(m.event_type, "contentBlockDelta", 17);
    assert_memory_equal(m.message_type, "event", 5);
    assert_int_equal(m.payload_len, 7);
    assert_memory_equal(m.payload, "{\"a\":1}", 7);
    gw_buf_free(&b);
}

static void
evstream_refuses_a_bad_crc(void **state)
{
    const char *names[] = {":event-type"};
    const char *values[] = {"messageStop"};
    struct gw_buf b = {0};
    struct gw_evstream_msg m;

    (void)state;
    assert_int_equal(gw_worker_evstream_encode(&b, names, values, 1, "{}", 2), 0);
    b.data[b.len - 6] ^= 1; /* the payload */
    assert_int_equal(gw_worker_evstream_decode(b.data, b.len, &m), GW_EPROTO);
    b.data[b.len - 6] ^= 1;
    b.data[2] ^= 1; /* the prelude */
    assert_int_equal(gw_worker_evstream_decode(b.data, b.len, &m), GW_EPROTO);
    gw_buf_free(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(openai_request_keeps_the_client_bytes),
        cmocka_unit_test(openai_preset_quirks_rename_max_tokens_and_drop_stream_options),
        cmocka_unit_test(header_lines_with_credentials_are_wiped),
        cmocka_unit_test(azure_request_uses_deployment_url_and_api_key),
        cmocka_unit_test(anthropic_request),
        cmocka_unit_test(anthropic_answer),
        cmocka_unit_test(anthropic_stream),
        cmocka_unit_test(anthropic_stream_error_event),
        cmocka_unit_test(anthropic_stream_cut_short_is_reported),
        cmocka_unit_test(anthropic_overloaded_is_503),
        cmocka_unit_test(gemini_request),
        cmocka_unit_test(gemini_answer),
        cmocka_unit_test(gemini_stream),
        cmocka_unit_test(gemini_error),
        cmocka_unit_test(bedrock_request_is_signed),
        cmocka_unit_test(bedrock_answer),
        cmocka_unit_test(bedrock_stream),
        cmocka_unit_test(bedrock_stream_exception),
        cmocka_unit_test(bedrock_error),
        cmocka_unit_test(sigv4_matches_the_aws_test_suite),
        cmocka_unit_test(sigv4_matches_the_documented_example),
        cmocka_unit_test(sigv4_encodes_the_sent_path_again),
        cmocka_unit_test(evstream_round_trip_and_partial_input),
        cmocka_unit_test(evstream_refuses_a_bad_crc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
