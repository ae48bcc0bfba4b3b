/*
 * test_cache.c - the response cache: the canonical request hash (equal for
 * the same request however its JSON is written, different for any change
 * that can change the answer), the deterministic rule, a stream put back
 * together (content, tool calls, several choices) and replayed, and the
 * LMDB store (get, ttl, the size bound, purge by model).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "worker/worker.h"

static void
hash_of(const char *json, enum gw_endpoint ep, unsigned char out[GW_CACHE_HASH_LEN])
{
    struct json_object *o = json_tokener_parse(json);

    assert_non_null(o);
    gw_worker_cache_key(o, ep, out);
    json_object_put(o);
}

static bool
same(const char *a, const char *b)
{
    unsigned char ha[GW_CACHE_HASH_LEN], hb[GW_CACHE_HASH_LEN];

    hash_of(a, GW_EP_CHAT, ha);
    hash_of(b, GW_EP_CHAT, hb);
    return memcmp(ha, hb, sizeof(ha)) == 0;
}

#define BASE                                                                                       \
    "\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"temperature\":0,"     \
    "\"max_tokens\":10"

static void
reordered_keys_and_number_spellings_hash_equal(void **state)
{
    (void)state;
    assert_true(same("{" BASE "}", "{\"max_tokens\":10,\"temperature\":0,\"messages\":[{"
                                   "\"content\":\"hi\",\"role\":\"user\"}],\"model\":\"m\"}"));
    assert_true(same("{" BASE "}", "{ \"model\" : \"m\", \"messages\": [ {\"role\": \"user\", "
                                   "\"content\": \"hi\"} ], \"temperature\": 0.0, "
                                   "\"max_tokens\": 1e1 }"));
    /* nested objects are sorted too */
    assert_true(same("{" BASE ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{"
                     "\"name\":\"a\",\"strict\":true}}}",
                     "{" BASE ",\"response_format\":{\"json_schema\":{\"strict\":true,\"name\":"
                     "\"a\"},\"type\":\"json_schema\"}}"));
}

static void
delivery_and_caller_do_not_change_the_hash(void **state)
{
    (void)state;
    assert_true(same("{" BASE "}", "{" BASE ",\"stream\":true}"));
    assert_true(same("{" BASE "}", "{" BASE ",\"stream\":false,\"stream_options\":{"
                                   "\"include_usage\":true}}"));
    assert_true(same("{" BASE "}", "{" BASE ",\"user\":\"someone\"}"));
    /* only at the top level: a "user" inside a message is content */
    assert_false(same("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
                      "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\","
                      "\"user\":\"x\"}]}"));
}

static void
every_answer_changing_parameter_changes_the_hash(void **state)
{
    static const char *const variants[] = {
        "{\"model\":\"m2\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"temperature\":0,\"max_tokens\":10}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi!\"}],"
        "\"temperature\":0,\"max_tokens\":10}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"hi\"}],"
        "\"temperature\":0,\"max_tokens\":10}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":"
        "\"user\",\"content\":\"hi\"}],\"temperature\":0,\"max_tokens\":10}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"temperature\":0.1,\"max_tokens\":10}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"temperature\":0,\"max_tokens\":11}",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"temperature\":0}",
        "{" BASE ",\"top_p\":0.5}",
        "{" BASE ",\"seed\":1}",
        "{" BASE ",\"stop\":[\"x\"]}",
        "{" BASE ",\"n\":2}",
        "{" BASE ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\"}}]}",
        "{" BASE ",\"tool_choice\":\"none\"}",
        "{" BASE ",\"response_format\":{\"type\":\"json_object\"}}",
        "{" BASE ",\"frequency_penalty\":0.5}",
        "{" BASE ",\"logit_bias\":{\"50256\":-100}}",
        "{" BASE ",\"max_tokens\":\"10\"}",
        "{" BASE ",\"temperature\":null}",
    };
    unsigned char h[sizeof(variants) / sizeof(variants[0]) + 1][GW_CACHE_HASH_LEN];

    (void)state;
    hash_of("{" BASE "}", GW_EP_CHAT, h[0]);
    for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
        hash_of(variants[i], GW_EP_CHAT, h[i + 1]);
        for (size_t j = 0; j <= i; j++)
            if (memcmp(h[i + 1], h[j], GW_CACHE_HASH_LEN) == 0)
                fail_msg("variant %zu hashes like %zu: %s", i, j, variants[i]);
    }
    /* the endpoint is part of the key */
    unsigned char e[GW_CACHE_HASH_LEN];
    hash_of("{" BASE "}", GW_EP_EMBEDDINGS, e);
    assert_memory_not_equal(e, h[0], GW_CACHE_HASH_LEN);
    /* strings are length-prefixed: no two splits of the same bytes meet */
    assert_false(same("{\"a\":\"bc\",\"d\":\"\"}", "{\"a\":\"b\",\"d\":\"c\"}"));
    assert_false(same("{\"a\":[\"x\",\"y\"]}", "{\"a\":[\"xy\"]}"));
}

