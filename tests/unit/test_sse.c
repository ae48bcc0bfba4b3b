/*
 * test_sse.c - the SSE relay: events leave as soon as they are complete,
 * whatever the upstream's read boundaries, and the usage chunk is read and
 * dropped only when the client did not ask for it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "worker/worker.h"

struct sink {
    struct gw_buf out;
    int emits;
};

static int
sink_emit(void *ctx, const char *data, size_t len)
{
    struct sink *s = ctx;

    s->emits++;
    return gw_buf_append(&s->out, data, len);
}

#define EV1 "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n"
#define EV2 "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":null}\n\n"
#define EVU                                                                                        \
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,"               \
    "\"total_tokens\":18}}\n\n"
#define DONE "data: [DONE]\n\n"

static void
feed_in_pieces(struct gw_sse *sse, const char *text, size_t piece)
{
    size_t len = strlen(text);

    for (size_t off = 0; off < len; off += piece)
        assert_int_equal(gw_worker_sse_feed(sse, text + off, off + piece > len ? len - off : piece),
                         0);
    assert_int_equal(gw_worker_sse_finish(sse), 0);
}

static void
usage_chunk_is_read_and_dropped_when_client_did_not_ask(void **state)
{
    /* Every split, down to one byte at a time, gives the same result. */
    for (size_t piece = 1; piece <= sizeof(EV1 EV2 EVU DONE); piece++) {
        struct sink s = {0};
        struct gw_sse sse;

        (void)state;
        gw_worker_sse_init(&sse, sink_emit, &s, true);
        feed_in_pieces(&sse, EV1 EV2 EVU DONE, piece);
        assert_string_equal(s.out.data, EV1 EV2 DONE);
        assert_true(sse.have_usage);
        assert_int_equal(sse.prompt_tokens, 11);
        assert_int_equal(sse.completion_tokens, 7);
        gw_worker_sse_fini(&sse);
        gw_buf_free(&s.out);
    }
}

static void
usage_chunk_is_kept_when_client_asked(void **state)
{
    struct sink s = {0};
    struct gw_sse sse;

    (void)state;
    gw_worker_sse_init(&sse, sink_emit, &s, false);
    feed_in_pieces(&sse, EV1 EVU DONE, 7);
    assert_string_equal(s.out.data, EV1 EVU DONE);
    assert_int_equal(sse.prompt_tokens, 11);
    gw_worker_sse_fini(&sse);
    gw_buf_free(&s.out);
}

static void
complete_events_are_emitted_without_waiting_for_more(void **state)
{
    struct sink s = {0};
    struct gw_sse sse;

    (void)state;
    gw_worker_sse_init(&sse, sink_emit, &s, true);
    assert_int_equal(gw_worker_sse_feed(&sse, EV1, strlen(EV1)), 0);
    assert_int_equal(s.out.len, strlen(EV1));
    /* Half an event is held; the rest releases it at once. */
    assert_int_equal(gw_worker_sse_feed(&sse, EV2, 10), 0);
    assert_int_equal(s.out.len, strlen(EV1));
    assert_int_equal(gw_worker_sse_feed(&sse, EV2 + 10, strlen(EV2) - 10), 0);
    assert_string_equal(s.out.data, EV1 EV2);
    gw_worker_sse_fini(&sse);
    gw_buf_free(&s.out);
}

static void
events_arriving_together_leave_in_one_write(void **state)
{
    struct sink s = {0};
    struct gw_sse sse;

    (void)state;
    gw_worker_sse_init(&sse, sink_emit, &s, true);
    assert_int_equal(gw_worker_sse_feed(&sse, EV1 EV2 DONE, strlen(EV1 EV2 DONE)), 0);
    assert_int_equal(s.emits, 1);
    gw_worker_sse_fini(&sse);
    gw_buf_free(&s.out);
}

static void
crlf_delimited_events_are_recognised(void **state)
{
    const char *in = "data: {\"x\":1}\r\n\r\n"
                     "data: {\"choices\":[],\"usage\": {\"prompt_tokens\":3,"
                     "\"completion_tokens\":4}}\r\n\r\n";
    struct sink s = {0};
    struct gw_sse sse;

    (void)state;
    gw_worker_sse_init(&sse, sink_emit, &s, true);
    feed_in_pieces(&sse, in, 5);
    assert_string_equal(s.out.data, "data: {\"x\":1}\r\n\r\n");
    assert_int_equal(sse.completion_tokens, 4);
    gw_worker_sse_fini(&sse);
    gw_buf_free(&s.out);
}

