/*
 * test_messages.c - the inbound Anthropic Messages API translations
 * (worker/providers/inbound_anthropic.c), one golden file per direction:
 * the client's Anthropic request into the canonical OpenAI chat request,
 * and the OpenAI answer, error and stream back into Anthropic's.  Streams
 * are fed whole, a byte at a time and in uneven pieces, and must come out
 * the same.  Then the request validation and the status mapping.
 *
 * Files in tests/unit/golden/: messages_NAME.in.json (the client's
 * request), .answer.json, .error.json, .stream.txt (what the pipeline
 * answers, in OpenAI's shapes) and .golden (what must come out).
 * GOLDEN_UPDATE=1 writes the .golden files instead of comparing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/messages.h"
#include "tests/unit/golden.h"

static char *
input(const char *name, size_t *len)
{
    char path[256];
    char *s;

    snprintf(path, sizeof(path), GOLDEN "%s", name);
    s = slurp(path, len);
    if (s == NULL)
        fail_msg("no input file %s", path);
    return s;
}

static struct json_object *
parse(const char *s)
{
    struct json_object *o = json_tokener_parse(s);

    assert_non_null(o);
    return o;
}

/* --------------------------------------------------------------- request */

static void
request_golden(const char *name)
{
    char file[128], err[256] = "";
    size_t len;
    char *text;
    struct json_object *in, *out = NULL;

    snprintf(file, sizeof(file), "%s.in.json", name);
    text = input(file, &len);
    in = parse(text);
    if (gw_worker_messages_request(in, &out, err, sizeof(err)) != 0)
        fail_msg("%s refused: %s", file, err);
    const char *s = json_object_to_json_string_ext(out, PRETTY);
    snprintf(file, sizeof(file), "%s.request.golden", name);
    golden_check(file, s, strlen(s));
    json_object_put(out);
    json_object_put(in);
    free(text);
}

static void
test_request_full(void **state)
{
    (void)state;
    request_golden("messages_full");
}

static void
test_request_stream(void **state)
{
    (void)state;
    request_golden("messages_stream");
}

/* Requests Anthropic refuses are refused, saying why. */
static void
test_request_invalid(void **state)
{
    static const struct {
        const char *body;
        const char *says;
    } cases[] = {
        {"{\"max_tokens\":8,\"messages\":[]}", "model"},
        {"{\"model\":\"m\",\"messages\":[]}", "max_tokens"},
        {"{\"model\":\"m\",\"max_tokens\":0,\"messages\":[]}", "max_tokens"},
        {"{\"model\":\"m\",\"max_tokens\":\"8\",\"messages\":[]}", "max_tokens"},
        {"{\"model\":\"m\",\"max_tokens\":8}", "messages"},
        {"{\"model\":\"m\",\"max_tokens\":8,\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]"
         "}",
         "messages.0.role"},
        {"{\"model\":\"m\",\"max_tokens\":8,\"messages\":[{\"role\":\"user\"}]}",
         "messages.0.content"},
        {"{\"model\":\"m\",\"max_tokens\":8,\"messages\":[],\"system\":7}", "system"},
        {"{\"model\":\"m\",\"max_tokens\":8,\"messages\":[],\"temperature\":\"hot\"}",
         "temperature"},
        {"{\"model\":\"m\",\"max_tokens\":8,\"messages\":[],\"stream\":\"yes\"}", "stream"},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_object *in = parse(cases[i].body), *out = NULL;
        char err[256] = "";
        assert_int_equal(gw_worker_messages_request(in, &out, err, sizeof(err)), GW_EINVAL);
        assert_null(out);
        if (strstr(err, cases[i].says) == NULL)
            fail_msg("case %zu: \"%s\" does not name %s", i, err, cases[i].says);
        json_object_put(in);
    }
}

/* ---------------------------------------------------------------- answer */

static void
test_answer_full(void **state)
{
    struct gw_arena *a = gw_arena_create(4096);
    size_t len, out_len;
    const char *out;
    char *body = input("messages_full.answer.json", &len);

    (void)state;
    assert_int_equal(gw_worker_messages_answer(a, body, len, "alias", &out, &out_len), 0);
    char *p = pretty(out, out_len);
    golden_check("messages_full.answer.golden", p, strlen(p));
    free(p);
    /* Not a chat completion: refused. */
    assert_int_equal(gw_worker_messages_answer(a, "{\"data\":[]}", 11, "m", &out, &out_len),
                     GW_EPROTO);
    free(body);
    gw_arena_destroy(a);
}

/* Each finish_reason's stop_reason. */
static void
test_answer_stop_reasons(void **state)
{
    static const char *const pairs[][2] = {
        {"stop", "end_turn"},
        {"length", "max_tokens"},
        {"tool_calls", "tool_use"},
        {"content_filter", "refusal"},
    };
    struct gw_arena *a = gw_arena_create(4096);

    (void)state;
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        char *body = gw_arena_printf(a,
                                     "{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"hi\"},"
                                     "\"finish_reason\":\"%s\"}]}",
                                     pairs[i][0]);
        const char *out;
        size_t out_len;
        assert_int_equal(gw_worker_messages_answer(a, body, strlen(body), "m", &out, &out_len), 0);
        struct json_object *o = parse(out), *v;
        assert_true(json_object_object_get_ex(o, "stop_reason", &v));
        assert_string_equal(json_object_get_string(v), pairs[i][1]);
        json_object_put(o);
    }
    gw_arena_destroy(a);
}