static void
deterministic_means_temperature_zero_or_a_seed(void **state)
{
    static const struct {
        const char *json;
        bool want;
    } cases[] = {
        {"{\"temperature\":0}", true},    {"{\"temperature\":0.0}", true},
        {"{\"seed\":3}", true},           {"{\"temperature\":1,\"seed\":3}", true},
        {"{\"temperature\":0.2}", false}, {"{}", false},
        {"{\"seed\":null}", false},       {"{\"temperature\":\"0\"}", false},
    };

    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_object *o = json_tokener_parse(cases[i].json);
        assert_int_equal(gw_worker_cache_deterministic(o), cases[i].want);
        json_object_put(o);
    }
}

/* Feed text to an answer in pieces of n bytes. */
static void
feed(struct gw_answer *an, const char *text, size_t n)
{
    size_t len = strlen(text);

    for (size_t off = 0; off < len; off += n)
        gw_worker_answer_feed(an, text + off, len - off < n ? len - off : n);
}

static const char tool_stream[] =
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"x\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,"
    "\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{"
    "\"name\":\"lookup\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"function\":{\"arguments\":\"{\\\"q\\\":\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,"
    "\"function\":{\"arguments\":\"\\\"é\\\"}\"}}]},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":1,\"delta\":{\"role\":\"assistant\","
    "\"content\":\"line\\none \"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":1,\"delta\":{\"content\":\"two\"},"
    "\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
    "\"tool_calls\"}]}\n\n"
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":1,\"delta\":{},\"finish_reason\":\"stop\"}]}"
    "\r\n\r\n"
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":"
    "4,\"total_tokens\":7}}\n\n"
    "data: [DONE]\n\n";

static void
a_stream_is_put_back_together_in_any_pieces(void **state)
{
    struct gw_arena *a = gw_arena_create(4096);

    (void)state;
    for (size_t piece = 1; piece <= sizeof(tool_stream); piece += 7) {
        struct gw_answer *an = gw_worker_answer_create(a);
        bool complete;
        size_t len;
        feed(an, tool_stream, piece);
        const char *text = gw_worker_answer_text(an, false, 0, 0, &len, &complete);
        assert_non_null(text);
        assert_true(complete);
        struct json_object *o = json_tokener_parse(text), *c0, *c1, *tc, *u;
        assert_non_null(o);
        assert_string_equal(json_object_get_string(json_object_object_get(o, "object")),
                            "chat.completion");
        assert_string_equal(json_object_get_string(json_object_object_get(o, "id")), "c1");
        c0 = json_object_array_get_idx(json_object_object_get(o, "choices"), 0);
        c1 = json_object_array_get_idx(json_object_object_get(o, "choices"), 1);
        assert_string_equal(json_object_get_string(json_object_object_get(c0, "finish_reason")),
                            "tool_calls");
        tc = json_object_array_get_idx(
            json_object_object_get(json_object_object_get(c0, "message"), "tool_calls"), 0);
        assert_string_equal(json_object_get_string(json_object_object_get(tc, "id")), "call_1");
        struct json_object *fn = json_object_object_get(tc, "function");
        assert_string_equal(json_object_get_string(json_object_object_get(fn, "name")), "lookup");
        assert_string_equal(json_object_get_string(json_object_object_get(fn, "arguments")),
                            "{\"q\":\"é\"}");
        assert_true(json_object_is_type(
            json_object_object_get(json_object_object_get(c0, "message"), "content"),
            json_type_null));
        assert_string_equal(json_object_get_string(json_object_object_get(
                                json_object_object_get(c1, "message"), "content")),
                            "line\none two");
        u = json_object_object_get(o, "usage");
        assert_int_equal(json_object_get_int(json_object_object_get(u, "total_tokens")), 7);
        json_object_put(o);
        gw_arena_reset(a);
    }
    gw_arena_destroy(a);
}