static void
a_truncated_last_event_is_still_forwarded(void **state)
{
    struct sink s = {0};
    struct gw_sse sse;

    (void)state;
    gw_worker_sse_init(&sse, sink_emit, &s, true);
    assert_int_equal(gw_worker_sse_feed(&sse, EV1 "data: {\"par", strlen(EV1) + 11), 0);
    assert_int_equal(gw_worker_sse_finish(&sse), 0);
    assert_string_equal(s.out.data, EV1 "data: {\"par");
    gw_worker_sse_fini(&sse);
    gw_buf_free(&s.out);
}

static void
usage_with_content_is_forwarded(void **state)
{
    /* Some servers put usage on the last content chunk: never drop content. */
    const char *in = "data: {\"choices\":[{\"delta\":{\"content\":\"z\"}}],"
                     "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n";
    struct sink s = {0};
    struct gw_sse sse;

    (void)state;
    gw_worker_sse_init(&sse, sink_emit, &s, true);
    feed_in_pieces(&sse, in, 1000);
    assert_string_equal(s.out.data, in);
    assert_int_equal(sse.completion_tokens, 2);
    gw_worker_sse_fini(&sse);
    gw_buf_free(&s.out);
}

static void
usage_is_parsed_from_a_plain_response_body(void **state)
{
    const char *body = "{\"id\":\"x\",\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":9}}";
    int64_t p = -1, c = -1;

    (void)state;
    assert_true(gw_worker_usage_parse(body, strlen(body), &p, &c));
    assert_int_equal(p, 5);
    assert_int_equal(c, 9);
    assert_false(gw_worker_usage_parse("{\"usage\":null}", 14, &p, &c));
    assert_false(gw_worker_usage_parse("not json", 8, &p, &c));
}

/* The last "usage" key whose value is an object counts; one inside a
 * string, or whose value is no object, does not. */
static void
usage_is_the_last_usage_object_of_the_body(void **state)
{
    static const struct {
        const char *body;
        int64_t prompt, completion;
    } cases[] = {
        {"{\"choices\":[{\"message\":{\"content\":\"say \\\"usage\\\": {\\\"prompt_tokens\\\": "
         "99}\"}}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}",
         3, 4},
        {"{\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2},\"meta\":{\"usage\":\"text\"}}",
         1, 2},
        {"{\"a\":{\"usage\":{\"prompt_tokens\":7}},\"usage\" :\n "
         "{\"prompt_tokens\":8,\"total_tokens\":8}}",
         8, 0},
        {"{\"response\":{\"usage\":{\"input_tokens\":11,\"output_tokens\":12}}}", 11, 12},
        {"\"usage\"", -1, -1},
        {"usage\":{}", -1, -1},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t p = -1, c = -1;
        bool ok = gw_worker_usage_parse(cases[i].body, strlen(cases[i].body), &p, &c);
        assert_int_equal(ok, cases[i].prompt >= 0);
        assert_int_equal(p, cases[i].prompt);
        assert_int_equal(c, cases[i].completion);
    }
}

/* The one event boundary finder that the relay, the answer reassembly,
 * output safety and the Anthropic translation share. */
static void
event_end_is_past_the_blank_line_lf_or_crlf(void **state)
{
    static const struct {
        const char *in;
        size_t end;
    } cases[] = {
        {"", 0},
        {"\n", 0},
        {"\n\n", 2},
        {"data: a\n", 0},
        {"data: a\n\n", 9},
        {"data: a\r\n\r\n", 11},
        {"data: a\ndata: b\n\nrest", 17},
        {"data: a\r\n", 0},
        {": keep-alive\n\ndata: b\n\n", 14},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_int_equal(gw_worker_sse_event_end(cases[i].in, strlen(cases[i].in)), cases[i].end);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(event_end_is_past_the_blank_line_lf_or_crlf),
        cmocka_unit_test(usage_chunk_is_read_and_dropped_when_client_did_not_ask),
        cmocka_unit_test(usage_chunk_is_kept_when_client_asked),
        cmocka_unit_test(complete_events_are_emitted_without_waiting_for_more),
        cmocka_unit_test(events_arriving_together_leave_in_one_write),
        cmocka_unit_test(crlf_delimited_events_are_recognised),
        cmocka_unit_test(a_truncated_last_event_is_still_forwarded),
        cmocka_unit_test(usage_with_content_is_forwarded),
        cmocka_unit_test(usage_is_parsed_from_a_plain_response_body),
        cmocka_unit_test(usage_is_the_last_usage_object_of_the_body),
    };

    return cmocka_run_group_tests_name("sse", tests, NULL, NULL);
}