/* ---------------------------------------------------------------- errors */

static void
test_error_golden(void **state)
{
    struct gw_arena *a = gw_arena_create(4096);
    size_t len, out_len;
    const char *out;
    char *body = input("messages_full.error.json", &len);
    int status;

    (void)state;
    assert_int_equal(gw_worker_messages_error(a, 429, body, len, &status, &out, &out_len), 0);
    assert_int_equal(status, 429);
    char *p = pretty(out, out_len);
    golden_check("messages_full.error.golden", p, strlen(p));
    free(p);
    free(body);
    gw_arena_destroy(a);
}

/* The status and type each status gets; a body that is no JSON is the message. */
static void
test_error_statuses(void **state)
{
    static const struct {
        int in, out;
        const char *type;
    } cases[] = {
        {400, 400, "invalid_request_error"},
        {401, 401, "authentication_error"},
        {403, 403, "permission_error"},
        {404, 404, "not_found_error"},
        {413, 413, "request_too_large"},
        {429, 429, "rate_limit_error"},
        {500, 500, "api_error"},
        {502, 502, "api_error"},
        {503, 529, "overloaded_error"},
        {504, 504, "timeout_error"},
    };
    struct gw_arena *a = gw_arena_create(4096);

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *out;
        size_t out_len;
        int status;
        assert_int_equal(
            gw_worker_messages_error(a, cases[i].in, "upstream down", 13, &status, &out, &out_len),
            0);
        assert_int_equal(status, cases[i].out);
        struct json_object *o = parse(out), *e, *v;
        assert_true(json_object_object_get_ex(o, "type", &v));
        assert_string_equal(json_object_get_string(v), "error");
        assert_true(json_object_object_get_ex(o, "error", &e));
        assert_true(json_object_object_get_ex(e, "type", &v));
        assert_string_equal(json_object_get_string(v), cases[i].type);
        assert_true(json_object_object_get_ex(e, "message", &v));
        assert_string_equal(json_object_get_string(v), "upstream down");
        json_object_put(o);
    }
    gw_arena_destroy(a);
}

/* ---------------------------------------------------------------- stream */

/* Feed text in pieces of step bytes (0: whole), return the events made. */
static char *
stream_run(const char *text, size_t len, size_t step)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct gw_buf in = {0}, out = {0};
    struct gw_messages_stream s;
    char *result;

    gw_worker_messages_stream_init(&s, a, &in, "alias");
    for (size_t off = 0; off < len;) {
        size_t n = step == 0 || len - off < step ? len - off : step;
        /* Uneven pieces: 1, 2, 3, ... bytes when step is 7. */
        if (step == 7)
            n = 1 + off % 5 < len - off ? 1 + off % 5 : len - off;
        assert_int_equal(gw_worker_messages_stream_feed(&s, text + off, n, &out), 0);
        off += n;
    }
    assert_int_equal(gw_worker_messages_stream_finish(&s, &out), 0);
    result = strndup(out.data ? out.data : "", out.len);
    gw_buf_free(&in);
    gw_buf_free(&out);
    gw_arena_destroy(a);
    return result;
}

static void
stream_golden(const char *name)
{
    char file[128];
    size_t len;
    char *text, *whole;

    snprintf(file, sizeof(file), "%s.stream.txt", name);
    text = input(file, &len);
    whole = stream_run(text, len, 0);
    snprintf(file, sizeof(file), "%s.stream.golden", name);
    golden_check(file, whole, strlen(whole));
    for (size_t step = 1; step <= 7; step += 6) {
        char *pieces = stream_run(text, len, step);
        assert_string_equal(pieces, whole);
        free(pieces);
    }
    free(whole);
    free(text);
}

static void
test_stream_text_and_tools(void **state)
{
    (void)state;
    stream_golden("messages_stream");
}

static void
test_stream_error(void **state)
{
    (void)state;
    stream_golden("messages_stream_error");
}

/* A stream cut before its finish_reason gets no message_stop of its own;
 * one that ends without [DONE] but finished does. */
static void
test_stream_endings(void **state)
{
    static const char cut[] =
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n";
    static const char finished[] =
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n"
        "data: "
        "{\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}";
    char *s;

    (void)state;
    s = stream_run(cut, sizeof(cut) - 1, 0);
    assert_null(strstr(s, "message_stop"));
    assert_non_null(strstr(s, "event: content_block_delta"));
    free(s);
    s = stream_run(finished, sizeof(finished) - 1, 0);
    assert_non_null(strstr(s, "\"stop_reason\":\"max_tokens\""));
    assert_non_null(strstr(s, "event: message_stop"));
    /* No usage came: the deltas stand for the output tokens. */
    assert_non_null(strstr(s, "\"output_tokens\":1"));
    free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_full),        cmocka_unit_test(test_request_stream),
        cmocka_unit_test(test_request_invalid),     cmocka_unit_test(test_answer_full),
        cmocka_unit_test(test_answer_stop_reasons), cmocka_unit_test(test_error_golden),
        cmocka_unit_test(test_error_statuses),      cmocka_unit_test(test_stream_text_and_tools),
        cmocka_unit_test(test_stream_error),        cmocka_unit_test(test_stream_endings),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