static void
a_stream_without_done_or_with_an_error_is_not_complete(void **state)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct gw_answer *an = gw_worker_answer_create(a);
    bool complete;
    size_t len;

    (void)state;
    feed(an, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n", 5);
    assert_non_null(gw_worker_answer_text(an, true, 1, 2, &len, &complete));
    assert_false(complete);
    feed(an,
         "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
         "data: {\"error\":{\"message\":\"cut\"}}\n\ndata: [DONE]\n\n",
         9);
    const char *text = gw_worker_answer_text(an, true, 1, 2, &len, &complete);
    assert_false(complete);
    /* the usage the relay read fills in a stream's missing usage chunk */
    assert_non_null(strstr(text, "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2"));
    gw_arena_destroy(a);
}

/* A stored answer text replays as a stream (into ev) that is put back
 * together as the same text. */
static void
assert_replays_to_itself(struct gw_arena *a, const char *text, size_t len, struct gw_buf *ev)
{
    struct gw_answer *back = gw_worker_answer_create(a);
    bool complete;
    size_t again_len;

    assert_int_equal(gw_worker_answer_replay(text, len, true, ev), 0);
    gw_worker_answer_feed(back, ev->data, ev->len);
    assert_string_equal(gw_worker_answer_text(back, false, 0, 0, &again_len, &complete), text);
    assert_true(complete);
}

static void
a_stored_answer_replays_as_the_same_stream_content(void **state)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct gw_answer *an = gw_worker_answer_create(a);
    struct gw_buf ev = {0};
    bool complete;
    size_t len;

    (void)state;
    feed(an, tool_stream, 64);
    const char *text = gw_worker_answer_text(an, false, 0, 0, &len, &complete);
    assert_replays_to_itself(a, text, len, &ev);
    /* content in pieces, never split inside a UTF-8 sequence */
    assert_non_null(strstr(ev.data, "{\"content\":\"line\\none \"}"));
    assert_non_null(strstr(ev.data, "\"choices\":[],\"usage\":{"));
    assert_string_equal(ev.data + ev.len - 14, "data: [DONE]\n\n");
    ev.len = 0;
    assert_int_equal(gw_worker_answer_replay("{\"no\":1}", 8, false, &ev), GW_EINVAL);
    gw_buf_free(&ev);
    gw_arena_destroy(a);
}

/* A stream may number its tool calls with gaps (index 2 after 0): the
 * answer has the calls it named, no empty ones in between, and replays
 * to itself. */
static void
tool_calls_numbered_with_gaps_are_kept_without_empty_ones(void **state)
{
    struct gw_arena *a = gw_arena_create(4096);
    struct gw_answer *an = gw_worker_answer_create(a);
    struct gw_buf ev = {0};
    bool complete;
    size_t len;

    (void)state;
    feed(an,
         "data: {\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":["
         "{\"index\":2,\"id\":\"call_b\",\"function\":{\"name\":\"b\",\"arguments\":\"{}\"}},"
         "{\"index\":0,\"id\":\"call_a\",\"function\":{\"name\":\"a\",\"arguments\":\"[]\"}}"
         "]},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n",
         11);
    const char *text = gw_worker_answer_text(an, false, 0, 0, &len, &complete);
    struct json_object *o = json_tokener_parse(text);
    assert_non_null(o);
    struct json_object *calls = json_object_object_get(
        json_object_object_get(json_object_array_get_idx(json_object_object_get(o, "choices"), 0),
                               "message"),
        "tool_calls");
    assert_int_equal(json_object_array_length(calls), 2);
    const char *names[] = {"a", "b"};
    for (size_t i = 0; i < 2; i++) {
        struct json_object *fn =
            json_object_object_get(json_object_array_get_idx(calls, i), "function");
        assert_string_equal(json_object_get_string(json_object_object_get(fn, "name")), names[i]);
    }
    json_object_put(o);
    assert_replays_to_itself(a, text, len, &ev);
    gw_buf_free(&ev);
    gw_arena_destroy(a);
}

/* ------------------------------------------------------------- the store */

static int gone_size, gone_expired;

static void
gone(void *ctx, const char *model, bool expired)
{
    (void)ctx, (void)model;
    if (expired)
        gone_expired++;
    else
        gone_size++;
}

static struct gw_cache_entry
entry(const char *body, int64_t created, int64_t ttl)
{
    return (struct gw_cache_entry){.created_us = created,
                                   .expires_us = created + ttl,
                                   .prompt_tokens = 1,
                                   .completion_tokens = 2,
                                   .ctype = "application/json",
                                   .body = body,
                                   .body_len = strlen(body)};
}

static void
the_store_keeps_expires_bounds_and_purges(void **state)
{
    char dir[] = "/tmp/aigw-test-cache-XXXXXX";
    struct gw_cache *c;
    struct gw_arena *a = gw_arena_create(4096);
    struct gw_cache_entry got;
    unsigned char h[8][GW_CACHE_HASH_LEN];
    char body[1000];
    size_t removed;

    (void)state;
    assert_non_null(mkdtemp(dir));
    assert_int_equal(gw_cache_open(dir, true, &c), 0);
    memset(body, 'x', sizeof(body) - 1);
    body[sizeof(body) - 1] = '\0';
    for (int i = 0; i < 8; i++)
        memset(h[i], i + 1, GW_CACHE_HASH_LEN);

    struct gw_cache_entry e = entry("{\"a\":1}", 1000, 1000000);
    assert_int_equal(gw_cache_put(c, "m", h[0], &e, 1 << 20, gone, NULL), 0);
    assert_int_equal(gw_cache_get(c, "m", h[0], 2000, a, &got), 0);
    assert_string_equal(got.body, "{\"a\":1}");
    assert_string_equal(got.ctype, "application/json");
    assert_int_equal(got.completion_tokens, 2);
    assert_int_equal(gw_cache_get(c, "other", h[0], 2000, a, &got), GW_ENOENT);
    assert_int_equal(gw_cache_get(c, "m", h[1], 2000, a, &got), GW_ENOENT);
    /* past its expiry it is gone for readers, and the sweep removes it */
    assert_int_equal(gw_cache_get(c, "m", h[0], 1001000, a, &got), GW_ENOENT);
    assert_int_equal(gw_cache_sweep(c, 1001000, 100, gone, NULL, &removed), 0);
    assert_int_equal(removed, 1);
    assert_int_equal(gone_expired, 1);

    /* the size bound: 3 entries of ~1 KB fit in 3.5 KB; the 4th evicts the
     * one that expires first */
    for (int i = 0; i < 4; i++) {
        e = entry(body, 5000 + i, 1000000 - 1000 * i);
        assert_int_equal(gw_cache_put(c, i % 2 ? "m" : "n", h[i], &e, 3500, gone, NULL), 0);
    }
    assert_int_equal(gone_size, 1);
    assert_int_equal(gw_cache_get(c, "n", h[0], 6000, a, &got), 0);
    assert_int_equal(gw_cache_get(c, "m", h[1], 6000, a, &got), 0);
    assert_int_equal(gw_cache_get(c, "n", h[2], 6000, a, &got), GW_ENOENT);
    assert_int_equal(gw_cache_get(c, "m", h[3], 6000, a, &got), 0);
    /* an entry bigger than the whole cache is refused, nothing changes */
    assert_int_equal(gw_cache_put(c, "m", h[5], &e, 500, gone, NULL), GW_ETOOBIG);
    assert_int_equal(gw_cache_get(c, "n", h[0], 6000, a, &got), 0);

    assert_int_equal(gw_cache_purge(c, "m", &removed), 0);
    assert_int_equal(removed, 2);
    assert_int_equal(gw_cache_get(c, "m", h[1], 6000, a, &got), GW_ENOENT);
    assert_int_equal(gw_cache_get(c, "n", h[0], 6000, a, &got), 0);
    assert_int_equal(gw_cache_purge(c, NULL, &removed), 0);
    assert_int_equal(removed, 1);
    assert_int_equal(gw_cache_get(c, "n", h[0], 6000, a, &got), GW_ENOENT);
    gw_cache_close(c);

    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
    gw_arena_destroy(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reordered_keys_and_number_spellings_hash_equal),
        cmocka_unit_test(delivery_and_caller_do_not_change_the_hash),
        cmocka_unit_test(every_answer_changing_parameter_changes_the_hash),
        cmocka_unit_test(deterministic_means_temperature_zero_or_a_seed),
        cmocka_unit_test(a_stream_is_put_back_together_in_any_pieces),
        cmocka_unit_test(a_stream_without_done_or_with_an_error_is_not_complete),
        cmocka_unit_test(a_stored_answer_replays_as_the_same_stream_content),
        cmocka_unit_test(tool_calls_numbered_with_gaps_are_kept_without_empty_ones),
        cmocka_unit_test(the_store_keeps_expires_bounds_and_purges),
    };

    return cmocka_run_group_tests_name("cache", tests, NULL, NULL);
}
